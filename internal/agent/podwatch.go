package agent

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	toolscache "k8s.io/client-go/tools/cache"
)

// Backoff of the pod watch after a failure: short, because every new pod
// waits for it (client-go's default grows to 30 s; after an API-server
// outage pods created right after its return waited that long).
const (
	podWatchMinBackoff = 200 * time.Millisecond
	podWatchMaxBackoff = 2 * time.Second
	// A list-and-watch that ran this long was healthy: the backoff restarts.
	podWatchHealthy = 10 * time.Second
)

// podWatch runs the pod reflector with its own short backoff, logs each
// failure, and says when the index is complete again (Resumed, called by
// the index after a relist).
type podWatch struct {
	reflector *toolscache.Reflector
	log       *slog.Logger
	failing   atomic.Bool // a list-and-watch failed and no relist has completed since
}

// Failing reports whether the pod watch is down (the index may be stale).
func (w *podWatch) Failing() bool { return w.failing.Load() }

// Resumed is the index's relist hook.
func (w *podWatch) Resumed(pods int) {
	if w.failing.Swap(false) {
		w.log.Info("pod watch resumed: the index holds a fresh list of the node's pods", "pods", pods)
	}
}

// Run lists and watches until ctx ends.
func (w *podWatch) Run(ctx context.Context) error {
	backoff := podWatchMinBackoff
	for {
		start := time.Now()
		err := w.reflector.ListAndWatchWithContext(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if time.Since(start) >= podWatchHealthy {
			backoff = podWatchMinBackoff
		}
		if err != nil {
			w.failing.Store(true)
			w.log.Warn("pod watch failed; retrying (cached decisions and tokens keep being served to guarded pods)", "error", err.Error(), "retry_in", backoff.String())
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		backoff = min(2*backoff, podWatchMaxBackoff)
	}
}
