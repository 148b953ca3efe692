package token

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

// fakeClock is a settable clock.
type fakeClock struct {
	mu  sync.Mutex // protects now
	now time.Time
}

func newClock() *fakeClock { return &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }
func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// countingSource returns tokens valid for an hour from the clock, or err.
type countingSource struct {
	clock *fakeClock
	calls atomic.Int64
	gate  chan struct{} // if set, each call waits for it (or ctx)
	mu    sync.Mutex    // protects err
	err   error
}

func (s *countingSource) setErr(err error) { s.mu.Lock(); s.err = err; s.mu.Unlock() }

func (s *countingSource) Token(ctx context.Context, r Request) (Token, error) {
	n := s.calls.Add(1)
	if s.gate != nil {
		select {
		case <-s.gate:
		case <-ctx.Done():
			return Token{}, ctx.Err()
		}
	}
	s.mu.Lock()
	err := s.err
	s.mu.Unlock()
	if err != nil {
		return Token{}, err
	}
	now := s.clock.Now()
	return Token{AccessToken: fmt.Sprintf("tok-%d", n), ExpiresOn: now.Add(time.Hour), IssuedAt: now, ClientID: r.Identity.ClientID}, nil
}

func req(pod string) Request {
	return Request{
		Identity: Identity{Kind: Federated, ClientID: "00000000-0000-0000-0000-000000000001", TenantID: "t"},
		Resource: "https://vault.azure.net",
		Pod:      Pod{Namespace: "ns", Name: pod, UID: types.UID("uid-" + pod), ServiceAccount: "sa"},
	}
}

func TestCacheSingleflightThousandColdRequests(t *testing.T) {
	clk := newClock()
	src := &countingSource{clock: clk, gate: make(chan struct{})}
	c := NewCache(CacheConfig{Source: src, Now: clk.Now})
	const n = 1000
	var wg sync.WaitGroup
	toks := make([]Token, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			toks[i], _, errs[i] = c.Get(t.Context(), req(fmt.Sprintf("p%d", i%10)))
		}()
	}
	// Let every goroutine join before the single upstream call completes.
	waitFor(t, func() bool {
		c.mu.RLock()
		defer c.mu.RUnlock()
		cl := c.calls[KeyOf(req("p0"))]
		return cl != nil && cl.waiters == n
	})
	close(src.gate)
	wg.Wait()
	if got := src.calls.Load(); got != 1 {
		t.Fatalf("upstream calls = %d, want 1", got)
	}
	for i := range n {
		if errs[i] != nil || toks[i].AccessToken != "tok-1" {
			t.Fatalf("request %d: %v %v", i, toks[i], errs[i])
		}
	}
	// All ten pods are tracked on the one entry.
	c.mu.RLock()
	pods := len(c.entries[KeyOf(req("p0"))].pods)
	c.mu.RUnlock()
	if pods != 10 {
		t.Fatalf("tracked pods = %d, want 10", pods)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
		tick := time.NewTimer(time.Millisecond)
		<-tick.C
	}
}

func TestCacheHitRefreshOutage(t *testing.T) {
	clk := newClock()
	src := &countingSource{clock: clk}
	c := NewCache(CacheConfig{Source: src, Now: clk.Now})
	ctx := t.Context()

	tok, cached, err := c.Get(ctx, req("a"))
	if err != nil || cached || tok.AccessToken != "tok-1" {
		t.Fatalf("cold: %v %v %v", tok, cached, err)
	}
	clk.Add(10 * time.Minute)
	tok, cached, err = c.Get(ctx, req("a"))
	if err != nil || !cached || tok.AccessToken != "tok-1" {
		t.Fatalf("hit: %v %v %v", tok, cached, err)
	}
	if src.calls.Load() != 1 {
		t.Fatalf("calls = %d", src.calls.Load())
	}

	// Past 2/3 of the lifetime a hit triggers one background refresh.
	clk.Add(31 * time.Minute)
	tok, cached, err = c.Get(ctx, req("a"))
	if err != nil || !cached || tok.AccessToken != "tok-1" {
		t.Fatalf("due hit: %v %v %v", tok, cached, err)
	}
	waitFor(t, func() bool { tk, _, _ := c.Get(ctx, req("a")); return tk.AccessToken == "tok-2" })

	// Provider outage: the cached token keeps being served until it expires.
	src.setErr(&Error{Reason: ReasonProviderUnavailable, Msg: "down"})
	clk.Add(45 * time.Minute) // tok-2 issued 41m in, refresh due at 81m; now 86m
	tok, _, err = c.Get(ctx, req("a"))
	if err != nil || tok.AccessToken != "tok-2" {
		t.Fatalf("outage, still valid: %v %v", tok, err)
	}
	waitFor(t, func() bool { return src.calls.Load() == 3 })
	// The failed refresh backs off: no new upstream call on the next hit.
	_, _, _ = c.Get(ctx, req("a"))
	if got := src.calls.Load(); got != 3 {
		t.Fatalf("calls during backoff = %d", got)
	}
	// After expiry (minus min validity) errors are explicit.
	clk.Add(14 * time.Minute) // 100m: tok-2 expires at 101m, within MinValidity
	_, _, err = c.Get(ctx, req("a"))
	if ReasonOf(err) != ReasonProviderUnavailable {
		t.Fatalf("after expiry: err = %v", err)
	}
	// Recovery.
	src.setErr(nil)
	tok, _, err = c.Get(ctx, req("a"))
	if err != nil || tok.AccessToken == "tok-2" {
		t.Fatalf("recovered: %v %v", tok, err)
	}
}

