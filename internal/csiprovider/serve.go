package csiprovider

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/grpc"
	"sigs.k8s.io/secrets-store-csi-driver/provider/v1alpha1"
)

// SocketName is the socket the driver dials for `provider: azure`
// (<providers dir>/<provider>.sock).
const SocketName = "azure.sock"

// maxRecvMsgSize bounds a Mount request (the class's parameters and the
// pod's tokens); the driver sends far less.
const maxRecvMsgSize = 1 << 20

// shutdownGrace is how long mounts in flight may finish at shutdown.
const shutdownGrace = 5 * time.Second

// Serve answers the driver on the unix socket at path until ctx ends. A
// stale socket left by a previous run is replaced; anything else at path is
// an error. The socket is made 0600: only the driver (root) may mount.
func (s *Server) Serve(ctx context.Context, path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("provider socket directory: %w", err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&fs.ModeSocket == 0 {
			return fmt.Errorf("%s exists and is not a socket", path)
		}
		if err := os.Remove(path); err != nil {
			return fmt.Errorf("remove stale socket: %w", err)
		}
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "unix", path)
	if err != nil {
		return fmt.Errorf("provider socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		_ = ln.Close()
		return fmt.Errorf("provider socket: %w", err)
	}
	return s.ServeListener(ctx, ln)
}

// ServeListener serves the provider API on ln until ctx ends, then stops
// gracefully (in-flight mounts finish) and removes a unix socket's file.
func (s *Server) ServeListener(ctx context.Context, ln net.Listener) error {
	g := grpc.NewServer(grpc.MaxRecvMsgSize(maxRecvMsgSize))
	v1alpha1.RegisterCSIDriverProviderServer(g, s)
	errc := make(chan error, 1)
	go func() { errc <- g.Serve(ln) }()
	s.log.Info("provider listening", "address", ln.Addr().String())
	select {
	case err := <-errc:
		return fmt.Errorf("provider server: %w", err)
	case <-ctx.Done():
	}
	// Mounts in flight get a grace period; then the rest are cut off.
	t := time.AfterFunc(shutdownGrace, g.Stop)
	g.GracefulStop()
	t.Stop()
	if err := <-errc; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("provider server: %w", err)
	}
	return nil
}
