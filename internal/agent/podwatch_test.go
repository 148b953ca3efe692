package agent

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	toolscache "k8s.io/client-go/tools/cache"
)

// lockedBuffer is a log sink safe for the watch's goroutine.
type lockedBuffer struct {
	mu sync.Mutex // protects b
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// An API server that refuses the list three times, then answers: the
// watch retries within its short backoff, logs each failure, reports
// itself failing until the relist, and logs that it resumed.
func TestPodWatchRetriesPromptlyAndSaysSo(t *testing.T) {
	var lists atomic.Int32
	lw := &toolscache.ListWatch{
		ListWithContextFunc: func(context.Context, metav1.ListOptions) (runtime.Object, error) {
			if lists.Add(1) <= 3 {
				return nil, errors.New("connection refused")
			}
			return &corev1.PodList{ListMeta: metav1.ListMeta{ResourceVersion: "1"}, Items: []corev1.Pod{*testPod("a", "10.1.0.5", "uid-a")}}, nil
		},
		WatchFuncWithContext: func(context.Context, metav1.ListOptions) (watch.Interface, error) {
			return watch.NewFake(), nil
		},
	}
	index := NewPodIndex()
	var logs lockedBuffer
	w := &podWatch{reflector: toolscache.NewReflectorWithOptions(lw, &corev1.Pod{}, index.Store(), toolscache.ReflectorOptions{Name: "test"}),
		log: slog.New(slog.NewTextHandler(&logs, nil))}
	var failingSeen atomic.Bool
	index.OnRelist = func(n int) {
		failingSeen.Store(w.Failing())
		w.Resumed(n)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- w.Run(ctx) }()
	defer func() { cancel(); <-done }()
	select {
	case <-index.Synced():
	case <-time.After(10 * time.Second):
		t.Fatalf("index not synced after 10s; logs:\n%s", logs.String())
	}
	took := time.Since(start)
	// 3 failures: backoffs 200+400+800 ms; client-go's default would be 800+1600+3200.
	if took > 3*time.Second {
		t.Errorf("resumed after %s, want within the short backoff (~1.4s)", took)
	}
	if !failingSeen.Load() || w.Failing() {
		t.Errorf("failing before the relist %v, after %v; want true, false", failingSeen.Load(), w.Failing())
	}
	out := logs.String()
	if n := strings.Count(out, "pod watch failed"); n != 3 || !strings.Contains(out, "pod watch resumed") {
		t.Errorf("logs: %d failures, want 3, and a resume:\n%s", n, out)
	}
	if index.Len() != 1 {
		t.Errorf("index holds %d pods", index.Len())
	}
}
