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
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"

	"github.com/podid/podid/internal/sts/jwks"
	"github.com/podid/podid/internal/sts/keyset"
	"github.com/podid/podid/internal/sts/pki"
	"github.com/podid/podid/internal/sts/store"
)

// Server is the identity provider.
type Server struct {
	cfg Config
	log *slog.Logger

	// Set by Open.
	store    *store.Store
	keys     *keyset.Set
	material *pki.Material
	ext      *jwks.Cache
	dir      dirHolder
	metrics  *metrics
	registry *prometheus.Registry // served on cfg.MetricsAddr; nil when off

	mu        sync.RWMutex            // protects tenants, publicURL
	tenants   map[string]store.Tenant // by lower-case id and domain
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
		reg = prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		if cfg.Metrics == nil {
			cfg.Metrics = reg
		}
	}
	m, err := newMetrics(cfg.Metrics)
	if err != nil {
		return nil, fmt.Errorf("sts: register metrics: %w", err)
	}
	return &Server{cfg: cfg, log: cfg.Logger, metrics: m, registry: reg, tenants: map[string]store.Tenant{}, publicURL: cfg.PublicURL}, nil
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
	mat, err := pki.EnsureWithCA(st, func(err error) bool { return errors.Is(err, store.ErrNotFound) }, s.cfg.Hosts, now, s.cfg.CA)
	if err != nil {
		return err
	}
	if s.cfg.CAFile != "" {
		if err := mat.WriteCAFile(s.cfg.CAFile); err != nil {
			return err
		}
	}
	keys := keyset.New(keyset.Config{Store: st, Interval: s.cfg.KeyRotationInterval, Overlap: s.cfg.KeyOverlap, Bits: s.cfg.RSABits})
	if err := keys.Load(now); err != nil {
		return err
	}
	s.store, s.keys, s.material = st, keys, mat
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
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	s.log.Info("sts serving", "addr", ln.Addr().String(), "url", s.PublicURL())
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := hs.ServeTLS(ln, "", ""); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("sts: serve: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := hs.Shutdown(sctx); err != nil {
			// Connections that never sent a request (or slow ones) must not
			// keep us alive: drop them.
			s.log.Warn("graceful shutdown incomplete; closing connections", "err", err)
			return hs.Close()
		}
		return nil
	})
	if s.registry != nil {
		var lc net.ListenConfig
		mln, err := lc.Listen(ctx, "tcp", s.cfg.MetricsAddr)
		if err != nil {
			ln.Close()
			return fmt.Errorf("sts: metrics listen: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{}))
		ms := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		g.Go(func() error {
			if err := ms.Serve(mln); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("sts: metrics: %w", err)
			}
			return nil
		})
		g.Go(func() error {
			<-gctx.Done()
			return ms.Close()
		})
	}
	g.Go(func() error {
		t := time.NewTicker(s.cfg.RotationCheck)
		defer t.Stop()
		for {
			select {
			case <-gctx.Done():
				return nil
			case <-t.C:
				if _, err := s.RotateKeys(false); err != nil {
					s.log.Error("key rotation failed", "err", err)
				}
			}
		}
	})
	return g.Wait()
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

func (s *Server) reloadTenants() error {
	ts, err := s.store.Tenants()
	if err != nil {
		return fmt.Errorf("load tenants: %w", err)
	}
	m := make(map[string]store.Tenant, len(ts)*2)
	for _, t := range ts {
		m[strings.ToLower(t.ID)] = t
		for _, d := range t.Domains {
			m[strings.ToLower(d)] = t
		}
	}
	s.mu.Lock()
	s.tenants = m
	s.mu.Unlock()
	return nil
}

// tenant resolves a tenant path segment (id or domain).
func (s *Server) tenant(seg string) (store.Tenant, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	t, ok := s.tenants[strings.ToLower(seg)]
	return t, ok
}

// Handler returns the HTTP handler (after Open). Exposed so a test can
// mount it on its own TLS listener.
func (s *Server) Handler() http.Handler {
	return http.HandlerFunc(s.route)
}

func (s *Server) route(w http.ResponseWriter, r *http.Request) {
	// Work on the raw path so an encoded separator cannot alias a route.
	if strings.ContainsAny(r.URL.RawPath, "%") || strings.Contains(r.URL.Path, "//") {
		http.Error(w, "bad path", http.StatusBadRequest)
		return
	}
	segs := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	switch {
	case len(segs) == 1 && segs[0] == "healthz":
		writeJSON(w, 200, map[string]string{"status": "ok"})
	case strings.EqualFold(segs[0], "subscriptions"):
		s.serveARM(w, r, segs)
	case segs[0] == "clusters":
		s.serveCluster(w, r, segs)
	case segs[0] == "podid" && len(segs) >= 2 && segs[1] == "v1":
		s.serveAdmin(w, r, segs[2:])
	default:
		s.serveTenant(w, r, segs)
	}
}

func (s *Server) serveTenant(w http.ResponseWriter, r *http.Request, segs []string) {
	if len(segs) < 2 {
		http.NotFound(w, r)
		return
	}
	tseg, rest := segs[0], strings.Join(segs[1:], "/")
	switch rest {
	case "oauth2/v2.0/token":
		s.serveToken(w, r, tseg, 2)
		return
	case "oauth2/token":
		s.serveToken(w, r, tseg, 1)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	switch rest {
	case "v2.0/.well-known/openid-configuration":
		s.serveDiscovery(w, r, tseg, 2)
	case ".well-known/openid-configuration":
		s.serveDiscovery(w, r, tseg, 1)
	case "discovery/v2.0/keys", "discovery/keys":
		s.serveJWKS(w, r)
	case "discovery/instance", "discovery/instance/":
		s.serveInstanceDiscovery(w, r)
	default:
		http.NotFound(w, r)
	}
}

// PublicKeys returns the published JWKS (current key first).
func (s *Server) PublicKeys() jose.JSONWebKeySet { return s.keys.Public() }
