package sts_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/podid/podid/internal/sts"
	"github.com/podid/podid/internal/sts/ststest"
)

// FuzzTokenEndpoint drives the whole token handler (form, credentials,
// assertions) with arbitrary bodies: every answer must be Entra-shaped JSON
// with a client-error status — never a 5xx, never a panic.
func FuzzTokenEndpoint(f *testing.F) {
	is := ststest.NewIssuer(f)
	srv := ststest.Start(f, ststest.Options{Configure: func(c *sts.Config) { c.ExternalTransport = is.Transport() }})
	const subject = "system:serviceaccount:fuzz:sa"
	clientID := srv.AddIdentity(f, "fuzz", is.URL, subject)
	good := url.Values{"grant_type": {"client_credentials"}, "client_id": {clientID}, "scope": {"https://storage.azure.com/.default"},
		"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"},
		"client_assertion":      {is.Token(f, subject, sts.DefaultFICAudience, time.Now(), time.Hour, nil)}}.Encode()
	for _, seed := range []string{
		good,
		good + "&client_id=x",
		strings.Replace(good, "client_credentials", "", 1),
		"grant_type=client_credentials&client_id=" + ststest.AdminClientID + "&client_secret=" + ststest.AdminSecret + "&scope=a%2F.default",
		"grant_type=client_credentials&client_id=" + ststest.AdminClientID + "&client_secret=x&client_assertion=y&scope=a%2F.default",
		"client_assertion=a.b.c", "%", "",
	} {
		f.Add("v2", seed)
		f.Add("v1", seed+"&resource=https%3A%2F%2Fvault.azure.net")
	}
	h := srv.Handler()
	f.Fuzz(func(t *testing.T, ver, body string) {
		path := "/" + srv.TenantID + "/oauth2/v2.0/token"
		if ver == "v1" {
			path = "/" + srv.TenantID + "/oauth2/token"
		}
		req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		var m map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &m); err != nil {
			t.Fatalf("non-JSON answer %d: %q", rec.Code, rec.Body)
		}
		switch rec.Code {
		case 200:
			if _, ok := m["access_token"].(string); !ok {
				t.Fatalf("200 without access_token: %v", m)
			}
		case 400, 401:
			if d, _ := m["error_description"].(string); sts.CodeOf(d) == 0 {
				t.Fatalf("error without AADSTS code: %v", m)
			}
		default:
			t.Fatalf("status %d: %v", rec.Code, m)
		}
	})
}

// FuzzRouter drives the whole handler with arbitrary methods and paths (no
// credentials): every answer is JSON, and nothing unauthenticated is ever
// a 2xx outside the public metadata, nor a 5xx.
func FuzzRouter(f *testing.F) {
	srv := ststest.Start(f, ststest.Options{})
	for _, seed := range []string{
		"/", "/healthz", "/" + srv.TenantID + "/oauth2/v2.0/token", "/" + srv.TenantID + "/OAUTH2/TOKEN",
		"/common/discovery/keys", "/podid.test/v2.0/.well-known/openid-configuration", "/common/discovery/instance/",
		"/podid/v1/tenants/" + srv.TenantID + "/applications", "/podid/v1/tenants/x/../y",
		"/subscriptions/" + ststest.SubscriptionID + "/providers/Microsoft.ManagedIdentity/userAssignedIdentities?api-version=2023-01-31",
		"/clusters/dev/openid/v1/jwks", "/a/b/c/d/e", "/%2e%2e/x",
	} {
		for _, m := range []string{"GET", "POST", "PUT", "DELETE"} {
			f.Add(m, seed)
		}
	}
	h := srv.Handler()
	f.Fuzz(func(t *testing.T, method, target string) {
		if !strings.HasPrefix(target, "/") {
			return
		}
		req, err := http.NewRequest(method, "https://127.0.0.1"+target, http.NoBody)
		if err != nil {
			return
		}
		req.Body = http.NoBody // as the server sets it
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("%s %s: %d %s", method, target, rec.Code, rec.Body)
		}
		var v any
		if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil && method != http.MethodHead {
			t.Fatalf("%s %s: non-JSON answer %d: %q", method, target, rec.Code, rec.Body)
		}
		if rec.Code < 300 && (strings.Contains(req.URL.Path, "/podid/v1") || strings.Contains(strings.ToLower(req.URL.Path), "subscriptions") || strings.Contains(strings.ToLower(req.URL.Path), "token")) {
			t.Fatalf("%s %s: %d without credentials", method, target, rec.Code)
		}
	})
}
