package agent

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	crcache "sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	podidv1 "github.com/podid/podid/api/v1"
	"github.com/podid/podid/internal/binding"
	"github.com/podid/podid/internal/intercept"
	"github.com/podid/podid/internal/scheme"
	"github.com/podid/podid/internal/token"
)

// loopbackResolver resolves every caller as if it came from podIP, through
// the real index (benchmarks run over loopback, which the real resolver
// rightly refuses as a host process).
type loopbackResolver struct {
	index *PodIndex
	podIP netip.Addr
}

func (r loopbackResolver) Resolve(_ context.Context, _ netip.Addr) (*corev1.Pod, error) {
	return r.index.lookup(r.podIP)
}

// benchLoad drives url with c keep-alive clients for d and returns the
// request rate and latency percentiles.
func benchLoad(t testing.TB, url string, c int, d time.Duration) (rps float64, p50, p99 time.Duration, errs int64) {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex // protects all
		all   []time.Duration
		nerr  atomic.Int64
		start = time.Now()
	)
	for range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1, DisableCompression: true}}
			defer cl.CloseIdleConnections()
			lat := make([]time.Duration, 0, 1<<16)
			req, _ := http.NewRequest(http.MethodGet, url, nil)
			req.Header.Set("Metadata", "true")
			for time.Since(start) < d {
				t0 := time.Now()
				res, err := cl.Do(req)
				if err != nil {
					nerr.Add(1)
					continue
				}
				_, _ = io.Copy(io.Discard, res.Body)
				res.Body.Close()
				if res.StatusCode != 200 {
					nerr.Add(1)
				}
				lat = append(lat, time.Since(t0))
			}
			mu.Lock()
			all = append(all, lat...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	el := time.Since(start)
	slices.Sort(all)
	if len(all) == 0 {
		return 0, 0, 0, nerr.Load()
	}
	return float64(len(all)) / el.Seconds(), all[len(all)/2], all[len(all)*99/100], nerr.Load()
}

