// Command wiclient is the workload of the workload-identity end-to-end test
// (test/e2e/workload_identity_test.go). It does what an application using
// the Azure SDK for Go does, and nothing more: the unmodified
// azidentity.WorkloadIdentityCredential configured only by the environment
// the podid webhook injects (AZURE_CLIENT_ID, AZURE_TENANT_ID,
// AZURE_FEDERATED_TOKEN_FILE, AZURE_AUTHORITY_HOST) and trusting the
// authority through SSL_CERT_FILE. Instance discovery is disabled, as every
// non-Entra authority requires.
//
//	wiclient [-scope SCOPE] [-out FILE]
//
// It asks for a token until it gets one (retrying every 2 s and printing
// each failure, AADSTS code included), writes the access token to FILE
// (0600; the test reads it with exec and verifies it as a resource server
// would), prints "wiclient: token acquired" with the token's unverified
// claims — never the token — and then waits for SIGTERM.
//
//	wiclient cat FILE   print FILE (the image has no shell)
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

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "wiclient:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	if len(args) > 0 && args[0] == "cat" {
		if len(args) != 2 {
			return errors.New("usage: wiclient cat FILE")
		}
		b, err := os.ReadFile(args[1])
		if err != nil {
			return err
		}
		_, err = os.Stdout.Write(b)
		return err
	}
	fs := flag.NewFlagSet("wiclient", flag.ContinueOnError)
	scope := fs.String("scope", "https://storage.azure.com/.default", "scope to ask a token for")
	out := fs.String("out", "/tmp/access-token", "where the access token is written")
	if err := fs.Parse(args); err != nil {
		return err
	}
	for _, k := range []string{"AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_FEDERATED_TOKEN_FILE", "AZURE_AUTHORITY_HOST", "SSL_CERT_FILE"} {
		fmt.Printf("wiclient: %s=%s\n", k, os.Getenv(k)) // paths and ids, no secrets
	}
	cred, err := azidentity.NewWorkloadIdentityCredential(&azidentity.WorkloadIdentityCredentialOptions{
		DisableInstanceDiscovery: true,
	})
	if err != nil {
		return fmt.Errorf("NewWorkloadIdentityCredential: %w", err)
	}
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	for {
		tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		tk, err := cred.GetToken(tctx, policy.TokenRequestOptions{Scopes: []string{*scope}})
		cancel()
		if err == nil {
			if err := os.WriteFile(*out, []byte(tk.Token), 0o600); err != nil {
				return fmt.Errorf("write token: %w", err)
			}
			fmt.Printf("wiclient: token acquired expires_on=%s claims=%s\n", tk.ExpiresOn.UTC().Format(time.RFC3339), claims(tk.Token))
			break
		}
		fmt.Printf("wiclient: GetToken failed: %s\n", oneLine(err.Error()))
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
