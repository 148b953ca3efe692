package sts

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	jose "github.com/go-jose/go-jose/v4"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/podid/podid/internal/daemon"
	"github.com/podid/podid/internal/pki"
	"github.com/podid/podid/internal/sts/jwks"
	"github.com/podid/podid/internal/sts/keyset"
	"github.com/podid/podid/internal/sts/keyvault"
	"github.com/podid/podid/internal/sts/store"
)

// Server is the identity provider: the HTTP APIs, the signing keys and the
// external issuers' keys, over the Directory (promoted, so a Server offers
// the directory's methods to the bootstrap and to tests).
type Server struct {
	*Directory // set by Open

	cfg Config
	log *slog.Logger

	// Set by Open.
	store    *store.Store
	keys     *keyset.Set
	material *pki.Material
	ext      *jwks.Cache
	vaults   *keyvault.Handler
	metrics  *metrics
	registry *prometheus.Registry // served on cfg.MetricsAddr; nil when off

	mu        sync.RWMutex // protects publicURL
	publicURL string
}

// Run builds a Server from cfg and serves until ctx ends.
func Run(ctx context.Context, cfg Config) error {
	s, err := New(cfg)
	if err != nil {
		return err
	}
	return s.ListenAndServe(ctx)
}

// New validates cfg and assembles a Server. It does no I/O.
func New(cfg Config) (*Server, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	var reg *prometheus.Registry
	if cfg.MetricsAddr != "" {
		reg = daemon.NewRegistry()
		if cfg.Metrics == nil {
			cfg.Metrics = reg
		}
	}
	m, err := newMetrics(cfg.Metrics)
	if err != nil {
		return nil, fmt.Errorf("sts: register metrics: %w", err)
	}
	return &Server{cfg: cfg, log: cfg.Logger, metrics: m, registry: reg, publicURL: cfg.PublicURL}, nil
}

// Open opens the state file, loads or creates the CA, serving certificate
// and signing keys, writes the CA file and applies the bootstrap.
func (s *Server) Open(ctx context.Context) error {
	if s.store != nil {
		return errors.New("sts: already open")
	}
	st, err := store.Open(s.cfg.StatePath)
	if err != nil {
		return err
	}
	if err := s.open(ctx, st); err != nil {
		st.Close()
		return err
	}
	return nil
}

func (s *Server) open(ctx context.Context, st *store.Store) error {
	now := s.cfg.Now()
	// The serving certificate also names every vault host.
	certHosts := slices.Clone(s.cfg.Hosts)
	if !slices.Contains(certHosts, "*."+s.cfg.VaultDNSSuffix) { // the local cloud's chart names it too
		certHosts = append(certHosts, "*."+s.cfg.VaultDNSSuffix)
	}
	mat, err := pki.EnsureWithCA(st, func(err error) bool { return errors.Is(err, store.ErrNotFound) }, certHosts, now, s.cfg.CA)
	if err != nil {
		return err
	}
	if s.cfg.CAFile != "" {
		if err := mat.WriteCAFile(s.cfg.CAFile); err != nil {
			return err
		}
	}
	keys := keyset.New(keyset.Config{Store: st, Interval: s.cfg.KeyRotationInterval, Lead: s.cfg.KeyPublishLead, Overlap: s.cfg.KeyOverlap, Bits: s.cfg.RSABits})
	if err := keys.Load(now); err != nil {
		return err
	}
	s.store, s.keys, s.material = st, keys, mat
	s.Directory = newDirectory(st, s.log)
	s.vaults, err = keyvault.New(keyvault.Config{
		Store: st, Keys: keys, Authorizer: vaultRBAC{s.Directory}, DNSSuffix: s.cfg.VaultDNSSuffix,
		Authority: s.PublicURL, V2Issuer: s.v2Issuer, Observe: s.metrics.observeVault, Now: s.cfg.Now, Log: s.log,
	})
	if err != nil {
		return err
	}
	trust := s.cfg.ExternalTrust
	if len(s.cfg.ClusterIssuers) > 0 {
		// Hosted cluster issuers are fetched from ourselves: trust our CA.
		if trust.Global == nil {
			trust.Global = x509.NewCertPool()
		} else {
			trust.Global = trust.Global.Clone()
		}
		trust.Global.AddCert(mat.CA)
	}
	s.ext = jwks.New(jwks.Config{Trust: trust, Transport: s.cfg.ExternalTransport, Now: s.cfg.Now, MinRefresh: s.cfg.JWKSMinRefresh})
	if err := s.reloadTenants(); err != nil {
		return err
	}
	if err := s.reindex(); err != nil {
		return err
	}
	if err := s.migrateAppRoles(ctx); err != nil {
		return err
	}
	if s.cfg.Bootstrap != nil {
		if err := s.Apply(ctx, s.cfg.Bootstrap); err != nil {
			return err
		}
	}
	return nil
}

