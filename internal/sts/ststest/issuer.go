package ststest

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// Issuer is an external OIDC issuer (like a Kubernetes API server's
// service-account issuer): HTTPS with its own CA, discovery and JWKS, RS256.
type Issuer struct {
	URL  string
	Key  *rsa.PrivateKey
	KID  string
	srv  *httptest.Server
	hits atomic.Int64
	fail atomic.Bool
}

// NewIssuer starts an issuer on 127.0.0.1 and stops it at cleanup.
func NewIssuer(t testing.TB) *Issuer {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	is := &Issuer{Key: key, KID: "issuer-key-1"}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		is.hits.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"issuer": is.URL, "jwks_uri": is.URL + "/openid/v1/jwks",
			"response_types_supported": []string{"id_token"}, "subject_types_supported": []string{"public"},
			"id_token_signing_alg_values_supported": []string{"RS256"},
		})
	})
	mux.HandleFunc("GET /openid/v1/jwks", func(w http.ResponseWriter, r *http.Request) {
		is.hits.Add(1)
		if is.fail.Load() {
			http.Error(w, "JWKS unavailable", http.StatusServiceUnavailable)
			return
		}
		// kube-apiserver answers 406 unless the client accepts this type.
		if !strings.Contains(r.Header.Get("Accept"), "application/jwk-set+json") {
			http.Error(w, "406: Not Acceptable", http.StatusNotAcceptable)
			return
		}
		w.Header().Set("Content-Type", "application/jwk-set+json")
		_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &is.Key.PublicKey, KeyID: is.KID, Algorithm: "RS256", Use: "sig"}}})
	})
	is.srv = httptest.NewTLSServer(mux)
	is.URL = is.srv.URL
	t.Cleanup(is.srv.Close)
	return is
}

// FailJWKS makes the JWKS endpoint answer 503 (an issuer outage) until
// called with false.
func (is *Issuer) FailJWKS(fail bool) { is.fail.Store(fail) }

// Hits counts metadata requests served (discovery + JWKS).
func (is *Issuer) Hits() int64 { return is.hits.Load() }

// CAPool trusts the issuer's certificate.
func (is *Issuer) CAPool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(is.srv.Certificate())
	return p
}

// Token signs a service-account-like token for sub and aud valid for ttl
// from now. Extra claims override the defaults.
func (is *Issuer) Token(t testing.TB, sub, aud string, now time.Time, ttl time.Duration, extra map[string]any) string {
	t.Helper()
	claims := map[string]any{
		"iss": is.URL, "sub": sub, "aud": []string{aud},
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(ttl).Unix(), "jti": "test",
	}
	for k, v := range extra {
		claims[k] = v
	}
	return is.Sign(t, claims, is.KID)
}

// Sign signs arbitrary claims with the issuer key under kid (RS256).
func (is *Issuer) Sign(t testing.TB, claims map[string]any, kid string) string {
	t.Helper()
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: is.Key}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", kid))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Signed(sig).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// Transport returns a transport that trusts the issuer.
func (is *Issuer) Transport() http.RoundTripper { return is.srv.Client().Transport }
