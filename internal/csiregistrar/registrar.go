// Package csiregistrar registers a CSI driver with the kubelet through the
// kubelet's plugin-registration API (k8s.io/kubelet pluginregistration/v1),
// as the upstream node-driver-registrar does: it serves GetInfo and
// NotifyRegistrationStatus on <plugins_registry>/<driver>-reg.sock; the
// kubelet's plugin watcher finds the socket, asks GetInfo for the driver's
// name and its CSI endpoint on the node, calls the driver's NodeGetInfo
// there and answers NotifyRegistrationStatus.
//
// Limits: it registers a driver whose name is configured (it does not ask
// the driver's GetPluginInfo), and it serves no liveness endpoint for the
// driver. A rejected registration stops it with the kubelet's error, so the
// container restarts and registers again.
package csiregistrar

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"google.golang.org/grpc"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
)

// Config says which driver to register and where.
type Config struct {
	// DriverName is the CSI driver's name (the CSIDriver object's).
	DriverName string
	// Endpoint is the driver's CSI socket as the kubelet sees it, on the node.
	Endpoint string
	// RegistrationDir is the kubelet's plugins_registry directory, as this
	// process sees it.
	RegistrationDir string
	// WaitFor, when set, is the driver's socket as this process sees it:
	// registration waits until it exists (the kubelet dials it at once).
	WaitFor string
	Logger  *slog.Logger
}

// Registrar is the kubelet-facing registration server.
type Registrar struct {
	cfg Config
	log *slog.Logger

	mu         sync.Mutex // protects registered
	registered bool
	failed     chan error // the kubelet's rejection
}

// New assembles a Registrar.
func New(cfg Config) (*Registrar, error) {
	if cfg.DriverName == "" || cfg.Endpoint == "" || cfg.RegistrationDir == "" {
		return nil, errors.New("csiregistrar: driver name, endpoint and registration directory are required")
	}
	r := &Registrar{cfg: cfg, log: cfg.Logger, failed: make(chan error, 1)}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	return r, nil
}

// SocketPath is where the registration socket is created.
func (r *Registrar) SocketPath() string {
	return filepath.Join(r.cfg.RegistrationDir, r.cfg.DriverName+"-reg.sock")
}

// Registered reports whether the kubelet accepted the registration; it is
// the registrar's readiness.
func (r *Registrar) Registered() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.registered {
		return errors.New("the kubelet has not registered the driver yet")
	}
	return nil
}

// GetInfo implements RegistrationServer.
func (r *Registrar) GetInfo(context.Context, *registerapi.InfoRequest) (*registerapi.PluginInfo, error) {
	r.log.Info("kubelet asked for the plugin's info", "driver", r.cfg.DriverName, "endpoint", r.cfg.Endpoint)
	return &registerapi.PluginInfo{
		Type: registerapi.CSIPlugin, Name: r.cfg.DriverName, Endpoint: r.cfg.Endpoint,
		SupportedVersions: []string{"1.0.0"},
	}, nil
}

// NotifyRegistrationStatus implements RegistrationServer.
func (r *Registrar) NotifyRegistrationStatus(_ context.Context, s *registerapi.RegistrationStatus) (*registerapi.RegistrationStatusResponse, error) {
	if !s.PluginRegistered {
		r.log.Error("the kubelet refused the driver", "driver", r.cfg.DriverName, "error", s.Error)
		select {
		case r.failed <- fmt.Errorf("the kubelet refused driver %s: %s", r.cfg.DriverName, s.Error):
		default:
		}
		return &registerapi.RegistrationStatusResponse{}, nil
	}
	r.mu.Lock()
	r.registered = true
	r.mu.Unlock()
	r.log.Info("the kubelet registered the driver", "driver", r.cfg.DriverName)
	return &registerapi.RegistrationStatusResponse{}, nil
}

// Run waits for the driver's socket, serves the registration socket until
// ctx ends (or the kubelet refuses the driver), then removes it.
func (r *Registrar) Run(ctx context.Context) error {
	if r.cfg.WaitFor != "" {
		waitForSocket(ctx, r.cfg.WaitFor, r.log)
		if ctx.Err() != nil {
			return nil
		}
	}
	path := r.SocketPath()
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&fs.ModeSocket == 0 {
			return fmt.Errorf("%s exists and is not a socket", path)
		}
		if err := os.Remove(path); err != nil {
			return fmt.Errorf("remove stale registration socket: %w", err)
		}
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "unix", path)
	if err != nil {
		return fmt.Errorf("registration socket: %w", err)
	}
	g := grpc.NewServer()
	registerapi.RegisterRegistrationServer(g, r)
	errc := make(chan error, 1)
	go func() { errc <- g.Serve(ln) }()
	r.log.Info("registration socket listening", "path", path)
	var runErr error
	select {
	case err := <-errc:
		return fmt.Errorf("registration server: %w", err)
	case runErr = <-r.failed:
	case <-ctx.Done():
	}
	// The kubelet's NotifyRegistrationStatus call is answered before stopping.
	stop := time.AfterFunc(5*time.Second, g.Stop)
	g.GracefulStop()
	stop.Stop()
	<-errc
	// The kubelet deregisters the driver when the socket goes away.
	_ = os.Remove(path)
	return runErr
}

// waitForSocket polls for path, every 500 ms, until it is a socket or ctx ends.
func waitForSocket(ctx context.Context, path string, log *slog.Logger) {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	logged := false
	for {
		if fi, err := os.Stat(path); err == nil && fi.Mode()&fs.ModeSocket != 0 {
			return
		}
		if !logged {
			log.Info("waiting for the driver's socket", "path", path)
			logged = true
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
