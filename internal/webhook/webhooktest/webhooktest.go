// Package webhooktest runs the real podid webhook in-process for integration
// tests, on the port a testenv API server's webhook configurations call.
package webhooktest

import (
	"context"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/podid/podid/internal/testenv"
	"github.com/podid/podid/internal/webhook"
)

// Start runs webhook.Run with cfg until the test ends, and fails the test if
// it returns an error or does not stop within 30 s of the cancel. Kube,
// ListenAddr and CertHosts default to e's API server and webhook port.
func Start(t testing.TB, e *testenv.Env, cfg webhook.Config) {
	t.Helper()
	o := e.Env.WebhookInstallOptions
	if cfg.Kube == nil {
		cfg.Kube = e.Config
	}
	if cfg.ListenAddr == "" {
		cfg.ListenAddr = net.JoinHostPort(o.LocalServingHost, strconv.Itoa(o.LocalServingPort))
	}
	if len(cfg.CertHosts) == 0 {
		cfg.CertHosts = []string{o.LocalServingHost, "localhost"}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- webhook.Run(ctx, cfg) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("webhook.Run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("webhook.Run did not return within 30s of cancel")
		}
	})
}
