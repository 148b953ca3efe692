package sts_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/podid/podid/internal/sts"
	"github.com/podid/podid/internal/sts/ststest"
)

// azuriteBasicOAuth is what Azurite 3.33.0's `--oauth basic` checks of a
// Bearer token on its queue service (QueueTokenAuthenticator.authenticateBasic
// and the constants it reads): the payload decodes; iat, nbf and exp are
// present and now is within [nbf, exp]; iss starts with one of Entra's v1
// issuer hosts (the tenant is not compared); aud is exactly one of Storage's
// names, an account URL only for the account addressed. It does not check the
// signature. The e2e test (test/e2e/azurite_test.go) holds the real Azurite
// to this; here it is the oracle that podid sts's Storage tokens meet.
func azuriteBasicOAuth(c map[string]any, account string, now time.Time) error {
	num := func(k string) (float64, bool) { v, ok := c[k].(float64); return v, ok }
	nbf, ok1 := num("nbf")
	exp, ok2 := num("exp")
	if _, ok3 := num("iat"); !ok1 || !ok2 || !ok3 {
		return errors.New("iat, nbf or exp missing")
	}
	if float64(now.Unix()) < nbf || float64(now.Unix()) > exp {
		return errors.New("lifetime validation failed")
	}
	iss, _ := c["iss"].(string)
	okIss := false
	for _, p := range []string{"https://sts.windows.net/", "https://sts.microsoftonline.de/", "https://sts.chinacloudapi.cn/", "https://sts.windows-ppe.net"} {
		okIss = okIss || strings.HasPrefix(iss, p)
	}
	if !okIss {
		return fmt.Errorf("invalid token issuer %q", iss)
	}
	aud, _ := c["aud"].(string)
	for _, re := range []*regexp.Regexp{
		regexp.MustCompile(`^https://storage\.azure\.com/?$`),
		regexp.MustCompile(`^e406a681-f3d4-42a8-90b6-c2b029497af1$`),
		regexp.MustCompile(`^https://(.*)\.queue\.core\.windows\.net/?$`),
	} {
		if m := re.FindStringSubmatch(aud); m != nil {
			if len(m) > 1 && m[1] != account {
				return fmt.Errorf("audience %q is another account's", aud)
			}
			return nil
		}
	}
	return fmt.Errorf("invalid token audience %q", aud)
}