func TestCacheKeys(t *testing.T) {
	clk := newClock()
	src := &countingSource{clock: clk}
	c := NewCache(CacheConfig{Source: src, Now: clk.Now})
	a := req("a")
	b := req("b")
	b.Pod.ServiceAccount = "other" // another SA: its own assertion, its own token
	r2 := req("a")
	r2.Resource = "https://storage.azure.com"
	for _, r := range []Request{a, b, r2, req("c") /* same SA as a: shared */} {
		if _, _, err := c.Get(t.Context(), r); err != nil {
			t.Fatal(err)
		}
	}
	if got := src.calls.Load(); got != 3 {
		t.Fatalf("upstream calls = %d, want 3", got)
	}
	sec := req("a")
	sec.Identity.Kind = Secret
	sec.Identity.SecretRef = types.NamespacedName{Namespace: "ns", Name: "s"}
	sec2 := req("x")
	sec2.Pod.ServiceAccount = "whatever"
	sec2.Identity = sec.Identity
	if KeyOf(sec) != KeyOf(sec2) {
		t.Fatal("secret identities must not be keyed by service account")
	}
}

func TestCacheForgetPodAndBound(t *testing.T) {
	clk := newClock()
	src := &countingSource{clock: clk}
	c := NewCache(CacheConfig{Source: src, Now: clk.Now, MaxEntries: 3})
	ctx := t.Context()
	_, _, _ = c.Get(ctx, req("a"))
	_, _, _ = c.Get(ctx, req("b")) // same key as a
	c.ForgetPod("uid-a")
	if c.Len() != 1 {
		t.Fatal("entry evicted while pod b still uses it")
	}
	c.ForgetPod("uid-b")
	if c.Len() != 0 {
		t.Fatal("entry kept after its last pod left")
	}
	for i := range 10 {
		r := req("a")
		r.Resource = fmt.Sprintf("https://r%d", i)
		clk.Add(time.Second)
		if _, _, err := c.Get(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	if c.Len() != 3 {
		t.Fatalf("len = %d, want bound 3", c.Len())
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	for k := range c.entries {
		if k.Resource < "https://r7" {
			t.Fatalf("kept %s, want the three most recent", k.Resource)
		}
	}
	if len(c.byPod["uid-a"]) != 3 {
		t.Fatalf("pod index not pruned: %d", len(c.byPod["uid-a"]))
	}
}

func TestCacheFetchCancelledWhenAllWaitersLeave(t *testing.T) {
	clk := newClock()
	src := &countingSource{clock: clk, gate: make(chan struct{})}
	c := NewCache(CacheConfig{Source: src, Now: clk.Now})
	ctx1, cancel1 := context.WithCancel(t.Context())
	ctx2, cancel2 := context.WithCancel(t.Context())
	errs := make(chan error, 2)
	go func() { _, _, err := c.Get(ctx1, req("a")); errs <- err }()
	go func() { _, _, err := c.Get(ctx2, req("a")); errs <- err }()
	waitFor(t, func() bool {
		c.mu.RLock()
		defer c.mu.RUnlock()
		cl := c.calls[KeyOf(req("a"))]
		return cl != nil && cl.waiters == 2
	})
	c.mu.RLock()
	cl := c.calls[KeyOf(req("a"))]
	c.mu.RUnlock()
	cancel1()
	if err := <-errs; !errors.Is(err, context.Canceled) {
		t.Fatalf("first waiter: %v", err)
	}
	select {
	case <-cl.done:
		t.Fatal("fetch ended while a waiter remained")
	default:
	}
	cancel2()
	<-errs
	<-cl.done // the fetch's context ended with the last waiter
	if !errors.Is(cl.err, context.Canceled) {
		t.Fatalf("fetch err = %v", cl.err)
	}
	// A new request starts a fresh fetch.
	close(src.gate)
	if tok, _, err := c.Get(t.Context(), req("a")); err != nil || tok.AccessToken == "" {
		t.Fatalf("fresh fetch: %v %v", tok, err)
	}
}

func TestCacheRunStopsFetches(t *testing.T) {
	clk := newClock()
	src := &countingSource{clock: clk, gate: make(chan struct{})}
	c := NewCache(CacheConfig{Source: src, Now: clk.Now})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- c.Run(ctx) }()
	go func() { _, _, _ = c.Get(context.Background(), req("a")) }()
	waitFor(t, func() bool { return src.calls.Load() == 1 })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestTokenNeverPrinted(t *testing.T) {
	tok := Token{AccessToken: "secret-value", ClientID: "c"}
	for _, s := range []string{tok.String(), fmt.Sprint(tok), fmt.Sprintf("%v", tok), tok.LogValue().String()} {
		if contains(s, "secret-value") {
			t.Fatalf("token value printed: %s", s)
		}
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

func BenchmarkCacheHit(b *testing.B) {
	clk := newClock()
	c := NewCache(CacheConfig{Source: &countingSource{clock: clk}, Now: clk.Now})
	r := req("a")
	if _, _, err := c.Get(b.Context(), r); err != nil {
		b.Fatal(err)
	}
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, _, err := c.Get(context.Background(), r); err != nil {
				b.Fatal(err)
			}
		}
	})
}
