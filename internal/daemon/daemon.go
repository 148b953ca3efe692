package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"
)

// ShutdownGrace is how long a server is given to finish in-flight requests
// after its context ends; connections still open then are closed.
const ShutdownGrace = 5 * time.Second

// Task is one long-running part of a component. It returns when ctx ends
// (nil) or when it fails.
type Task func(ctx context.Context) error

// Config says where the operational endpoints of a component listen.
type Config struct {
	// HealthAddr serves GET /healthz and GET /readyz; empty disables.
	HealthAddr string
	// MetricsAddr serves GET /metrics from Registry; empty disables. When it
	// equals HealthAddr, one listener serves all three paths.
	MetricsAddr string
	// DebugAddr serves net/http/pprof; empty disables. Keep it on loopback:
	// profiles show memory contents.
	DebugAddr string
	// Registry is what /metrics serves (required with MetricsAddr).
	Registry prometheus.Gatherer
	// Ready reports why the component cannot serve yet (nil: ready). nil
	// means always ready.
	Ready func() error
	// Logger is the component's logger (nil: discard).
	Logger *slog.Logger
}

// Run runs tasks and the configured endpoints until ctx ends or one of them
// fails; it then stops the others, waits for them and returns the first
// failure (nil when ctx ended).
func Run(ctx context.Context, c Config, tasks ...Task) error {
	log := c.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if c.MetricsAddr != "" && c.Registry == nil {
		return errors.New("daemon: a metrics address needs a registry")
	}
	g, gctx := errgroup.WithContext(ctx)
	for _, t := range tasks {
		g.Go(func() error { return t(gctx) })
	}
	for addr, mux := range c.muxes() {
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
			ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
		name := mux.name
		g.Go(func() error { return Serve(gctx, log, name, addr, srv) })
	}
	return g.Wait()
}

type namedMux struct {
	*http.ServeMux
	name string
}

// muxes groups the endpoints by listen address.
func (c Config) muxes() map[string]namedMux {
	out := map[string]namedMux{}
	at := func(addr, name string) *http.ServeMux {
		m, ok := out[addr]
		if !ok {
			m = namedMux{http.NewServeMux(), name}
		} else {
			m.name += "+" + name
		}
		out[addr] = m
		return m.ServeMux
	}
	if c.HealthAddr != "" {
		HandleHealth(at(c.HealthAddr, "health"), c.Ready)
	}
	if c.MetricsAddr != "" {
		at(c.MetricsAddr, "metrics").Handle("GET /metrics", promhttp.HandlerFor(c.Registry, promhttp.HandlerOpts{}))
	}
	if c.DebugAddr != "" {
		HandleDebug(at(c.DebugAddr, "debug"))
	}
	return out
}

// HandleHealth adds GET /healthz (the process answers) and GET /readyz
// (ready reports nil) to mux.
func HandleHealth(mux *http.ServeMux, ready func() error) {
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if ready != nil {
			if err := ready(); err != nil {
				http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
				return
			}
		}
		_, _ = w.Write([]byte("ok\n"))
	})
}

// HandleDebug adds the net/http/pprof endpoints under /debug/pprof/ to mux.
func HandleDebug(mux *http.ServeMux) {
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
}

// Serve listens on addr and serves srv until ctx ends (see ServeListener).
func Serve(ctx context.Context, log *slog.Logger, name, addr string, srv *http.Server) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("%s listener: %w", name, err)
	}
	return ServeListener(ctx, log, name, ln, srv)
}

// ServeListener serves srv on ln (over TLS when srv.TLSConfig is set, its
// certificates coming from the config) until ctx ends, and closes ln. It
// then shuts srv down: in-flight requests get ShutdownGrace to finish, and
// connections still open after that are closed. Request contexts are not
// tied to ctx (unless srv.BaseContext does so), so a request being answered
// at shutdown is completed, not cut off. It returns nil after a
// shutdown, or the error that stopped the server before ctx ended.
func ServeListener(ctx context.Context, log *slog.Logger, name string, ln net.Listener, srv *http.Server) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	errc := make(chan error, 1)
	go func() {
		if srv.TLSConfig != nil {
			errc <- srv.ServeTLS(ln, "", "")
		} else {
			errc <- srv.Serve(ln)
		}
	}()
	log.Info("serving", "server", name, "addr", ln.Addr().String())
	select {
	case err := <-errc:
		return fmt.Errorf("%s server: %w", name, err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ShutdownGrace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		// Slow or idle-before-first-request connections must not keep the
		// process alive.
		log.Warn("graceful shutdown incomplete; closing connections", "server", name, "err", err)
		_ = srv.Close()
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("%s server: %w", name, err)
	}
	return nil
}
