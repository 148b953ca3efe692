// Package azclient is the body the e2e workload programs share: each builds
// one unmodified azidentity credential, and Main asks it for a token until
// it gets one (every 2 s, each failure printed on one line as
// "<name>: GetToken failed after Nms: ..."), writes the access token to the
// -out file (0600; tests read it with exec and verify it), prints
// "<name>: token acquired" with the token's unverified claims — never the
// token — and waits for SIGTERM, or with -once exits 0 (a Helm test pod).
// "<name> cat FILE" prints FILE (the images have no shell). "<name> mounted
// -file FILE -env NAME" is a pod that gets no token itself: it reports what
// a volume (the Secrets Store CSI driver's) put in FILE and the Secret put in
// $NAME, as a result line without claims, then waits for SIGTERM.
//
// It then prints the machine-readable result line (internal/demoresult)
// that `podid up` reads; a Program with a Resource call makes it with the
// token's credential first and reports what it returned.
package azclient

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/podid/podid/internal/demoresult"
)

// Credential registers the program's own flags on fs and returns the
// constructor Main calls after parsing them.
type Credential func(fs *flag.FlagSet) func() (azcore.TokenCredential, error)

// Resource registers the program's resource-call flags on fs and returns
// the call: given the credential, it uses a resource and says in a few words
// what it got (never a token). This is where a demo plugs its resource in.
type Resource func(fs *flag.FlagSet) func(ctx context.Context, cred azcore.TokenCredential) (string, error)

// Program is a credential and, optionally, a resource call made with it.
type Program struct {
	Credential Credential
	Resource   Resource
}

// Main runs the program called name with a credential only and exits.
func Main(name string, credential Credential) { Run(name, Program{Credential: credential}) }

// Run runs the program called name and exits.
func Run(name string, p Program) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, name, p, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(1)
	}
}

func run(ctx context.Context, name string, p Program, args []string) error {
	if len(args) > 0 && args[0] == "cat" {
		if len(args) != 2 {
			return errors.New("usage: " + name + " cat FILE")
		}
		b, err := os.ReadFile(args[1])
		if err != nil {
			return err
		}
		_, err = os.Stdout.Write(b)
		return err
	}
	if len(args) > 0 && args[0] == "mounted" {
		return mounted(ctx, name, args[1:])
	}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	scope := fs.String("scope", "https://storage.azure.com/.default", "scope to ask a token for")
	out := fs.String("out", "/tmp/access-token", "where the access token is written")
	once := fs.Bool("once", false, "exit 0 once a token is acquired instead of waiting for SIGTERM")
	newCred := p.Credential(fs)
	var call func(context.Context, azcore.TokenCredential) (string, error)
	if p.Resource != nil {
		call = p.Resource(fs)
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	cred, err := newCred()
	if err != nil {
		return err
	}
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	asked := time.Now().UTC()
	for {
		tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		start := time.Now()
		tk, err := cred.GetToken(tctx, policy.TokenRequestOptions{Scopes: []string{*scope}})
		cancel()
		if err == nil {
			if err := os.WriteFile(*out, []byte(tk.Token), 0o600); err != nil {
				return fmt.Errorf("write token: %w", err)
			}
			fmt.Printf("%s: token acquired expires_on=%s claims=%s\n", name, tk.ExpiresOn.UTC().Format(time.RFC3339), claims(tk.Token))
			fmt.Printf("%s: key claims %s\n", name, KeyClaims(tk.Token))
			r := Result(name, tk.Token)
			r.AskedAt = asked
			if call != nil {
				cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
				r.Resource, err = call(cctx, cred)
				cancel()
				if err != nil {
					r.Error = strings.Join(strings.Fields(err.Error()), " ")
				}
			}
			fmt.Println(r.Line())
			break
		}
		fmt.Printf("%s: GetToken failed after %dms: %s\n", name, time.Since(start).Milliseconds(), strings.Join(strings.Fields(err.Error()), " "))
		select {
		case <-ctx.Done():
			if *once {
				return errors.New("stopped before a token was acquired")
			}
			return nil
		case <-tick.C:
		}
	}
	if *once {
		return nil
	}
	<-ctx.Done()
	return nil
}

// claims returns the JWT's payload (unverified), or a note. Access tokens are
// RS256 from Entra ID and from podid sts alike.
func claims(token string) string {
	tok, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		return "(not an RS256 JWT)"
	}
	var c json.RawMessage
	if err := tok.UnsafeClaimsWithoutVerification(&c); err != nil {
		return "(undecodable)"
	}
	return string(c)
}

// Result is the demo's result line (internal/demoresult) with the token's
// key claims; the caller fills in the resource call's outcome.
func Result(name, token string) demoresult.Result {
	r := demoresult.Result{Program: name, TokenAt: time.Now().UTC()}
	tok, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		r.Error = "the access token is not an RS256 JWT"
		return r
	}
	var c struct {
		Aud   any      `json:"aud"`
		Tid   string   `json:"tid"`
		Oid   string   `json:"oid"`
		Exp   int64    `json:"exp"`
		Roles []string `json:"roles"`
	}
	if err := tok.UnsafeClaimsWithoutVerification(&c); err != nil {
		r.Error = "the access token's claims are undecodable"
		return r
	}
	r.Aud, r.Tid, r.Oid, r.Roles = fmt.Sprint(c.Aud), c.Tid, c.Oid, c.Roles
	r.Exp = time.Unix(c.Exp, 0).UTC()
	return r
}

// KeyClaims is the line a person reads (hack/up.sh prints it): who the token
// is for and from, never the token.
func KeyClaims(token string) string {
	tok, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		return "(not an RS256 JWT)"
	}
	var c struct {
		Aud   any      `json:"aud"`
		Tid   string   `json:"tid"`
		Oid   string   `json:"oid"`
		Exp   int64    `json:"exp"`
		Roles []string `json:"roles"`
	}
	if err := tok.UnsafeClaimsWithoutVerification(&c); err != nil {
		return "(undecodable)"
	}
	roles := "-"
	if len(c.Roles) > 0 {
		roles = strings.Join(c.Roles, ",")
	}
	return fmt.Sprintf("aud=%v tid=%s oid=%s exp=%s roles=%s", c.Aud, c.Tid, c.Oid, time.Unix(c.Exp, 0).UTC().Format(time.RFC3339), roles)
}

// mounted prints the result line of a pod whose secret a volume provides:
// FILE's content and $ENV, which must agree (the driver syncs both from
// one answer). The value is printed: these are demo secrets.
func mounted(ctx context.Context, name string, args []string) error {
	fs := flag.NewFlagSet(name+" mounted", flag.ContinueOnError)
	file := fs.String("file", "", "the mounted secret's file")
	env := fs.String("env", "", "the environment variable the synced Secret fills")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *file == "" || *env == "" || fs.NArg() > 0 {
		return errors.New("usage: " + name + " mounted -file FILE -env NAME")
	}
	r := demoresult.Result{Program: name}
	b, err := os.ReadFile(*file)
	switch ev, ok := os.LookupEnv(*env); {
	case err != nil:
		r.Error = err.Error()
	case len(b) > 256:
		r.Error = fmt.Sprintf("%s holds %d bytes, not a demo value", *file, len(b))
	case !ok:
		r.Error = "$" + *env + " is not set"
	case ev != string(b):
		r.Error = fmt.Sprintf("%s holds %q but $%s %q", *file, b, *env, ev)
	default:
		r.Resource = fmt.Sprintf("%s and $%s = %q (demo data)", filepath.Base(*file), *env, b)
	}
	fmt.Println(r.Line())
	<-ctx.Done()
	return nil
}
