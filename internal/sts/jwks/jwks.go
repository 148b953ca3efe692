// Package jwks fetches and caches signing keys of OIDC issuers: either via
// `{issuer}/.well-known/openid-configuration` → `jwks_uri`, or from a JWKS URL
// directly. Only https is fetched; the CA bundles trusted for an issuer are
// configurable (global and per issuer), because cluster issuers typically use
// a self-signed CA. Keys are cached; a kid that is not in the cache triggers a
// refetch, at most once per MinRefresh per source, so a stream of tokens with
// random kids cannot turn into a stream of outbound requests. A failed fetch
// is remembered as a failure (for MinRefresh), never as an empty key set.
package jwks

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"golang.org/x/sync/singleflight"
)

// Errors callers map to protocol errors.
var (
	ErrUnknownKID = errors.New("signing key not found in issuer's JWKS")
	ErrFetch      = errors.New("fetching issuer metadata failed")
)

const maxBody = 1 << 20

// Trust says which CAs are trusted when fetching from an issuer.
type Trust struct {
	// Global is trusted for every issuer, in addition to the system roots
	// unless NoSystemRoots is set.
	Global *x509.CertPool
	// PerIssuer, keyed by exact issuer URL (or JWKS URL), replaces Global and
	// the system roots for that issuer.
	PerIssuer     map[string]*x509.CertPool
	NoSystemRoots bool
}

// Config configures a Cache.
type Config struct {
	Trust      Trust
	Now        func() time.Time
	TTL        time.Duration // keys are refetched after this; 1h when zero
	MinRefresh time.Duration // minimum time between refetches of one source; 10s when zero
	Timeout    time.Duration // per fetch; 10s when zero
	// Transport, when set, is used for every fetch (tests, proxies); it
	// overrides Trust.
	Transport http.RoundTripper
	// CacheOnly makes the cache behave like a resource server that honours
	// the JWKS response's Cache-Control max-age and nothing else: keys are
	// served from the cache until max-age (or TTL) passes, and an unknown
	// kid is an error until then instead of a refetch.
	CacheOnly bool
}

type entry struct {
	keys    map[string]jose.JSONWebKey
	fetched time.Time     // last fetch attempt
	ttl     time.Duration // how long keys stays fresh after fetched
	err     error         // the last fetch's failure; nil after a success
}

// Cache is safe for concurrent use.
type Cache struct {
	cfg        Config
	globalOnce sync.Once
	global     *http.Client // set once by globalClient
	sf         singleflight.Group

	mu      sync.Mutex              // protects entries, clients
	entries map[string]*entry       // by source ("iss:"+issuer or "url:"+jwksURL)
	clients map[string]*http.Client // by issuer with a per-issuer pool
}

// New assembles a Cache; it does no I/O.
func New(cfg Config) *Cache {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.TTL == 0 {
		cfg.TTL = time.Hour
	}
	if cfg.MinRefresh == 0 {
		cfg.MinRefresh = 10 * time.Second
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 10 * time.Second
	}
	return &Cache{cfg: cfg, entries: map[string]*entry{}, clients: map[string]*http.Client{}}
}

// globalClient builds the shared client on first use: loading the system
// roots reads files, which a constructor must not do.
func (c *Cache) globalClient() *http.Client {
	c.globalOnce.Do(func() {
		switch {
		case c.cfg.Transport != nil:
			c.global = c.newClient(c.cfg.Transport)
		case c.cfg.Trust.NoSystemRoots:
			c.global = c.newClient(transportFor(c.cfg.Trust.Global, nil))
		default:
			sys, err := x509.SystemCertPool()
			if err != nil || sys == nil {
				sys = x509.NewCertPool()
			}
			c.global = c.newClient(transportFor(sys, c.cfg.Trust.Global))
		}
	})
	return c.global
}

// transportFor trusts certificates that chain to either pool.
func transportFor(primary, extra *x509.CertPool) http.RoundTripper {
	if primary == nil {
		primary = x509.NewCertPool()
	}
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: primary}
	if extra != nil {
		// Verify ourselves against both pools: CertPool has no merge API.
		tlsCfg.InsecureSkipVerify = true // replaced by VerifyConnection below
		tlsCfg.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("no peer certificate")
			}
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			var lastErr error
			for _, roots := range []*x509.CertPool{extra, primary} {
				_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, DNSName: cs.ServerName})
				if err == nil {
					return nil
				}
				lastErr = err
			}
			return lastErr
		}
	}
	return &http.Transport{
		TLSClientConfig:     tlsCfg,
		ForceAttemptHTTP2:   true,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     90 * time.Second,
		TLSHandshakeTimeout: 10 * time.Second,
		Proxy:               http.ProxyFromEnvironment,
	}
}