// TestLoadCachedTokens measures cached-token serving over loopback HTTP
// with keep-alive at c=64: the full handler (parsing, index lookup, the v1
// decision — remembered, as in the agent — on an informer cache of the
// envtest API server holding 1,000 identities and bindings in the pod's
// namespace, cache hit, post-check, JSON), against a constant-answer
// baseline. PODID_BENCH=1 enables it.
//
//	PODID_BENCH=1 go test -run TestLoadCachedTokens -v ./internal/agent/
func TestLoadCachedTokens(t *testing.T) {
	if os.Getenv("PODID_BENCH") != "1" {
		t.Skip("set PODID_BENCH=1 to run the load benchmark")
	}
	e := env.Need(t)
	ctx := t.Context()
	ns := e.Namespace(t)
	// The real v1 decision on a real informer cache: 1,000 identities and
	// bindings in the pod's namespace, one of them selecting the pod.
	const ids = 1000
	parallel(t, 32, ids, func(i int) error {
		id := &podidv1.AzureIdentity{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("id-%d", i), Namespace: ns},
			Spec: podidv1.AzureIdentitySpec{ClientID: fmt.Sprintf("00000000-0000-0000-0000-%012d", i)}}
		if err := e.Client.Create(ctx, id); err != nil {
			return err
		}
		return e.Client.Create(ctx, &podidv1.AzureIdentityBinding{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("b-%d", i), Namespace: ns},
			Spec: podidv1.AzureIdentityBindingSpec{AzureIdentity: id.Name, Selector: fmt.Sprintf("sel-%d", i)}})
	})
	informers, err := crcache.New(e.Config, crcache.Options{Scheme: scheme.New(), DefaultTransform: crcache.TransformStripManagedFields()})
	if err != nil {
		t.Fatal(err)
	}
	if err := binding.IndexBindings(ctx, informers); err != nil {
		t.Fatal(err)
	}
	// Wired as agent.Run wires it: decisions remembered until an informer
	// event.
	decider := &MemoDecider{Decider: &BindingDecider{Reader: informers, DefaultTenantID: "t"}}
	for _, obj := range []client.Object{&podidv1.AzureIdentity{}, &podidv1.AzureIdentityBinding{}, &podidv1.AzurePodIdentityException{}} {
		inf, err := informers.GetInformer(ctx, obj)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
			AddFunc: func(any) { decider.Invalidate() }, UpdateFunc: func(any, any) { decider.Invalidate() }, DeleteFunc: func(any) { decider.Invalidate() },
		}); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan error, 1)
	cctx, stop := context.WithCancel(ctx)
	go func() { done <- informers.Start(cctx) }()
	t.Cleanup(func() { stop(); <-done })
	if !informers.WaitForCacheSync(ctx) {
		t.Fatal("informer caches did not sync")
	}
	var bl podidv1.AzureIdentityBindingList
	if err := informers.List(ctx, &bl, client.InNamespace(ns)); err != nil || len(bl.Items) != ids {
		t.Fatalf("cache holds %d bindings (%v), want %d", len(bl.Items), err, ids)
	}

	index := NewPodIndex()
	for i := range 10000 {
		ip := netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)})
		p := testPod(fmt.Sprintf("p%d", i), ip.String(), types.UID("uid-"+ip.String()))
		p.Namespace, p.ResourceVersion = ns, "1"
		p.Labels[podidv1.PodLabelKey] = fmt.Sprintf("sel-%d", i%ids)
		index.Upsert(p)
	}
	podIP := netip.MustParseAddr("10.1.3.7") // p775: sel-775
	now := time.Now()
	cache := token.NewCache(token.CacheConfig{Source: token.SourceFunc(func(_ context.Context, r token.Request) (token.Token, error) {
		return token.Token{AccessToken: "eyJ0eXAiOiJKV1QifQ.eyJhdWQiOiJ4In0.c2ln", ExpiresOn: now.Add(time.Hour), IssuedAt: now, ClientID: r.Identity.ClientID}, nil
	})})
	metrics := newMetrics(nil)
	h := NewHandler(HandlerConfig{Resolver: loopbackResolver{index, podIP}, Decider: decider, Tokens: cache, Metrics: metrics})
	url := serveLoopback(t, h)
	// Baseline: a handler that only writes the bytes of one real answer,
	// with the same server and clients. At c=64 on 2 cores the latency is
	// mostly queueing (Little's law: mean = 64 / rate), so the baseline's
	// percentiles are the floor any handler can reach on this machine.
	rec := httptest.NewRecorder()
	r := httptest.NewRequest(http.MethodGet, tokenURL, nil)
	r.RequestURI, r.RemoteAddr = tokenURL, podIP.String()+":40000"
	r.Header.Set("Metadata", "true")
	h.ServeHTTP(rec, r)
	if rec.Code != 200 {
		t.Fatalf("handler answered %d: %s", rec.Code, rec.Body)
	}
	answer := rec.Body.Bytes()
	baseURL := serveLoopback(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(answer)
	}))
	benchLoad(t, url, 64, time.Second) // warm up
	benchLoad(t, baseURL, 64, time.Second)
	for round := range 2 {
		brps, bp50, bp99, _ := benchLoad(t, baseURL, 64, 5*time.Second)
		rps, p50, p99, errs := benchLoad(t, url, 64, 5*time.Second)
		t.Logf("round %d, c=64, loopback keep-alive: cached token %.0f req/s, p50 %s, p99 %s | constant-answer baseline %.0f req/s, p50 %s, p99 %s | rate %.0f%% of baseline, p99 %.2fx baseline",
			round+1, rps, p50, p99, brps, bp50, bp99, 100*rps/brps, float64(p99)/float64(bp99))
		if errs > 0 {
			t.Fatalf("%d errors", errs)
		}
	}
}

// serveLoopback serves h on a loopback port until the test ends and
// returns the token URL there.
func serveLoopback(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return "http://" + ln.Addr().String() + tokenURL
}

