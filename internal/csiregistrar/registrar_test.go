package csiregistrar

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
)

// kubelet plays the kubelet's plugin watcher: it dials the registration
// socket with the kubelet's own API and asks what the kubelet asks.
func kubelet(t *testing.T, sock string) registerapi.RegistrationClient {
	t.Helper()
	cc, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return registerapi.NewRegistrationClient(cc)
}

func waitSocket(t *testing.T, path string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("unix", path); err == nil {
			_ = c.Close()
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no socket at %s", path)
}

func TestRegistration(t *testing.T) {
	dir := t.TempDir()
	driverSock := filepath.Join(dir, "csi.sock")
	r, err := New(Config{DriverName: "secrets-store.csi.k8s.io", Endpoint: "/var/lib/kubelet/plugins/csi-secrets-store/csi.sock",
		RegistrationDir: dir, WaitFor: driverSock})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()

	// Not before the driver's socket exists: the kubelet would dial it at once.
	time.Sleep(700 * time.Millisecond) // absence can only be shown over more than one poll period
	if _, err := os.Stat(r.SocketPath()); err == nil {
		t.Fatal("registration socket created before the driver's socket")
	}
	ln, err := net.Listen("unix", driverSock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	waitSocket(t, r.SocketPath())
	if filepath.Base(r.SocketPath()) != "secrets-store.csi.k8s.io-reg.sock" {
		t.Errorf("socket %s", r.SocketPath())
	}

	kc := kubelet(t, r.SocketPath())
	info, err := kc.GetInfo(ctx, &registerapi.InfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if info.Type != registerapi.CSIPlugin || info.Name != "secrets-store.csi.k8s.io" ||
		info.Endpoint != "/var/lib/kubelet/plugins/csi-secrets-store/csi.sock" || len(info.SupportedVersions) == 0 {
		t.Errorf("info %+v", info)
	}
	if r.Registered() == nil {
		t.Error("registered before the kubelet said so")
	}
	if _, err := kc.NotifyRegistrationStatus(ctx, &registerapi.RegistrationStatus{PluginRegistered: true}); err != nil {
		t.Fatal(err)
	}
	if err := r.Registered(); err != nil {
		t.Error(err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(r.SocketPath()); !os.IsNotExist(err) {
		t.Errorf("socket left behind: %v", err)
	}
}

func TestRefusedRegistrationStops(t *testing.T) {
	dir := t.TempDir()
	r, err := New(Config{DriverName: "d.example", Endpoint: "/x/csi.sock", RegistrationDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- r.Run(t.Context()) }()
	waitSocket(t, r.SocketPath())
	kc := kubelet(t, r.SocketPath())
	if _, err := kc.NotifyRegistrationStatus(t.Context(), &registerapi.RegistrationStatus{Error: "version 9 not supported"}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "version 9 not supported") {
			t.Fatalf("Run returned %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a refused registration did not stop the registrar")
	}
}

func TestStaleFileThatIsNotASocket(t *testing.T) {
	dir := t.TempDir()
	r, _ := New(Config{DriverName: "d.example", Endpoint: "/x/csi.sock", RegistrationDir: dir})
	if err := os.WriteFile(r.SocketPath(), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := r.Run(t.Context()); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("Run: %v", err)
	}
}
