package jwks_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/podid/podid/internal/sts/jwks"
)

type issuer struct {
	srv     *httptest.Server
	hits    atomic.Int64
	mu      sync.Mutex // protects keys, issuerV, header
	keys    []jose.JSONWebKey
	issuerV string      // overrides the issuer in discovery when set
	fail    atomic.Bool // the JWKS endpoint answers 503
	header  string      // Cache-Control of the JWKS, when set; under mu
}

func newIssuer(t *testing.T) *issuer {
	is := &issuer{}
	mux := http.NewServeMux()
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		is.hits.Add(1)
		is.mu.Lock()
		iss := is.issuerV
		is.mu.Unlock()
		if iss == "" {
			iss = is.srv.URL
		}
		_ = json.NewEncoder(w).Encode(map[string]string{"issuer": iss, "jwks_uri": is.srv.URL + "/keys"})
	})
	mux.HandleFunc("/keys", func(w http.ResponseWriter, r *http.Request) {
		is.hits.Add(1)
		if is.fail.Load() {
			http.Error(w, "unavailable", http.StatusServiceUnavailable)
			return
		}
		// Like kube-apiserver (go-restful, Produces application/jwk-set+json).
		if !strings.Contains(r.Header.Get("Accept"), "application/jwk-set+json") {
			http.Error(w, "406: Not Acceptable", http.StatusNotAcceptable)
			return
		}
		is.mu.Lock()
		defer is.mu.Unlock()
		if is.header != "" {
			w.Header().Set("Cache-Control", is.header)
		}
		_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: is.keys})
	})
	is.srv = httptest.NewTLSServer(mux)
	t.Cleanup(is.srv.Close)
	return is
}

func (is *issuer) addKey(t *testing.T, kid string) {
	k, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	is.mu.Lock()
	defer is.mu.Unlock()
	is.keys = append(is.keys, jose.JSONWebKey{Key: &k.PublicKey, KeyID: kid, Algorithm: "RS256", Use: "sig"})
}

func (is *issuer) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(is.srv.Certificate())
	return p
}

