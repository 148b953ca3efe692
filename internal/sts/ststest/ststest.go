// Package ststest starts a real podid sts in-process for tests (HTTPS on
// 127.0.0.1, state in t.TempDir) and provides a tiny external OIDC issuer
// to sign federated assertions, plus a settable clock. Everything is torn
// down by t.Cleanup.
package ststest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/podid/podid/internal/sts"
	"github.com/podid/podid/internal/sts/keyvault"
	"github.com/podid/podid/internal/sts/store"
)

// Well-known ids of the default bootstrap.
const (
	TenantID       = "72f988bf-86f1-41af-91ab-2d7cd011db47"
	SubscriptionID = "0b1f6471-1bf0-4dda-aec3-cb9272f09590"
	AdminClientID  = "04b07795-8ddb-461a-bbee-02f9e1bf7b46"
	AdminSecret    = "podid-test-admin-secret-0123456789"
)

// Clock is a settable clock, safe for concurrent use.
type Clock struct {
	mu  sync.Mutex // protects now
	now time.Time
}

// NewClock starts at t.
func NewClock(t time.Time) *Clock { return &Clock{now: t} }

// Now returns the current fake time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// Options adjust the test server.
type Options struct {
	// Bootstrap replaces the default (tenant TenantID, admin app
	// AdminClientID/AdminSecret with role Owner on ARM). The default is
	// applied too when Bootstrap is set, unless NoDefaultBootstrap.
	Bootstrap          *sts.Bootstrap
	NoDefaultBootstrap bool
	// StatePath reuses a state file (restart tests); default in t.TempDir.
	StatePath string
	// Configure edits the config before the server is built.
	Configure func(*sts.Config)
}

// Server is a running sts.
type Server struct {
	*sts.Server
	URL      string // https://127.0.0.1:port — the authority host
	TenantID string
	CAPEM    []byte
	CAFile   string // PEM file, usable as SSL_CERT_FILE
	CAPool   *x509.CertPool
	Config   sts.Config

	stop func()
}

// DefaultBootstrap is the bootstrap every test server gets.
func DefaultBootstrap() *sts.Bootstrap {
	return &sts.Bootstrap{Tenants: []sts.BootstrapTenant{{
		ID:      TenantID,
		Domains: []string{"podid.test"},
		Applications: []sts.BootstrapApplication{{
			ClientID: AdminClientID, DisplayName: "podid-admin",
			Secrets: []sts.BootstrapSecret{{Value: AdminSecret}},
		}},
		RoleAssignments: []sts.BootstrapRoleAssignment{{Principal: AdminClientID, Resource: sts.ARMResource, Role: "Owner"}},
	}}}
}

// Start starts an sts and stops it at cleanup.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	dir := t.TempDir()
	cfg := sts.Config{
		StatePath: opts.StatePath,
		CAFile:    filepath.Join(dir, "ca.pem"),
		Hosts:     []string{"127.0.0.1", "localhost"},
		RSABits:   2048,
	}
	if cfg.StatePath == "" {
		cfg.StatePath = filepath.Join(dir, "state.db")
	}
	b := &sts.Bootstrap{}
	if !opts.NoDefaultBootstrap {
		b.Tenants = append(b.Tenants, DefaultBootstrap().Tenants...)
	}
	if opts.Bootstrap != nil {
		b.Tenants = append(b.Tenants, opts.Bootstrap.Tenants...)
	}
	cfg.Bootstrap = b
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	cfg.PublicURL = "https://" + ln.Addr().String()
	if opts.Configure != nil {
		opts.Configure(&cfg)
	}
	srv, err := sts.New(cfg)
	if err != nil {
		ln.Close()
		t.Fatalf("sts.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := srv.Open(ctx); err != nil {
		cancel()
		ln.Close()
		t.Fatalf("sts.Open: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(srv.CAPEM())
	s := &Server{
		Server:   srv,
		URL:      "https://" + ln.Addr().String(),
		TenantID: TenantID,
		CAPEM:    srv.CAPEM(),
		CAFile:   cfg.CAFile,
		CAPool:   pool,
		Config:   cfg,
	}
	var once sync.Once
	s.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("sts.Serve: %v", err)
			}
			srv.Close()
		})
	}
	t.Cleanup(s.stop)
	return s
}

// Stop stops the server now (e.g. before restarting on the same state).
func (s *Server) Stop() { s.stop() }

// Transport returns an HTTP transport that trusts the sts CA.
func (s *Server) Transport() *http.Transport {
	return &http.Transport{TLSClientConfig: &tls.Config{RootCAs: s.CAPool, MinVersion: tls.VersionTLS12}, ForceAttemptHTTP2: true}
}

// Client returns an HTTP client trusting the sts CA.
func (s *Server) Client() *http.Client {
	return &http.Client{Transport: s.Transport(), Timeout: 30 * time.Second}
}

// VaultClient returns an HTTP client for the sts's vaults: it trusts the
// sts CA and dials every {vault}.{VaultDNSSuffix}:443 at the sts's
// loopback listener, as cluster DNS does for pods. The SDK above it is
// unmodified and still sees https://{vault}.vault.azure.net/.
func (s *Server) VaultClient() *http.Client {
	tr := s.Transport()
	tr.DialContext = keyvault.Dialer(s.Server.VaultDNSSuffix(), strings.TrimPrefix(s.URL, "https://"))
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// JWKSURL is where the signing keys are published.
func (s *Server) JWKSURL() string { return s.URL + "/common/discovery/keys" }

// V1Issuer is the iss of v1 tokens of the default tenant.
func (s *Server) V1Issuer() string { return "https://sts.windows.net/" + s.TenantID + "/" }

// AddIdentity creates a user-assigned identity in the default tenant and
// subscription with one federated credential, returning its client id.
func (s *Server) AddIdentity(t testing.TB, name, issuer, subject string) string {
	t.Helper()
	ctx := context.Background()
	p, _, err := s.PutIdentity(ctx, sts.Identity{TenantID: s.TenantID, Subscription: SubscriptionID, ResourceGroup: "rg", Name: name, Location: "westeurope"})
	if err != nil {
		t.Fatalf("PutIdentity: %v", err)
	}
	if issuer != "" {
		if _, err := s.PutFederatedCredential(ctx, p.ClientID, store.FederatedCredential{Name: name + "-fic", Issuer: issuer, Subject: subject}); err != nil {
			t.Fatalf("PutFederatedCredential: %v", err)
		}
	}
	return p.ClientID
}

// WriteFile writes data to a new file in a temp dir and returns its path.
func WriteFile(t testing.TB, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