// Close closes the state file.
func (s *Server) Close() error {
	if s.store == nil {
		return nil
	}
	return s.store.Close()
}

// CAPEM returns the CA certificate (after Open).
func (s *Server) CAPEM() []byte { return s.material.CAPEM() }

// TLSCertificate returns the serving certificate (after Open).
func (s *Server) TLSCertificate() tls.Certificate { return s.material.Serving }

// ListenAndServe opens the server if needed, listens on cfg.ListenAddr and
// serves until ctx ends; it closes what it opened.
func (s *Server) ListenAndServe(ctx context.Context) error {
	if s.store == nil {
		if err := s.Open(ctx); err != nil {
			return err
		}
		defer s.Close()
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", s.cfg.ListenAddr)
	if err != nil {
		return fmt.Errorf("sts: listen: %w", err)
	}
	return s.Serve(ctx, ln)
}

// Serve serves HTTPS on ln and rotates signing keys when due, until ctx
// ends. It closes ln.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	if s.store == nil {
		ln.Close()
		return errors.New("sts: Serve before Open")
	}
	s.mu.Lock()
	if s.publicURL == "" {
		_, port, _ := net.SplitHostPort(ln.Addr().String())
		s.publicURL = "https://" + net.JoinHostPort(s.cfg.Hosts[0], port)
	}
	s.mu.Unlock()
	hs := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		TLSConfig:         &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{s.material.Serving}},
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	s.log.Info("sts serving", "addr", ln.Addr().String(), "url", s.PublicURL())
	d := daemon.Config{HealthAddr: s.cfg.HealthAddr, DebugAddr: s.cfg.DebugAddr, Logger: s.log}
	if s.registry != nil {
		d.MetricsAddr, d.Registry = s.cfg.MetricsAddr, s.registry
	}
	rotate := func(ctx context.Context) error {
		t := time.NewTicker(s.cfg.RotationCheck)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
				if _, err := s.RotateKeys(false); err != nil {
					s.log.Error("key rotation failed", "err", err)
				}
			}
		}
	}
	return daemon.Run(ctx, d, func(ctx context.Context) error { return daemon.ServeListener(ctx, s.log, "sts", ln, hs) }, rotate)
}

// RotateKeys rotates the signing key if it is due (or force) and prunes
// retired keys past their overlap, using cfg.Now.
func (s *Server) RotateKeys(force bool) (bool, error) {
	changed, err := s.keys.Rotate(s.cfg.Now(), force)
	if changed && err == nil {
		s.metrics.rotated.Inc()
		cur, _ := s.keys.Current()
		s.log.Info("signing keys rotated", "current_kid", cur.KID, "published", len(s.keys.Public().Keys))
	}
	return changed, err
}

// PublicURL is the base URL (scheme://host:port) used for issuers when the
// request's Host is not a known name.
func (s *Server) PublicURL() string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.publicURL
}

