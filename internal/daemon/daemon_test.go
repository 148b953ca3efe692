package daemon

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec.Code, rec.Body.String()
}

func TestEndpointsByAddress(t *testing.T) {
	reg := NewRegistry()
	notReady := func() error { return errors.New("caches not synced") }
	tests := []struct {
		name  string
		cfg   Config
		addrs int
		// path -> want status at address "a"
		at map[string]int
	}{
		{"health and metrics share a listener", Config{HealthAddr: "a", MetricsAddr: "a", Registry: reg},
			1, map[string]int{"/healthz": 200, "/readyz": 200, "/metrics": 200, "/debug/pprof/": 404}},
		{"separate listeners", Config{HealthAddr: "a", MetricsAddr: "b", DebugAddr: "c", Registry: reg},
			3, map[string]int{"/healthz": 200, "/metrics": 404, "/debug/pprof/": 404}},
		{"not ready", Config{HealthAddr: "a", Ready: notReady}, 1, map[string]int{"/healthz": 200, "/readyz": 503}},
		{"debug only", Config{DebugAddr: "a"}, 1, map[string]int{"/debug/pprof/": 200, "/healthz": 404, "/metrics": 404}},
		{"all disabled", Config{}, 0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := tt.cfg.muxes()
			if len(m) != tt.addrs {
				t.Fatalf("%d listeners, want %d", len(m), tt.addrs)
			}
			for path, want := range tt.at {
				if code, body := get(t, m["a"], path); code != want {
					t.Errorf("GET %s = %d %q, want %d", path, code, body, want)
				}
			}
		})
	}
}

func TestReadyzSaysWhy(t *testing.T) {
	mux := http.NewServeMux()
	HandleHealth(mux, func() error { return errors.New("serving certificate pending") })
	code, body := get(t, mux, "/readyz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "serving certificate pending") {
		t.Fatalf("readyz = %d %q", code, body)
	}
}

func TestMetricsServesRegistry(t *testing.T) {
	reg := NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "podid_test_total", Help: "test"})
	if err := Register(reg, c); err != nil {
		t.Fatal(err)
	}
	c.Inc()
	_, body := get(t, Config{MetricsAddr: "a", Registry: reg}.muxes()["a"], "/metrics")
	for _, want := range []string{"podid_test_total 1", "go_goroutines", "process_start_time_seconds"} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

func TestRegisterReturnsConflicts(t *testing.T) {
	reg := prometheus.NewRegistry()
	a := prometheus.NewCounter(prometheus.CounterOpts{Name: "podid_dup_total", Help: "a"})
	b := prometheus.NewCounter(prometheus.CounterOpts{Name: "podid_dup_total", Help: "a"})
	if err := Register(reg, a); err != nil {
		t.Fatal(err)
	}
	err := Register(reg, b)
	var are prometheus.AlreadyRegisteredError
	if !errors.As(err, &are) {
		t.Fatalf("second registration: %v, want AlreadyRegisteredError", err)
	}
	if err := Register(nil, b); err != nil {
		t.Fatalf("nil registerer: %v", err)
	}
}

func TestParseLevel(t *testing.T) {
	for _, tt := range []struct {
		in string
		ok bool
	}{{"debug", true}, {"INFO", true}, {"warn", true}, {"error", true}, {"verbose", false}, {"", false}} {
		_, err := ParseLevel(tt.in)
		if (err == nil) != tt.ok {
			t.Errorf("ParseLevel(%q) err = %v", tt.in, err)
		}
	}
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// An in-flight request finishes after the context ends; the call returns nil.
func TestServeListenerDrainsThenStops(t *testing.T) {
	ln := listen(t)
	entered, release := make(chan struct{}), make(chan struct{})
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		close(entered)
		<-release
		_, _ = io.WriteString(w, "done")
	})}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- ServeListener(ctx, nil, "test", ln, srv) }()
	got := make(chan string, 1)
	go func() {
		res, err := http.Get("http://" + ln.Addr().String())
		if err != nil {
			got <- err.Error()
			return
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		got <- string(b)
	}()
	<-entered
	cancel()
	close(release)
	if body := <-got; body != "done" {
		t.Fatalf("in-flight request got %q", body)
	}
	if err := <-served; err != nil {
		t.Fatalf("ServeListener after cancel: %v", err)
	}
	if _, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		t.Fatal("listener still accepts after shutdown")
	}
}

// A connection that never finishes its request cannot hold the process
// past the grace period.
func TestServeListenerClosesStuckConnections(t *testing.T) {
	if testing.Short() {
		t.Skip("waits ShutdownGrace")
	}
	ln := listen(t)
	entered, release := make(chan struct{}), make(chan struct{})
	defer close(release)
	srv := &http.Server{Handler: http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		close(entered)
		<-release // never, while the server shuts down
	})}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- ServeListener(ctx, nil, "test", ln, srv) }()
	go func() {
		if res, err := http.Get("http://" + ln.Addr().String()); err == nil {
			res.Body.Close()
		}
	}()
	<-entered
	start := time.Now()
	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("ServeListener: %v", err)
		}
		if d := time.Since(start); d < ShutdownGrace-100*time.Millisecond {
			t.Fatalf("returned after %s, before the grace period", d)
		}
	case <-time.After(ShutdownGrace + 5*time.Second):
		t.Fatal("stuck connection kept the server alive")
	}
}

func TestRunStopsAtFirstFailure(t *testing.T) {
	boom := errors.New("informer failed")
	stopped := make(chan struct{})
	err := Run(context.Background(), Config{},
		func(ctx context.Context) error { <-ctx.Done(); close(stopped); return nil },
		func(context.Context) error { return boom },
	)
	if !errors.Is(err, boom) {
		t.Fatalf("Run = %v, want %v", err, boom)
	}
	select {
	case <-stopped:
	default:
		t.Fatal("Run returned before the other task stopped")
	}
}

func TestRunListenError(t *testing.T) {
	ln := listen(t) // holds the port
	defer ln.Close()
	err := Run(context.Background(), Config{HealthAddr: ln.Addr().String()})
	if err == nil || !strings.Contains(err.Error(), "health listener") {
		t.Fatalf("Run on a taken address = %v", err)
	}
}

func TestRunNeedsRegistryForMetrics(t *testing.T) {
	if err := Run(context.Background(), Config{MetricsAddr: "127.0.0.1:0"}); err == nil {
		t.Fatal("metrics address without registry accepted")
	}
}

func TestRunServesUntilCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	reg := NewRegistry()
	ln := listen(t)
	addr := ln.Addr().String()
	ln.Close() // freed for Run; nothing else in this test binds ports
	done := make(chan error, 1)
	go func() { done <- Run(ctx, Config{HealthAddr: addr, MetricsAddr: addr, Registry: reg}) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		res, err := http.Get("http://" + addr + "/metrics")
		if err == nil {
			res.Body.Close()
			if res.StatusCode != 200 {
				t.Fatalf("/metrics = %d", res.StatusCode)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("never served: %v", err)
		}
		select {
		case err := <-done:
			t.Fatalf("Run returned early: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run after cancel: %v", err)
	}
}
