package webhook

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/podid/podid/internal/daemon"
	"github.com/podid/podid/internal/tokenguard"
)

// Path is where the webhook serves AdmissionReviews.
const Path = "/mutate"

// ServerConfig assembles a Server.
type ServerConfig struct {
	// Addr is the HTTPS listen address (e.g. ":9443").
	Addr string
	// Handler serves AdmissionReviews at Path.
	Handler http.Handler
	// TokenGuard, if set, serves AdmissionReviews at tokenguard.Path.
	TokenGuard http.Handler
	// GetCertificate returns the serving certificate.
	GetCertificate func(*tls.ClientHelloInfo) (*tls.Certificate, error)
	// MinTLSVersion defaults to TLS 1.2.
	MinTLSVersion uint16
	Logger        *slog.Logger // optional
}

// Server serves the webhook over HTTPS.
type Server struct {
	cfg ServerConfig
}

// NewServer assembles a Server; it does no I/O.
func NewServer(c ServerConfig) *Server {
	if c.MinTLSVersion == 0 {
		c.MinTLSVersion = tls.VersionTLS12
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return &Server{cfg: c}
}

// ListenAndServe listens on Addr and serves until ctx ends, then shuts
// down gracefully.
func (s *Server) ListenAndServe(ctx context.Context) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", s.cfg.Addr, err)
	}
	return s.Serve(ctx, ln)
}

// Serve serves on ln until ctx ends, then shuts down as every podid server
// does (daemon.ServeListener); it closes ln.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	mux := http.NewServeMux()
	mux.Handle(Path, s.cfg.Handler)
	if s.cfg.TokenGuard != nil {
		mux.Handle(tokenguard.Path, s.cfg.TokenGuard)
	}
	srv := &http.Server{
		Handler: mux,
		TLSConfig: &tls.Config{
			MinVersion:     s.cfg.MinTLSVersion,
			GetCertificate: s.cfg.GetCertificate,
			NextProtos:     []string{"h2", "http/1.1"},
		},
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.cfg.Logger.Handler(), slog.LevelDebug),
	}
	return daemon.ServeListener(ctx, s.cfg.Logger, "webhook", ln, srv)
}