// BenchmarkHandlerCachedToken is the server-side cost of one cached-token
// request without the network; "guarded" adds the check that the node's
// guard vouches for the caller (a real intercept.Guard holding 110 pods,
// its rules applied through a no-op command runner); "interleaved" gives
// their ratio from one run on whatever load the machine has.
func BenchmarkHandlerCachedToken(b *testing.B) {
	index := NewPodIndex()
	podIP := netip.MustParseAddr("10.1.3.7")
	index.Upsert(testPod("p", podIP.String(), "uid-p"))
	now := time.Now()
	cache := token.NewCache(token.CacheConfig{Source: token.SourceFunc(func(context.Context, token.Request) (token.Token, error) {
		return token.Token{AccessToken: "x.y.z", ExpiresOn: now.Add(time.Hour), IssuedAt: now, ClientID: "cid"}, nil
	})})
	sbs := []intercept.Sandbox{{ContainerID: "c", PodUID: "uid-p", PodNamespace: "ns", PodName: "p", HostIf: "vethp", Bridge: "br",
		MAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, IPs: []netip.Addr{podIP}}}
	for i := range 109 {
		sbs = append(sbs, intercept.Sandbox{ContainerID: fmt.Sprint("c", i), PodUID: fmt.Sprint("uid-", i), PodNamespace: "ns", PodName: fmt.Sprint("p", i),
			HostIf: fmt.Sprint("veth", i), Bridge: "br", MAC: net.HardwareAddr{2, 0, 0, 0, 1, byte(i)}, IPs: []netip.Addr{netip.AddrFrom4([4]byte{10, 1, 4, byte(i)})}})
	}
	links := map[string]bool{}
	for _, sb := range sbs {
		links[sb.HostIf] = true
	}
	guard, err := intercept.NewGuard(intercept.GuardConfig{
		Exec:  func(context.Context, []byte, string, ...string) ([]byte, error) { return nil, nil },
		Links: func() (map[string]bool, error) { return links, nil },
	})
	if err != nil {
		b.Fatal(err)
	}
	if err := guard.Sync(b.Context(), sbs, true); err != nil {
		b.Fatal(err)
	}
	handler := func(g Guard) http.Handler {
		return NewHandler(HandlerConfig{Resolver: &IndexResolver{Index: index, NodeName: "node1", Guard: g}, Decider: staticDecider{"uid-p": {{ClientID: "cid"}}}, Tokens: cache})
	}
	serve := func(b *testing.B, h http.Handler) {
		r := httptest.NewRequest(http.MethodGet, tokenURL, nil)
		r.RequestURI = tokenURL
		r.RemoteAddr = "10.1.3.7:40000"
		r.Header.Set("Metadata", "true")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != 200 {
			b.Fatal(w.Code, w.Body.String())
		}
	}
	for _, bc := range []struct {
		name  string
		guard Guard
	}{{"unguarded", nil}, {"guarded", guard}} {
		b.Run(bc.name, func(b *testing.B) {
			h := handler(bc.guard)
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					serve(b, h)
				}
			})
		})
	}
	// The ratio in one run: each iteration serves one request without and
	// one with the guard (in alternating order), timed apart, so a busy
	// machine slows both alike.
	b.Run("interleaved", func(b *testing.B) {
		hs := [2]http.Handler{handler(nil), handler(guard)}
		var spent [2]time.Duration
		for i := 0; b.Loop(); i++ {
			for k := range 2 {
				j := (i + k) % 2
				t0 := time.Now()
				serve(b, hs[j])
				spent[j] += time.Since(t0)
			}
		}
		n := float64(b.N)
		b.ReportMetric(float64(spent[0].Nanoseconds())/n, "unguarded-ns/req")
		b.ReportMetric(float64(spent[1].Nanoseconds())/n, "guarded-ns/req")
		b.ReportMetric(float64(spent[1])/float64(spent[0]), "guarded/unguarded")
	})
}