func (c *Cache) newClient(rt http.RoundTripper) *http.Client {
	return &http.Client{
		Transport: rt,
		Timeout:   c.cfg.Timeout,
		// Metadata must come from the URL asked for, never elsewhere.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

func (c *Cache) clientFor(issuer string) *http.Client {
	if c.cfg.Transport != nil {
		return c.globalClient()
	}
	pool, ok := c.cfg.Trust.PerIssuer[issuer]
	if !ok {
		return c.globalClient()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if cl, ok := c.clients[issuer]; ok {
		return cl
	}
	cl := c.newClient(transportFor(pool, nil))
	c.clients[issuer] = cl
	return cl
}

// IssuerKey returns the key with kid published by the OIDC issuer.
func (c *Cache) IssuerKey(ctx context.Context, issuer, kid string) (*jose.JSONWebKey, error) {
	return c.key(ctx, "iss:"+issuer, issuer, kid, func(ctx context.Context) (*jose.JSONWebKeySet, time.Duration, error) {
		cl := c.clientFor(issuer)
		jwksURI, err := discover(ctx, cl, issuer)
		if err != nil {
			return nil, 0, err
		}
		return fetchSet(ctx, cl, jwksURI)
	})
}

// URLKey returns the key with kid from the JWKS at jwksURL.
func (c *Cache) URLKey(ctx context.Context, jwksURL, kid string) (*jose.JSONWebKey, error) {
	return c.key(ctx, "url:"+jwksURL, jwksURL, kid, func(ctx context.Context) (*jose.JSONWebKeySet, time.Duration, error) {
		return fetchSet(ctx, c.clientFor(jwksURL), jwksURL)
	})
}

type fetchFunc func(context.Context) (*jose.JSONWebKeySet, time.Duration, error)

func (c *Cache) key(ctx context.Context, source, label, kid string, fetch fetchFunc) (*jose.JSONWebKey, error) {
	now := c.cfg.Now()
	c.mu.Lock()
	e := c.entries[source]
	var (
		k        jose.JSONWebKey
		found    bool
		fresh    bool
		lastErr  error
		canFetch = e == nil || now.Sub(e.fetched) >= c.cfg.MinRefresh
	)
	if e != nil {
		k, found = e.keys[kid]
		fresh = now.Sub(e.fetched) < e.ttl
		lastErr = e.err
		if found && fresh {
			c.mu.Unlock()
			return &k, nil
		}
		if c.cfg.CacheOnly && fresh && lastErr == nil {
			canFetch = false
		}
	}
	c.mu.Unlock()
	if !canFetch {
		switch {
		case found:
			return &k, nil
		case lastErr != nil:
			// The last fetch failed: say so, not "unknown kid" — the key
			// may well exist behind the failure.
			return nil, lastErr
		}
		return nil, fmt.Errorf("%w: kid %q from %s", ErrUnknownKID, kid, label)
	}
	// One fetch per source at a time; it outlives a single caller's
	// cancellation so other waiters still get the result.
	v, err, _ := c.sf.Do(source, func() (any, error) {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.Timeout)
		defer cancel()
		set, maxAge, err := fetch(fctx)
		c.mu.Lock()
		defer c.mu.Unlock()
		if err != nil {
			// Remember the failure and its time, so failures are
			// rate-limited and reported as failures; keep the old keys.
			ne := &entry{keys: map[string]jose.JSONWebKey{}, fetched: c.cfg.Now(), err: err}
			if old := c.entries[source]; old != nil {
				ne.keys, ne.ttl = old.keys, old.ttl
			}
			c.entries[source] = ne
			return nil, err
		}
		keys := map[string]jose.JSONWebKey{}
		for _, k := range set.Keys {
			if k.KeyID == "" || !k.Valid() || !k.IsPublic() || (k.Use != "" && k.Use != "sig") {
				continue
			}
			keys[k.KeyID] = k
		}
		ttl := c.cfg.TTL
		if maxAge > 0 && maxAge < ttl {
			ttl = maxAge
		}
		ne := &entry{keys: keys, fetched: c.cfg.Now(), ttl: ttl}
		c.entries[source] = ne
		return ne, nil
	})
	if err != nil {
		if found {
			return &k, nil
		}
		return nil, err
	}
	if k, ok := v.(*entry).keys[kid]; ok {
		return &k, nil
	}
	return nil, fmt.Errorf("%w: kid %q from %s", ErrUnknownKID, kid, label)
}

func checkHTTPS(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil {
		return nil, fmt.Errorf("%w: %q is not an https URL", ErrFetch, raw)
	}
	return u, nil
}

// Accept headers. kube-apiserver serves its JWKS only as
// application/jwk-set+json and answers 406 to "Accept: application/json".
const (
	acceptDiscovery = "application/json"
	acceptJWKS      = "application/jwk-set+json, application/json"
)

// getJSON fetches raw into v and returns the response's Cache-Control
// max-age (0 when absent).
func getJSON(ctx context.Context, cl *http.Client, raw, accept string, v any) (time.Duration, error) {
	if _, err := checkHTTPS(raw); err != nil {
		return 0, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, raw, nil)
	if err != nil {
		return 0, fmt.Errorf("%w: %v", ErrFetch, err)
	}
	req.Header.Set("Accept", accept)
	resp, err := cl.Do(req)
	if err != nil {
		return 0, fmt.Errorf("%w: GET %s: %v", ErrFetch, raw, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("%w: GET %s: status %d", ErrFetch, raw, resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err != nil {
		return 0, fmt.Errorf("%w: GET %s: %v", ErrFetch, raw, err)
	}
	if len(body) > maxBody {
		return 0, fmt.Errorf("%w: GET %s: body larger than %d bytes", ErrFetch, raw, maxBody)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return 0, fmt.Errorf("%w: GET %s: %v", ErrFetch, raw, err)
	}
	return maxAge(resp.Header.Get("Cache-Control")), nil
}

// maxAge reads max-age from a Cache-Control value; no-store and no-cache
// mean "do not reuse", which a key cache approximates as 0 (use TTL/refetch).
func maxAge(cc string) time.Duration {
	for _, d := range strings.Split(cc, ",") {
		name, val, _ := strings.Cut(strings.TrimSpace(d), "=")
		if strings.EqualFold(name, "max-age") {
			n, err := strconv.ParseUint(strings.Trim(val, `"`), 10, 32)
			if err == nil && n > 0 {
				return time.Duration(n) * time.Second
			}
		}
	}
	return 0
}

func discover(ctx context.Context, cl *http.Client, issuer string) (string, error) {
	if _, err := checkHTTPS(issuer); err != nil {
		return "", err
	}
	var doc struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	discoveryURL := issuer
	if len(discoveryURL) > 0 && discoveryURL[len(discoveryURL)-1] == '/' {
		discoveryURL = discoveryURL[:len(discoveryURL)-1]
	}
	discoveryURL += "/.well-known/openid-configuration"
	if _, err := getJSON(ctx, cl, discoveryURL, acceptDiscovery, &doc); err != nil {
		return "", err
	}
	// OIDC Discovery §4.3: the document must name the issuer it was fetched for.
	if doc.Issuer != issuer {
		return "", fmt.Errorf("%w: discovery document of %q names issuer %q", ErrFetch, issuer, doc.Issuer)
	}
	if _, err := checkHTTPS(doc.JWKSURI); err != nil {
		return "", err
	}
	return doc.JWKSURI, nil
}

func fetchSet(ctx context.Context, cl *http.Client, jwksURL string) (*jose.JSONWebKeySet, time.Duration, error) {
	// Decode key by key: one unsupported key (e.g. an "enc" EC key) must not
	// hide the others.
	var raw struct {
		Keys []json.RawMessage `json:"keys"`
	}
	age, err := getJSON(ctx, cl, jwksURL, acceptJWKS, &raw)
	if err != nil {
		return nil, 0, err
	}
	set := &jose.JSONWebKeySet{}
	for _, r := range raw.Keys {
		var k jose.JSONWebKey
		if err := k.UnmarshalJSON(r); err != nil {
			continue
		}
		set.Keys = append(set.Keys, k)
	}
	return set, age, nil
}
