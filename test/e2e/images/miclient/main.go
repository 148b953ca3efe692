// Command miclient is the workload of the agent end-to-end test
// (test/e2e/agent_test.go). It does what an application using the Azure SDK
// for Go on a VM does, and nothing more: the unmodified
// azidentity.ManagedIdentityCredential with no endpoint override, so its
// requests go to http://169.254.169.254/metadata/identity/oauth2/token and
// reach podid agent only through the node's interception rule.
//
//	miclient [-scope SCOPE] [-client-id ID] [-max-retries N] [-out FILE]
//
// It asks for a token until it gets one (every 2 s, printing each failure on
// one line as "miclient: GetToken failed: ..."), writes the access token to
// FILE (0600; the test reads it with exec and verifies it), prints
// "miclient: token acquired" with the token's unverified claims — never the
// token — and then waits for SIGTERM. -max-retries sets the SDK's own retry
// count (azcore semantics: 0 = the SDK default, -1 = no retries).
//
//	miclient cat FILE   print FILE (the image has no shell)
package main

import (
	"context"
	"encoding/base64"
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
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "miclient:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	if len(args) > 0 && args[0] == "cat" {
		if len(args) != 2 {
			return errors.New("usage: miclient cat FILE")
		}
		b, err := os.ReadFile(args[1])
		if err != nil {
			return err
		}
		_, err = os.Stdout.Write(b)
		return err
	}
	fs := flag.NewFlagSet("miclient", flag.ContinueOnError)
	scope := fs.String("scope", "https://storage.azure.com/.default", "scope to ask a token for")
	clientID := fs.String("client-id", "", "user-assigned identity to ask for (empty: let the metadata service choose)")
	maxRetries := fs.Int("max-retries", 0, "the SDK's retry count (0: SDK default, -1: none)")
	out := fs.String("out", "/tmp/access-token", "where the access token is written")
	if err := fs.Parse(args); err != nil {
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
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	for {
		tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		start := time.Now()
		tk, err := cred.GetToken(tctx, policy.TokenRequestOptions{Scopes: []string{*scope}})
		cancel()
		if err == nil {
			if err := os.WriteFile(*out, []byte(tk.Token), 0o600); err != nil {
				return fmt.Errorf("write token: %w", err)
			}
			fmt.Printf("miclient: token acquired expires_on=%s claims=%s\n", tk.ExpiresOn.UTC().Format(time.RFC3339), claims(tk.Token))
			break
		}
		fmt.Printf("miclient: GetToken failed after %dms: %s\n", time.Since(start).Milliseconds(), oneLine(err.Error()))
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
	<-ctx.Done()
	return nil
}

// claims returns the JWT's payload (unverified), or a note.
func claims(jwt string) string {
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		return "(not a JWT)"
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "(undecodable)"
	}
	return string(b)
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