type clock struct {
	mu  sync.Mutex // protects now
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func TestIssuerKeyRefreshOnUnknownKID(t *testing.T) {
	is := newIssuer(t)
	is.addKey(t, "k1")
	clk := &clock{now: time.Now()}
	c := jwks.New(jwks.Config{Trust: jwks.Trust{PerIssuer: map[string]*x509.CertPool{is.srv.URL: is.pool()}}, Now: clk.Now, MinRefresh: 10 * time.Second})
	ctx := context.Background()
	if _, err := c.IssuerKey(ctx, is.srv.URL, "k1"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.IssuerKey(ctx, is.srv.URL, "k1"); err != nil || is.hits.Load() != 2 {
		t.Fatalf("cached lookup refetched: hits=%d err=%v", is.hits.Load(), err)
	}
	is.addKey(t, "k2")
	// Within MinRefresh an unknown kid does not refetch.
	if _, err := c.IssuerKey(ctx, is.srv.URL, "k2"); !errors.Is(err, jwks.ErrUnknownKID) {
		t.Fatalf("err = %v, want ErrUnknownKID", err)
	}
	for range 50 {
		_, _ = c.IssuerKey(ctx, is.srv.URL, "random")
	}
	if is.hits.Load() != 2 {
		t.Fatalf("unknown kids caused %d fetches", is.hits.Load()-2)
	}
	clk.Advance(11 * time.Second)
	if _, err := c.IssuerKey(ctx, is.srv.URL, "k2"); err != nil {
		t.Fatalf("after MinRefresh: %v", err)
	}
}

func TestTrustAndDiscoveryChecks(t *testing.T) {
	is := newIssuer(t)
	is.addKey(t, "k1")
	ctx := context.Background()
	for _, tt := range []struct {
		name    string
		trust   jwks.Trust
		issuer  string
		docIss  string
		wantErr error
	}{
		{"per-issuer CA", jwks.Trust{PerIssuer: map[string]*x509.CertPool{is.srv.URL: is.pool()}, NoSystemRoots: true}, is.srv.URL, "", nil},
		{"global CA", jwks.Trust{Global: is.pool(), NoSystemRoots: true}, is.srv.URL, "", nil},
		{"global CA plus system roots", jwks.Trust{Global: is.pool()}, is.srv.URL, "", nil},
		{"untrusted CA", jwks.Trust{NoSystemRoots: true}, is.srv.URL, "", jwks.ErrFetch},
		{"CA for another issuer only", jwks.Trust{PerIssuer: map[string]*x509.CertPool{"https://other": is.pool()}, NoSystemRoots: true}, is.srv.URL, "", jwks.ErrFetch},
		{"discovery names another issuer", jwks.Trust{Global: is.pool(), NoSystemRoots: true}, is.srv.URL, "https://evil.example", jwks.ErrFetch},
		{"http issuer", jwks.Trust{Global: is.pool()}, "http://" + is.srv.Listener.Addr().String(), "", jwks.ErrFetch},
	} {
		t.Run(tt.name, func(t *testing.T) {
			is.mu.Lock()
			is.issuerV = tt.docIss
			is.mu.Unlock()
			c := jwks.New(jwks.Config{Trust: tt.trust})
			_, err := c.IssuerKey(ctx, tt.issuer, "k1")
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

// A failed fetch is remembered as a failure: callers within MinRefresh get
// the fetch error again (not "unknown kid"), and no new request is made.
func TestFetchFailureCachedAsFailure(t *testing.T) {
	is := newIssuer(t)
	is.addKey(t, "k1")
	is.fail.Store(true)
	clk := &clock{now: time.Now()}
	c := jwks.New(jwks.Config{Trust: jwks.Trust{PerIssuer: map[string]*x509.CertPool{is.srv.URL: is.pool()}}, Now: clk.Now, MinRefresh: 10 * time.Second})
	ctx := context.Background()
	for i := range 3 {
		_, err := c.IssuerKey(ctx, is.srv.URL, "k1")
		if !errors.Is(err, jwks.ErrFetch) || errors.Is(err, jwks.ErrUnknownKID) || !strings.Contains(err.Error(), "503") {
			t.Fatalf("call %d: err = %v, want the fetch failure (status 503)", i, err)
		}
	}
	if got := is.hits.Load(); got != 2 { // one discovery + one JWKS
		t.Fatalf("%d requests, want 2: failures must be rate-limited", got)
	}
	// After MinRefresh, a recovered issuer serves keys again.
	is.fail.Store(false)
	clk.Advance(11 * time.Second)
	if _, err := c.IssuerKey(ctx, is.srv.URL, "k1"); err != nil {
		t.Fatalf("after recovery: %v", err)
	}
	// A later failure keeps the known keys usable but reports the failure
	// for a kid it could not check.
	is.fail.Store(true)
	clk.Advance(2 * time.Hour)
	if _, err := c.IssuerKey(ctx, is.srv.URL, "k1"); err != nil {
		t.Fatalf("known key during outage: %v", err)
	}
	if _, err := c.IssuerKey(ctx, is.srv.URL, "k9"); !errors.Is(err, jwks.ErrFetch) {
		t.Fatalf("unknown kid during outage: err = %v, want ErrFetch", err)
	}
}

// CacheOnly honours the JWKS max-age: no refetch for an unknown kid while
// the cached set is fresh; a refetch once it is stale.
func TestCacheOnlyHonoursMaxAge(t *testing.T) {
	is := newIssuer(t)
	is.addKey(t, "k1")
	is.mu.Lock()
	is.header = "public, max-age=300"
	is.mu.Unlock()
	clk := &clock{now: time.Now()}
	c := jwks.New(jwks.Config{Trust: jwks.Trust{Global: is.pool(), NoSystemRoots: true}, Now: clk.Now, CacheOnly: true})
	ctx := context.Background()
	url := is.srv.URL + "/keys"
	if _, err := c.URLKey(ctx, url, "k1"); err != nil {
		t.Fatal(err)
	}
	is.addKey(t, "k2")
	clk.Advance(299 * time.Second)
	if _, err := c.URLKey(ctx, url, "k2"); !errors.Is(err, jwks.ErrUnknownKID) || is.hits.Load() != 1 {
		t.Fatalf("within max-age: err = %v, hits = %d; want ErrUnknownKID from the cache", err, is.hits.Load())
	}
	clk.Advance(time.Second)
	if _, err := c.URLKey(ctx, url, "k2"); err != nil || is.hits.Load() != 2 {
		t.Fatalf("after max-age: err = %v, hits = %d", err, is.hits.Load())
	}
}