// baseURL returns the URL clients reached us at if it is one of our names
// (MSAL compares the discovery issuer's host with the authority host), else
// PublicURL. Host is never echoed unchecked.
func (s *Server) baseURL(r *http.Request) string {
	host := r.Host
	h, port, err := net.SplitHostPort(host)
	if err != nil {
		h, port = host, ""
	}
	if port != "" {
		if _, err := strconv.ParseUint(port, 10, 16); err != nil {
			return s.PublicURL()
		}
	}
	h = strings.Trim(h, "[]")
	for _, known := range s.cfg.Hosts {
		if strings.EqualFold(known, h) {
			return "https://" + strings.ToLower(host)
		}
	}
	return s.PublicURL()
}

// Handler returns the HTTP handler (after Open). Exposed so a test can
// mount it on its own TLS listener.
//
// The first segment picks the API. Tenant-scoped Entra paths and hosted
// cluster issuers are routed by ServeMux patterns; ARM keeps its own parser
// because ARM's literal segments match case-insensitively, which patterns
// cannot express. Every error, routed or not, is a JSON document.
func (s *Server) Handler() http.Handler {
	tenant := http.NewServeMux()
	tenant.HandleFunc("/{tenant}/oauth2/v2.0/token", func(w http.ResponseWriter, r *http.Request) { s.serveToken(w, r, r.PathValue("tenant"), 2) })
	tenant.HandleFunc("/{tenant}/oauth2/token", func(w http.ResponseWriter, r *http.Request) { s.serveToken(w, r, r.PathValue("tenant"), 1) })
	tenant.HandleFunc("GET /{tenant}/v2.0/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		s.serveDiscovery(w, r, r.PathValue("tenant"), 2)
	})
	tenant.HandleFunc("GET /{tenant}/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		s.serveDiscovery(w, r, r.PathValue("tenant"), 1)
	})
	tenant.HandleFunc("GET /{tenant}/discovery/v2.0/keys", s.serveJWKS)
	tenant.HandleFunc("GET /{tenant}/discovery/keys", s.serveJWKS)
	tenant.HandleFunc("GET /{tenant}/discovery/instance", s.serveInstanceDiscovery)
	tenant.HandleFunc("GET /{tenant}/discovery/instance/{$}", s.serveInstanceDiscovery)

	clusters := http.NewServeMux()
	clusters.HandleFunc("GET /clusters/{name}/.well-known/openid-configuration", s.serveClusterDiscovery)
	clusters.HandleFunc("GET /clusters/{name}/openid/v1/jwks", s.serveClusterJWKS)

	m := &mgmt{Directory: s.Directory, cfg: &s.cfg, log: s.log, keys: s.keys, vaults: s.vaults, baseURL: s.baseURL}
	return &router{mgmt: m, vaults: s.vaults, tenant: jsonErrors(tenant), clusters: jsonErrors(clusters), admin: m.adminHandler()}
}

type router struct {
	mgmt     *mgmt
	vaults   *keyvault.Handler
	tenant   http.Handler
	clusters http.Handler
	admin    http.Handler
}

func (rt *router) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// A vault host ({vault}.{VaultDNSSuffix}) is Key Vault, whatever the path.
	if _, ok := rt.vaults.VaultName(r.Host); ok {
		rt.vaults.ServeHTTP(w, r)
		return
	}
	// Work on the raw path so an encoded separator cannot alias a route.
	// Dot segments are refused too: the muxes would redirect them, and the
	// admin API authorizes on the tenant segment as sent.
	if strings.ContainsAny(r.URL.RawPath, "%") || strings.Contains(r.URL.Path, "//") || hasDotSegment(r.URL.Path) {
		writeHTTPError(w, http.StatusBadRequest, "invalid_request", "The request path is malformed: encoded characters and empty segments are not accepted.")
		return
	}
	segs := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	switch {
	case len(segs) == 1 && segs[0] == "healthz":
		writeJSON(w, 200, map[string]string{"status": "ok"})
	case strings.EqualFold(segs[0], "subscriptions"), strings.EqualFold(segs[0], "providers"), authorizationIndex(segs) >= 0:
		// providers/…: ARM at the tenant root scope "/"; any other path
		// ending in Microsoft.Authorization is ARM with a malformed scope,
		// which ARM answers as such.
		rt.mgmt.serveARM(w, r, segs)
	case len(segs) == 1 && strings.EqualFold(segs[0], "tenants"):
		rt.mgmt.serveAccountList(w, r, listTenants)
	case segs[0] == "clusters":
		rt.clusters.ServeHTTP(w, r)
	case segs[0] == "podid" && len(segs) >= 2 && segs[1] == "v1":
		rt.admin.ServeHTTP(w, r)
	default:
		rt.tenant.ServeHTTP(w, foldTenantPath(r))
	}
}