func unverifiedClaims(t *testing.T, tok string) map[string]any {
	t.Helper()
	jt, err := jwt.ParseSigned(tok, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	if err := jt.UnsafeClaimsWithoutVerification(&c); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestStorageTokensAreEntraV1: whichever way a client names Azure Storage
// (identifier URI with or without "/", application id, queue account URL)
// and whichever endpoint it asks (v1 resource=, v2 scope=…/.default), podid
// sts issues what Entra issues for Storage — a v1 token, iss
// https://sts.windows.net/{tid}/, aud the resource as requested, iat = nbf
// backdated, exp ahead — and that token passes Azurite's basic OAuth check.
// A token for another resource does not.
func TestStorageTokensAreEntraV1(t *testing.T) {
	srv := ststest.Start(t, ststest.Options{})
	const account = "podiddemo"
	for _, tt := range []struct {
		resource string
		v2       bool
	}{
		{"https://storage.azure.com", false},
		{"https://storage.azure.com/", false},
		{"https://storage.azure.com", true},
		{"e406a681-f3d4-42a8-90b6-c2b029497af1", false},
		{"https://" + account + ".queue.core.windows.net", false},
		{"https://" + account + ".queue.core.windows.net", true},
	} {
		t.Run(fmt.Sprintf("%s/v2=%v", tt.resource, tt.v2), func(t *testing.T) {
			form := url.Values{"grant_type": {"client_credentials"}, "client_id": {ststest.AdminClientID}, "client_secret": {ststest.AdminSecret}}
			path := "/" + srv.TenantID + "/oauth2/token"
			if tt.v2 {
				path = "/" + srv.TenantID + "/oauth2/v2.0/token"
				form.Set("scope", tt.resource+"/.default")
			} else {
				form.Set("resource", tt.resource)
			}
			r := postForm(t, srv, path, "application/x-www-form-urlencoded", form.Encode())
			if r.status != 200 {
				t.Fatalf("status %d: %v", r.status, r.body)
			}
			tok := r.body["access_token"].(string)
			verify(t, srv, tok, tt.resource, nil)
			c := unverifiedClaims(t, tok)
			wantIss := "https://sts.windows.net/" + srv.TenantID + "/"
			if c["ver"] != "1.0" || c["iss"] != wantIss || c["idp"] != wantIss || c["aud"] != tt.resource || c["appid"] != ststest.AdminClientID || c["tid"] != srv.TenantID {
				t.Errorf("claims = %v, want Entra's v1 shape (ver 1.0, iss/idp %s, aud %s, appid)", c, wantIss, tt.resource)
			}
			if c["iat"] != c["nbf"] || c["nbf"].(float64) > float64(time.Now().Unix()) || c["exp"].(float64) <= float64(time.Now().Unix()) {
				t.Errorf("times iat=%v nbf=%v exp=%v", c["iat"], c["nbf"], c["exp"])
			}
			if err := azuriteBasicOAuth(c, account, time.Now()); err != nil {
				t.Errorf("Azurite would refuse it: %v", err)
			}
			if err := azuriteBasicOAuth(c, "otheraccount", time.Now()); strings.Contains(tt.resource, ".queue.") && err == nil {
				t.Error("an account-URL token passes for another account")
			}
		})
	}
	r := postForm(t, srv, "/"+srv.TenantID+"/oauth2/token", "application/x-www-form-urlencoded",
		url.Values{"grant_type": {"client_credentials"}, "client_id": {ststest.AdminClientID}, "client_secret": {ststest.AdminSecret}, "resource": {"https://vault.azure.net"}}.Encode())
	if err := azuriteBasicOAuth(unverifiedClaims(t, r.body["access_token"].(string)), account, time.Now()); err == nil {
		t.Error("a Key Vault token passes Azurite's check: the oracle checks nothing")
	}
}

// TestFirstPartyNamesCannotBeClaimed: an app registration cannot take a
// Microsoft first-party resource's name or application id (Entra refuses
// identifier URIs off the tenant's verified domains). Before, an app with
// identifierUris [https://storage.azure.com] and accessTokenVersion 2 turned
// every Storage token of its tenant into a v2 token for that app: a token
// Azure Storage (and Azurite) refuses, and roles the app's owner controls.
func TestFirstPartyNamesCannotBeClaimed(t *testing.T) {
	srv := ststest.Start(t, ststest.Options{})
	ctx := context.Background()
	for _, tt := range []struct {
		name string
		app  sts.Application
		ok   bool
	}{
		{"storage identifier URI", sts.Application{IdentifierURIs: []string{"https://storage.azure.com"}, AccessTokenVersion: 2}, false},
		{"storage, other spelling", sts.Application{IdentifierURIs: []string{"HTTPS://Storage.Azure.COM/"}}, false},
		{"queue account URL", sts.Application{IdentifierURIs: []string{"https://podiddemo.queue.core.windows.net"}}, false},
		{"key vault", sts.Application{IdentifierURIs: []string{"api://mine", "https://vault.azure.net"}}, false},
		{"storage application id", sts.Application{ClientID: "e406a681-f3d4-42a8-90b6-c2b029497af1"}, false},
		{"ARM application id", sts.Application{ClientID: "797F4846-BA00-4FD7-BA43-DAC1F8F63013"}, false},
		{"own identifier URI", sts.Application{IdentifierURIs: []string{"api://orders", "https://orders.podid.test"}, AccessTokenVersion: 2}, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tt.app.DisplayName = tt.name
			_, _, err := srv.PutApplication(ctx, srv.TenantID, tt.app)
			if tt.ok && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if !tt.ok && !errors.Is(err, sts.ErrInvalid) {
				t.Fatalf("err = %v, want ErrInvalid", err)
			}
		})
	}
	// And Storage still gets Entra's v1 token in this tenant.
	r := postForm(t, srv, "/"+srv.TenantID+"/oauth2/token", "application/x-www-form-urlencoded",
		url.Values{"grant_type": {"client_credentials"}, "client_id": {ststest.AdminClientID}, "client_secret": {ststest.AdminSecret}, "resource": {storage}}.Encode())
	if c := unverifiedClaims(t, r.body["access_token"].(string)); c["ver"] != "1.0" || c["aud"] != storage {
		t.Errorf("storage token after the attempts: %v", c)
	}
}
