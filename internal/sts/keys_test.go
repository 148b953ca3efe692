package sts_test

import (
	"context"
	"crypto/sha1"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/podid/podid/internal/sts"
	"github.com/podid/podid/internal/sts/jwks"
	"github.com/podid/podid/internal/sts/ststest"
	"github.com/podid/podid/internal/sts/tokenverify"
)

const formType = "application/x-www-form-urlencoded"

func assertionForm(clientID, assertion string) string {
	return url.Values{"grant_type": {"client_credentials"}, "client_id": {clientID}, "scope": {storage + "/.default"},
		"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}, "client_assertion": {assertion}}.Encode()
}

// An issuer whose JWKS cannot be fetched gets AADSTS50166 with the reason,
// on the first request and on the next ones (the failure is cached as a
// failure, not as an empty key set that would answer "key not found").
func TestExternalJWKSFailureIsReported(t *testing.T) {
	is := ststest.NewIssuer(t)
	srv := startWithIssuer(t, is, ststest.Options{})
	const subject = "system:serviceaccount:ns:outage"
	clientID := srv.AddIdentity(t, "outage", is.URL, subject)
	is.FailJWKS(true)
	tok := is.Token(t, subject, sts.DefaultFICAudience, time.Now(), time.Hour, nil)
	v2 := "/" + srv.TenantID + "/oauth2/v2.0/token"
	for i := range 3 {
		r := postForm(t, srv, v2, formType, assertionForm(clientID, tok))
		assertAADSTS(t, r, 400, sts.CodeExternalOIDC, "invalid_request")
		if d, _ := r.body["error_description"].(string); !strings.Contains(d, "503") {
			t.Errorf("request %d: description %q does not carry the fetch error", i, d)
		}
	}
}

func getJSONDoc(t *testing.T, srv *ststest.Server, rawURL string) map[string]any {
	t.Helper()
	resp, err := srv.Client().Get(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&m) != nil {
		t.Fatalf("GET %s: status %d", rawURL, resp.StatusCode)
	}
	return m
}

// The v2 issuer is one URL per tenant: a token fetched via one of our names
// verifies against the discovery document fetched via another.
func TestV2IssuerIsCanonical(t *testing.T) {
	srv := ststest.Start(t, ststest.Options{})
	api, _, err := srv.PutApplication(context.Background(), srv.TenantID, sts.Application{DisplayName: "api", IdentifierURIs: []string{"api://orders"}, AccessTokenVersion: 2})
	if err != nil {
		t.Fatal(err)
	}
	viaLocalhost := strings.Replace(srv.URL, "127.0.0.1", "localhost", 1)
	req, _ := http.NewRequest(http.MethodPost, viaLocalhost+"/"+srv.TenantID+"/oauth2/v2.0/token", strings.NewReader(url.Values{
		"grant_type": {"client_credentials"}, "client_id": {ststest.AdminClientID}, "client_secret": {ststest.AdminSecret}, "scope": {"api://orders/.default"}}.Encode()))
	req.Header.Set("Content-Type", formType)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var body map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	tok, _ := body["access_token"].(string)
	if resp.StatusCode != 200 || tok == "" {
		t.Fatalf("token via localhost: %d %v", resp.StatusCode, body)
	}
	doc := getJSONDoc(t, srv, srv.URL+"/"+srv.TenantID+"/v2.0/.well-known/openid-configuration")
	if other := getJSONDoc(t, srv, viaLocalhost+"/"+srv.TenantID+"/v2.0/.well-known/openid-configuration"); other["issuer"] != doc["issuer"] {
		t.Fatalf("issuer differs by host: %v vs %v", other["issuer"], doc["issuer"])
	}
	iss, _ := doc["issuer"].(string)
	jwksURI, _ := doc["jwks_uri"].(string)
	v, err := tokenverify.New(tokenverify.Config{
		JWKSURL:   jwksURI,
		Keys:      jwks.New(jwks.Config{Trust: jwks.Trust{Global: srv.CAPool, NoSystemRoots: true}}),
		Issuers:   []string{iss},
		Audiences: []string{api.ClientID},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(context.Background(), tok); err != nil {
		t.Fatalf("token from localhost against discovery from 127.0.0.1: %v", err)
	}
}

// Times as Entra's: nbf backdated 5 minutes, iat = nbf, exp one hour after
// issue for an app and 24 hours for a managed identity; expires_in counts
// from issue, minus one second.
func TestTokenTimes(t *testing.T) {
	is := ststest.NewIssuer(t)
	clk := ststest.NewClock(time.Now().Truncate(time.Second).Add(700 * time.Millisecond)) // mid-second: expires_in still 3599
	srv := startWithIssuer(t, is, ststest.Options{Configure: func(c *sts.Config) { c.Now = clk.Now }})
	const subject = "system:serviceaccount:ns:times"
	identity := srv.AddIdentity(t, "times", is.URL, subject)
	v2 := "/" + srv.TenantID + "/oauth2/v2.0/token"
	for _, tt := range []struct {
		name     string
		form     string
		lifetime time.Duration
	}{
		{"app registration", url.Values{"grant_type": {"client_credentials"}, "client_id": {ststest.AdminClientID}, "client_secret": {ststest.AdminSecret}, "scope": {storage + "/.default"}}.Encode(), time.Hour},
		{"managed identity", assertionForm(identity, is.Token(t, subject, sts.DefaultFICAudience, clk.Now(), time.Hour, nil)), 24 * time.Hour},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := postForm(t, srv, v2, formType, tt.form)
			if r.status != 200 {
				t.Fatalf("status %d: %v", r.status, r.body)
			}
			if got := r.body["expires_in"]; got != float64(tt.lifetime/time.Second-1) {
				t.Errorf("expires_in = %v, want %d", got, tt.lifetime/time.Second-1)
			}
			c := verify(t, srv, r.body["access_token"].(string), storage, clk.Now)
			now := clk.Now().Truncate(time.Second)
			if !c.NotBefore.Equal(now.Add(-5*time.Minute)) || !c.IssuedAt.Equal(c.NotBefore) || !c.Expiry.Equal(now.Add(tt.lifetime)) {
				t.Errorf("iat %v nbf %v exp %v; want nbf = iat = now-5m, exp = now+%v (now %v)", c.IssuedAt, c.NotBefore, c.Expiry, tt.lifetime, now)
			}
		})
	}
}

func secretToken(t *testing.T, srv *ststest.Server) string {
	t.Helper()
	r := postForm(t, srv, "/"+srv.TenantID+"/oauth2/v2.0/token", formType, url.Values{
		"grant_type": {"client_credentials"}, "client_id": {ststest.AdminClientID}, "client_secret": {ststest.AdminSecret}, "scope": {storage + "/.default"}}.Encode())
	if r.status != 200 {
		t.Fatalf("token: %d %v", r.status, r.body)
	}
	return r.body["access_token"].(string)
}

// TestKeyRotationWithCachingVerifier runs a resource server that caches the
// JWKS exactly as long as its Cache-Control allows and never refetches on an
// unknown kid, through two rotations on an injected clock: every new token
// verifies (its key was published before it signed), and every token keeps
// verifying until it expires (retired keys stay published).
func TestKeyRotationWithCachingVerifier(t *testing.T) {
	clock := ststest.NewClock(time.Now())
	srv := ststest.Start(t, ststest.Options{Configure: func(c *sts.Config) {
		c.Now = clock.Now
		c.KeyRotationInterval = 6 * time.Hour
		c.KeyPublishLead = 30 * time.Minute
		c.IdentityTokenLifetime = time.Hour
	}})
	keys := jwks.New(jwks.Config{Trust: jwks.Trust{Global: srv.CAPool, NoSystemRoots: true}, Now: clock.Now, CacheOnly: true})
	v, err := tokenverify.New(tokenverify.Config{JWKSURL: srv.JWKSURL(), Keys: keys, Issuers: []string{srv.V1Issuer()}, Audiences: []string{storage}, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	type issued struct {
		tok string
		at  time.Time
	}
	var live []issued
	signers := map[string]bool{}
	const step = 2 * time.Minute
	for elapsed := time.Duration(0); elapsed <= 13*time.Hour; elapsed += step {
		if _, err := srv.RotateKeys(false); err != nil {
			t.Fatal(err)
		}
		tok := secretToken(t, srv)
		c, err := v.Verify(ctx, tok)
		if err != nil {
			t.Fatalf("at +%v: a fresh token does not verify with the cached JWKS: %v", elapsed, err)
		}
		signers[c.KeyID] = true
		live = append(live, issued{tok, clock.Now()})
		// The oldest token still valid must still verify: it may be signed
		// by a key retired since.
		for len(live) > 0 && clock.Now().Sub(live[0].at) > 55*time.Minute {
			live = live[1:]
		}
		if _, err := v.Verify(ctx, live[0].tok); err != nil {
			t.Fatalf("at +%v: a token issued at +%v no longer verifies: %v", elapsed, live[0].at.Sub(clock.Now())+elapsed, err)
		}
		clock.Advance(step)
	}
	if len(signers) != 3 {
		t.Fatalf("%d signing keys in 13h with a 6h interval, want 3", len(signers))
	}
	// The verifier is strict enough to catch a key that signs before it is
	// published: a forced rotation does exactly that.
	if _, err := srv.RotateKeys(true); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(ctx, secretToken(t, srv)); !errors.Is(err, jwks.ErrUnknownKID) {
		t.Fatalf("token of an unpublished key: err = %v, want ErrUnknownKID from the cached JWKS", err)
	}
}

// Token headers carry kid and x5t; the JWKS entry with that kid carries the
// same x5t and the certificate (x5c) it is the thumbprint of, whose key
// verifies the token — as Entra's, for verifiers that select by x5t or by
// certificate.
func TestTokenX5tMatchesJWKS(t *testing.T) {
	srv := ststest.Start(t, ststest.Options{})
	tok := secretToken(t, srv)
	obj, err := jose.ParseSignedCompact(tok, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		t.Fatal(err)
	}
	h := obj.Signatures[0].Header
	x5t, _ := h.ExtraHeaders["x5t"].(string)
	if h.KeyID == "" || x5t == "" {
		t.Fatalf("header lacks kid or x5t: %+v", h)
	}
	doc := getJSONDoc(t, srv, srv.JWKSURL())
	entries, _ := doc["keys"].([]any)
	var entry map[string]any
	for _, e := range entries {
		if m, _ := e.(map[string]any); m["kid"] == h.KeyID {
			entry = m
		}
	}
	if entry == nil || entry["x5t"] != x5t {
		t.Fatalf("JWKS entry for kid %s = %v, want x5t %s", h.KeyID, entry, x5t)
	}
	x5c, _ := entry["x5c"].([]any)
	if len(x5c) != 1 {
		t.Fatalf("x5c = %v", entry["x5c"])
	}
	der, err := base64.StdEncoding.DecodeString(x5c[0].(string))
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha1.Sum(cert.Raw)
	if base64.RawURLEncoding.EncodeToString(sum[:]) != x5t {
		t.Fatal("x5t is not the SHA-1 thumbprint of the x5c certificate")
	}
	if _, err := obj.Verify(cert.PublicKey); err != nil {
		t.Fatalf("token does not verify with the x5c certificate's key: %v", err)
	}
}

// Tokens are issued only for resources the tenant knows: Microsoft's
// well-known resources (as clients spell them) and names of applications
// registered in the tenant. Anything else — including another tenant's
// application — gets AADSTS500011, on both endpoints.
func TestResourceRegistry(t *testing.T) {
	const otherTenant = "3b8c1f7e-0000-4000-8000-00000000beef"
	srv := ststest.Start(t, ststest.Options{Bootstrap: &sts.Bootstrap{Tenants: []sts.BootstrapTenant{{
		ID: otherTenant, Applications: []sts.BootstrapApplication{{ClientID: "3b8c1f7e-0000-4000-8000-0000000000a1", DisplayName: "theirs", IdentifierURIs: []string{"api://theirs"}}},
	}}}})
	ours, _, err := srv.PutApplication(context.Background(), srv.TenantID, sts.Application{DisplayName: "ours", IdentifierURIs: []string{"https://orders.podid.test"}})
	if err != nil {
		t.Fatal(err)
	}
	withAPIURI, _, err := srv.PutApplication(context.Background(), srv.TenantID, sts.Application{DisplayName: "with-api-uri"})
	if err != nil {
		t.Fatal(err)
	}
	if withAPIURI, _, err = srv.PutApplication(context.Background(), srv.TenantID, sts.Application{ClientID: withAPIURI.ClientID, DisplayName: "with-api-uri", IdentifierURIs: []string{"api://" + withAPIURI.ClientID}}); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		resource string
		known    bool
	}{
		{"https://storage.azure.com", true},
		{"https://storage.azure.com/", true},
		{"https://STORAGE.azure.com", true},
		{"https://vault.azure.net", true},
		{"https://management.azure.com/", true},
		{"https://management.core.windows.net/", true},
		{"https://database.windows.net/", true},
		{"https://servicebus.azure.net", true},
		{"https://eventhubs.azure.net", true},
		{"https://graph.microsoft.com", true},
		{"https://cosmos.azure.com", true},
		{"00000003-0000-0000-c000-000000000000", true}, // Graph by app id
		{"https://orders.podid.test", true},
		{ours.ClientID, true},
		{"api://" + ours.ClientID, false}, // not one of its identifierUris
		{"api://" + withAPIURI.ClientID, true},
		{"https://myaccount.blob.core.windows.net", true},
		{"https://myaccount.blob.core.windows.net/", true},
		{"https://myaccount.documents.azure.com:443/", true},
		{"https://myns.servicebus.windows.net/", true},
		{"https://a.b.blob.core.windows.net", false},
		{"https://myaccount.blob.core.windows.net/container", false},
		{"https://myaccount.blob.core.windows.net:8443", false},
		{"http://myaccount.blob.core.windows.net", false},
		{"https://blob.core.windows.net.evil.example", false},
		{"https://storage.azure.com.evil.example", false},
		{"https://example.com", false},
		{"api://theirs", false}, // another tenant's application
		{"3b8c1f7e-0000-4000-8000-0000000000a1", false},
	} {
		t.Run(tt.resource, func(t *testing.T) {
			v1 := postForm(t, srv, "/"+srv.TenantID+"/oauth2/token", formType, url.Values{
				"grant_type": {"client_credentials"}, "client_id": {ststest.AdminClientID}, "client_secret": {ststest.AdminSecret}, "resource": {tt.resource}}.Encode())
			v2 := postForm(t, srv, "/"+srv.TenantID+"/oauth2/v2.0/token", formType, url.Values{
				"grant_type": {"client_credentials"}, "client_id": {ststest.AdminClientID}, "client_secret": {ststest.AdminSecret}, "scope": {tt.resource + "/.default"}}.Encode())
			for _, r := range []tokenResp{v1, v2} {
				if tt.known {
					if r.status != 200 {
						t.Errorf("status %d: %v", r.status, r.body["error_description"])
					}
					continue
				}
				assertAADSTS(t, r, 400, sts.CodeResourceNotFound, "invalid_resource")
				if d, _ := r.body["error_description"].(string); !strings.Contains(d, "The resource principal named "+tt.resource+" was not found in the tenant named") {
					t.Errorf("description = %q", d)
				}
			}
		})
	}
}
