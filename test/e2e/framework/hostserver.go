package framework

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// HostServer is an HTTP server on the node, reachable from pods at the bridge or
// node address, that records every request it answers.
type HostServer struct {
	// Port is the port it listens on (all of this machine's addresses).
	Port int

	mu       sync.Mutex    // protects requests and changed
	requests []HostRequest // in arrival order
	changed  chan struct{} // closed and replaced on every request
}

// HostRequest is what HostServer saw of one request.
type HostRequest struct {
	// SourceIP is the client's address as the node saw it (a pod's IP when not NATed).
	SourceIP string
	Method   string
	Path     string
	Header   http.Header
}

// StartHostServer starts a HostServer on 0.0.0.0 (every address of this machine:
// the bridge address exists only on the node) and a free port; it stops when t
// ends. Each request is answered 200 with "hello <source IP> <path>".
func StartHostServer(t testing.TB) *HostServer {
	t.Helper()
	return startHostServer(t, "0.0.0.0:0")
}

// StandInIMDSDevice is the node interface that carries 169.254.169.254 while
// a StartStandInIMDS server runs (hack/cluster.sh down removes a leftover one).
const StandInIMDSDevice = "podidimds0"

// StartStandInIMDS starts a HostServer at 169.254.169.254:80 on the node — the
// address on StandInIMDSDevice, removed when t ends —, standing in for a
// cloud's real instance-metadata service: what pod traffic to
// 169.254.169.254 would reach if podid's interception failed open.
func StartStandInIMDS(t testing.TB) *HostServer {
	t.Helper()
	for _, args := range [][]string{
		{"link", "add", StandInIMDSDevice, "type", "bridge"},
		{"addr", "add", "169.254.169.254/32", "dev", StandInIMDSDevice},
		{"link", "set", StandInIMDSDevice, "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			_ = exec.Command("ip", "link", "del", StandInIMDSDevice).Run()
			t.Fatalf("stand-in metadata service: ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "link", "del", StandInIMDSDevice).CombinedOutput(); err != nil {
			t.Errorf("remove %s: %v: %s", StandInIMDSDevice, err, out)
		}
	})
	return startHostServer(t, "169.254.169.254:80")
}

func startHostServer(t testing.TB, addr string) *HostServer {
	t.Helper()
	l, err := net.Listen("tcp4", addr)
	if err != nil {
		t.Fatalf("host server: %v", err)
	}
	s := &HostServer{Port: l.Addr().(*net.TCPAddr).Port, changed: make(chan struct{})}
	srv := &http.Server{Handler: s, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("host server: %v", err)
		}
	}()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-done
	})
	return s
}

// URL is the server's URL at host (an IP of this machine) with path.
func (s *HostServer) URL(host, path string) string {
	return "http://" + net.JoinHostPort(host, strconv.Itoa(s.Port)) + path
}

func (s *HostServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ip, _, _ := net.SplitHostPort(r.RemoteAddr)
	s.mu.Lock()
	s.requests = append(s.requests, HostRequest{SourceIP: ip, Method: r.Method, Path: r.URL.Path, Header: r.Header.Clone()})
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
	fmt.Fprintf(w, "hello %s %s\n", ip, r.URL.Path)
}

// Requests returns the requests seen so far.
func (s *HostServer) Requests() []HostRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]HostRequest(nil), s.requests...)
}

// WaitForRequest waits (until ctx ends) for a request to path and returns it.
func (s *HostServer) WaitForRequest(ctx context.Context, path string) (HostRequest, error) {
	return s.WaitFor(ctx, "a request for "+path, func(r HostRequest) bool { return r.Path == path })
}

// WaitFor waits (until ctx ends) for a request match accepts and returns
// it; what names the awaited request in the error.
func (s *HostServer) WaitFor(ctx context.Context, what string, match func(HostRequest) bool) (HostRequest, error) {
	for {
		s.mu.Lock()
		for _, r := range s.requests {
			if match(r) {
				s.mu.Unlock()
				return r, nil
			}
		}
		ch := s.changed
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return HostRequest{}, fmt.Errorf("no %s on the host server: %w", what, ctx.Err())
		}
	}
}