func hasDotSegment(p string) bool {
	for _, seg := range strings.Split(p, "/") {
		if seg == "." || seg == ".." {
			return true
		}
	}
	return false
}

// foldTenantPath lower-cases everything after the tenant segment: Entra
// matches its paths case-insensitively, and every literal of the tenant
// routes is lower case. The tenant segment keeps its case (it is resolved
// case-insensitively, and echoed in errors as sent).
func foldTenantPath(r *http.Request) *http.Request {
	tseg, rest, ok := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	lower := strings.ToLower(rest)
	if !ok || lower == rest {
		return r
	}
	r2 := r.WithContext(r.Context())
	u := *r.URL
	u.Path = "/" + tseg + "/" + lower
	r2.URL = &u
	return r2
}

// jsonErrors serves mux, answering what no pattern matches (404, or 405
// with Allow) as JSON instead of the mux's text/plain.
func jsonErrors(mux *http.ServeMux) http.Handler {
	return jsonErrorsWith(mux, func(w http.ResponseWriter, status int) {
		if status == http.StatusMethodNotAllowed {
			writeHTTPError(w, status, "invalid_request", "The request method is not allowed on this path.")
			return
		}
		writeHTTPError(w, status, "not_found", "The requested path was not found.")
	})
}

// jsonErrorsWith serves mux, answering what no pattern matches with
// write(status) instead of the mux's text/plain (its headers, such as Allow,
// are kept).
func jsonErrorsWith(mux *http.ServeMux, write func(w http.ResponseWriter, status int)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if h, pattern := mux.Handler(r); pattern == "" {
			h.ServeHTTP(&jsonErrorWriter{ResponseWriter: w, write: write}, r)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// jsonErrorWriter replaces the mux's plain-text error with a JSON one.
type jsonErrorWriter struct {
	http.ResponseWriter
	write func(w http.ResponseWriter, status int)
	wrote bool
}

func (j *jsonErrorWriter) WriteHeader(code int) {
	if j.wrote {
		return
	}
	j.wrote = true
	j.Header().Del("X-Content-Type-Options")
	j.write(j.ResponseWriter, code)
}

func (j *jsonErrorWriter) Write(p []byte) (int, error) {
	if !j.wrote {
		j.WriteHeader(http.StatusNotFound)
	}
	return len(p), nil // the mux's text body is replaced by the JSON one
}

// writeHTTPError answers a request no API claimed, in the OAuth error shape
// clients of the tenant paths parse.
func writeHTTPError(w http.ResponseWriter, status int, code, desc string) {
	writeJSON(w, status, map[string]string{"error": code, "error_description": desc})
}

// VaultDNSSuffix is the DNS suffix of the vaults the sts serves.
func (s *Server) VaultDNSSuffix() string { return s.cfg.VaultDNSSuffix }

// VaultURI is a vault's base URL, https://{name}.{VaultDNSSuffix}/.
func (s *Server) VaultURI(name string) string { return s.vaults.VaultURI(name) }

// PublicKeys returns the published JWKS (current key first).
func (s *Server) PublicKeys() jose.JSONWebKeySet { return s.keys.Public() }

// vaultRBAC answers the vaults' data-action questions from the
// directory's Azure role assignments.
type vaultRBAC struct{ d *Directory }

func (a vaultRBAC) HasDataAction(ctx context.Context, tenantID, principalID, scope, dataAction string) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	return a.d.HasDataAction(tenantID, principalID, dataAction, scope)
}
