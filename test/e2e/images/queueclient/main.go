// Command queueclient is seed article 000's application made real: a pod
// with an AAD Pod Identity binding uses its managed identity to send and
// receive a message on an Azure Storage queue. It runs the unmodified Azure
// SDK for Go — azidentity.ManagedIdentityCredential (IMDS at
// 169.254.169.254, answered by podid agent) and azqueue — against the
// account's queue service (locally Azurite, hack/azurite.sh).
//
//	queueclient [-account-url URL] [-queue NAME] [-audience AUD] [-client-id ID] [-max-retries N] [-once]
//
// The account URL comes, as for an Azure Functions app, from
// AzureWebJobsStorage__queueServiceUri, else AzureWebJobsStorage__accountName
// (https://NAME.queue.core.windows.net); -account-url overrides both.
//
// It gets a token (every 2 s until it does; each failure on one line
// "queueclient: GetToken failed after Nms: …"), prints "queueclient: token
// acquired" and "queueclient: key claims aud=… tid=… oid=… exp=… roles=…"
// (never the token), then every 5 s until it succeeds: creates the queue if
// missing, enqueues a message, dequeues it, checks the text round-tripped and
// deletes it, printing one result line (see resultLine). Then it waits for
// SIGTERM, or with -once exits (0 on success).
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue/queueerror"

	"github.com/podid/podid/test/e2e/images/azclient"
)

const name = "queueclient"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, getenv func(string) string) error {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	accountURL := fs.String("account-url", "", "the account's queue service URL (default: from AzureWebJobsStorage__queueServiceUri or __accountName)")
	queue := fs.String("queue", "myqueue-items", "the queue to use (created if missing)")
	audience := fs.String("audience", "", "the token audience azqueue asks for (empty: Azure Storage's)")
	clientID := fs.String("client-id", "", "user-assigned identity to ask for (empty: let the metadata service choose)")
	maxRetries := fs.Int("max-retries", 0, "the credential's retry count (azcore: 0 = the SDK default, -1 = none)")
	once := fs.Bool("once", false, "exit after the first round trip (0 if it succeeded) instead of waiting for SIGTERM")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	u := *accountURL
	if u == "" {
		var err error
		if u, err = accountURLFromEnv(getenv); err != nil {
			return err
		}
	}
	queueURL, account, err := queueURLOf(u, *queue)
	if err != nil {
		return err
	}
	opts := &azidentity.ManagedIdentityCredentialOptions{
		ClientOptions: azcore.ClientOptions{Retry: policy.RetryOptions{MaxRetries: int32(*maxRetries)}},
	}
	if *clientID != "" {
		opts.ID = azidentity.ClientID(*clientID)
	}
	cred, err := azidentity.NewManagedIdentityCredential(opts)
	if err != nil {
		return fmt.Errorf("NewManagedIdentityCredential: %w", err)
	}
	// The same scope azqueue asks for, so the claims printed are those of
	// the token it sends (served from the credential's cache).
	asked := time.Now().UTC()
	tk, err := waitToken(ctx, cred, scopeOf(*audience))
	if err != nil || ctx.Err() != nil {
		return err
	}
	qc, err := azqueue.NewQueueClient(queueURL, cred, &azqueue.ClientOptions{Audience: *audience})
	if err != nil {
		return fmt.Errorf("NewQueueClient: %w", err)
	}
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	for {
		r := roundTrip(ctx, qc, *queue, account)
		fmt.Println(r.line())
		// podid up reads this line (internal/demoresult): the token's key
		// claims and what the queue service answered, never the token.
		dr := azclient.Result(name, tk)
		dr.AskedAt = asked
		if r.err != nil {
			dr.Error = r.op + ": " + strings.Join(strings.Fields(r.err.Error()), " ")
		} else {
			dr.Resource = "1 message sent+received, " + *queue // the summary clips at 40 runes
		}
		fmt.Println(dr.Line())
		if *once && r.err != nil {
			return errors.New("the round trip failed (result line above)")
		}
		if r.err == nil || *once {
			break
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
	if !*once {
		<-ctx.Done()
	}
	return nil
}

// waitToken asks until the credential answers and returns the access token
// (empty when ctx ended first).
func waitToken(ctx context.Context, cred azcore.TokenCredential, scope string) (string, error) {
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	for {
		tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		start := time.Now()
		tk, err := cred.GetToken(tctx, policy.TokenRequestOptions{Scopes: []string{scope}})
		cancel()
		if err == nil {
			fmt.Printf("%s: token acquired expires_on=%s\n", name, tk.ExpiresOn.UTC().Format(time.RFC3339))
			fmt.Printf("%s: key claims %s\n", name, azclient.KeyClaims(tk.Token))
			return tk.Token, nil
		}
		fmt.Printf("%s: GetToken failed after %dms: %s\n", name, time.Since(start).Milliseconds(), strings.Join(strings.Fields(err.Error()), " "))
		select {
		case <-ctx.Done():
			return "", nil
		case <-tick.C:
		}
	}
}

// roundTrip is seed 000's queue use: the queue exists, a message goes in and
// comes out unchanged, and is deleted.
func roundTrip(ctx context.Context, qc *azqueue.QueueClient, queue, account string) result {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	r := result{queue: queue, account: account, sent: newMessage()}
	if _, err := qc.Create(ctx, nil); err != nil && !queueerror.HasCode(err, queueerror.QueueAlreadyExists) {
		r.op, r.err = "create queue", err
		return r
	}
	if _, err := qc.EnqueueMessage(ctx, r.sent, nil); err != nil {
		r.op, r.err = "enqueue", err
		return r
	}
	// Messages other runs left behind are skipped (they become visible again
	// after the visibility timeout); ours is unique.
	n := int32(32)
	for range 5 {
		resp, err := qc.DequeueMessages(ctx, &azqueue.DequeueMessagesOptions{NumberOfMessages: &n})
		if err != nil {
			r.op, r.err = "dequeue", err
			return r
		}
		for _, m := range resp.Messages {
			if m == nil || m.MessageText == nil || *m.MessageText != r.sent {
				continue
			}
			r.received = *m.MessageText
			if _, err := qc.DeleteMessage(ctx, deref(m.MessageID), deref(m.PopReceipt), nil); err != nil {
				r.op, r.err = "delete message", err
			}
			return r
		}
	}
	r.op, r.err = "dequeue", errors.New("the message sent did not come back")
	return r
}

func newMessage() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	host, _ := os.Hostname()
	return "hello from " + host + " " + hex.EncodeToString(b[:])
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
