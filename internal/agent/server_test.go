package agent

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"

	"github.com/podid/podid/internal/token"
	"github.com/podid/podid/internal/workloadidentity"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func testPod(name, ip string, uid types.UID) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns", UID: uid, Labels: map[string]string{"aadpodidbinding": "sel"}},
		Spec:       corev1.PodSpec{NodeName: "node1", ServiceAccountName: "sa"},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip},
	}
}

// staticDecider grants every pod the identities in its map (by pod UID).
type staticDecider map[types.UID][]token.Identity

func (d staticDecider) Identities(_ context.Context, p *corev1.Pod) ([]token.Identity, error) {
	ids := d[p.UID]
	if len(ids) == 0 {
		return nil, denied(DenyNoIdentity, "no identity is assigned to pod %s/%s", p.Namespace, p.Name)
	}
	return ids, nil
}

// identityTokens returns "token-for-<clientID>" and records requests.
type identityTokens struct {
	mu   sync.Mutex // protects reqs
	reqs []token.Request
	err  error
	hook func()
}

func (f *identityTokens) Get(_ context.Context, r token.Request) (token.Token, bool, error) {
	f.mu.Lock()
	f.reqs = append(f.reqs, r)
	f.mu.Unlock()
	if f.hook != nil {
		f.hook()
	}
	if f.err != nil {
		return token.Token{}, false, f.err
	}
	return token.Token{AccessToken: "token-for-" + r.Identity.ClientID, ExpiresOn: t0.Add(time.Hour), IssuedAt: t0, ClientID: r.Identity.ClientID}, false, nil
}

type fixture struct {
	index  *PodIndex
	tokens *identityTokens
	h      *Handler
	dec    staticDecider
}

func newFixture() *fixture {
	f := &fixture{index: NewPodIndex(), tokens: &identityTokens{}, dec: staticDecider{}}
	f.index.SetHostAddrs([]netip.Addr{netip.MustParseAddr("10.0.0.4")})
	f.h = NewHandler(HandlerConfig{
		Resolver: &IndexResolver{Index: f.index, NodeName: "node1"},
		Decider:  f.dec, Tokens: f.tokens, Now: func() time.Time { return t0.Add(time.Minute) },
	})
	return f
}

func (f *fixture) do(t *testing.T, from, target string, hdr map[string]string) (int, map[string]string, http.Header) {
	t.Helper()
	r := httptest.NewRequest(http.MethodGet, "http://169.254.169.254/", nil)
	r.RequestURI = target
	r.RemoteAddr = from + ":40000"
	r.Header = http.Header{}
	for k, v := range hdr {
		r.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	f.h.ServeHTTP(w, r)
	res := w.Result()
	b, _ := io.ReadAll(res.Body)
	if ct := res.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q, body %s", ct, b)
	}
	var m map[string]string
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("body is not a JSON object of strings: %s", b)
	}
	return res.StatusCode, m, res.Header
}

const tokenURL = "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fvault.azure.net"

var md = map[string]string{"Metadata": "true"}

func TestHandlerSuccessShape(t *testing.T) {
	f := newFixture()
	f.index.Upsert(testPod("a", "10.1.0.5", "uid-a"))
	f.dec["uid-a"] = []token.Identity{{ClientID: "cid-a", Kind: token.Federated}}
	for _, target := range []string{tokenURL, strings.Replace(tokenURL, "token?", "token/?", 1), strings.Replace(tokenURL, "/metadata", "/Metadata", 1)} {
		code, body, _ := f.do(t, "10.1.0.5", target, md)
		if code != 200 {
			t.Fatalf("%s: %d %v", target, code, body)
		}
		want := map[string]string{"access_token": "token-for-cid-a", "refresh_token": "", "expires_in": "3540",
			"expires_on": "1767229200", "not_before": "1767225600", "resource": "https://vault.azure.net", "token_type": "Bearer", "client_id": "cid-a"}
		for k, v := range want {
			if body[k] != v {
				t.Fatalf("%s = %q, want %q", k, body[k], v)
			}
		}
		if len(body) != len(want) {
			t.Fatalf("extra fields: %v", body)
		}
	}
	r := f.tokens.reqs[0]
	if r.Pod.UID != "uid-a" || r.Pod.ServiceAccount != "sa" || r.Resource != "https://vault.azure.net" {
		t.Fatalf("token request %+v", r)
	}
}

func TestHandlerDenials(t *testing.T) {
	f := newFixture()
	f.index.Upsert(testPod("a", "10.1.0.5", "uid-a"))
	f.dec["uid-a"] = []token.Identity{{ClientID: "cid-a"}, {ClientID: "cid-b"}}
	f.index.Upsert(testPod("none", "10.1.0.6", "uid-none"))
	hn := testPod("hostnet", "10.0.0.9", "uid-hn")
	hn.Spec.HostNetwork = true
	f.index.Upsert(hn)
	f.dec["uid-hn"] = []token.Identity{{ClientID: "cid-a"}}
	f.index.Upsert(testPod("dup1", "10.1.0.7", "uid-d1"))
	f.index.Upsert(testPod("dup2", "10.1.0.7", "uid-d2"))
	f.dec["uid-d1"] = []token.Identity{{ClientID: "cid-a"}}
	pending := testPod("pending", "10.1.0.8", "uid-p")
	pending.Status.Phase = corev1.PodPending
	f.index.Upsert(pending)

	for _, tt := range []struct {
		name, from, target string
		hdr                map[string]string
		status             int
		desc               string
	}{
		{"no metadata header (DefaultAzureCredential probe)", "10.1.0.5", "/metadata/identity/oauth2/token", nil, 400, "Required metadata header not specified"},
		{"xff", "10.1.0.5", tokenURL, map[string]string{"Metadata": "true", "X-Forwarded-For": "10.1.0.6"}, 400, "X-Forwarded-For"},
		{"duplicate", "10.1.0.5", tokenURL + "&resource=x", md, 400, "more than once"},
		{"path trick", "10.1.0.5", "/metadata/identity/oauth2/token%2F?api-version=2018-02-01&resource=r", md, 400, "Invalid request path"},
		{"instance", "10.1.0.5", "/metadata/instance/compute?api-version=2021-02-01", md, 403, "not served"},
		{"other path", "10.1.0.5", "/latest/meta-data/", md, 404, "Not found"},
		{"two identities need client_id", "10.1.0.5", tokenURL, md, 400, "Multiple user assigned identities"},
		{"wrong client_id", "10.1.0.5", tokenURL + "&client_id=cid-x", md, 404, "not assigned"},
		{"object_id", "10.1.0.5", tokenURL + "&object_id=o", md, 404, "object_id"},
		{"no binding", "10.1.0.6", tokenURL, md, 404, "no identity"},
		{"host process", "10.0.0.4", tokenURL, md, 403, "host processes"},
		{"loopback", "127.0.0.1", tokenURL, md, 403, "host processes"},
		{"hostNetwork pod", "10.0.0.9", tokenURL, md, 403, "hostNetwork"},
		{"not a pod", "10.1.0.99", tokenURL, md, 404, "not a known pod"},
		{"ambiguous", "10.1.0.7", tokenURL, md, 404, "refusing to guess"},
		{"pending", "10.1.0.8", tokenURL, md, 404, "not Running"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			n := len(f.tokens.reqs)
			code, body, _ := f.do(t, tt.from, tt.target, tt.hdr)
			if code != tt.status || !strings.Contains(body["error_description"], tt.desc) || body["error"] == "" {
				t.Fatalf("got %d %v, want %d containing %q", code, body, tt.status, tt.desc)
			}
			if len(f.tokens.reqs) != n {
				t.Fatal("a denied request reached the token source")
			}
		})
	}
	code, body, _ := f.do(t, "10.1.0.5", tokenURL+"&client_id=CID-B", md)
	if code != 200 || body["client_id"] != "cid-b" {
		t.Fatalf("client_id selection: %d %v", code, body)
	}
	// A default named by the pod's annotation.
	p := testPod("a", "10.1.0.5", "uid-a")
	p.Annotations = map[string]string{DefaultClientIDAnnot: "cid-b"}
	f.index.Upsert(p)
	if code, body, _ := f.do(t, "10.1.0.5", tokenURL, md); code != 200 || body["client_id"] != "cid-b" {
		t.Fatalf("default: %d %v", code, body)
	}
}

func TestHandlerTokenErrors(t *testing.T) {
	f := newFixture()
	f.index.Upsert(testPod("a", "10.1.0.5", "uid-a"))
	f.dec["uid-a"] = []token.Identity{{ClientID: "cid-a"}}
	for _, tt := range []struct {
		err    error
		status int
		retry  string
	}{
		{&token.Error{Reason: token.ReasonMissingFederatedCredential, Msg: "add one with issuer"}, 404, ""},
		{&token.Error{Reason: token.ReasonThrottled, Msg: "slow down", RetryAfter: 7 * time.Second}, 429, "7"},
		{&token.Error{Reason: token.ReasonProviderUnavailable, Msg: "down"}, 502, ""},
		{&token.Error{Reason: token.ReasonPodGone, Msg: "gone"}, 404, ""},
		{context.DeadlineExceeded, 504, ""},
		{errors.New("boom"), 500, ""},
	} {
		f.tokens.err = tt.err
		code, body, h := f.do(t, "10.1.0.5", tokenURL, md)
		if code != tt.status || h.Get("Retry-After") != tt.retry || body["error"] == "" {
			t.Fatalf("%v: got %d %v retry=%q", tt.err, code, body, h.Get("Retry-After"))
		}
		if strings.Contains(body["error_description"], "boom") {
			t.Fatal("internal error text leaked")
		}
	}
}

// fakePods is an API server stand-in for confirmations: the truth, as
// opposed to the (lagging) index.
type fakePods struct {
	mu    sync.Mutex // protects pods
	pods  map[string]*corev1.Pod
	calls atomic.Int64
}

func (f *fakePods) GetPod(_ context.Context, ns, name string) (*corev1.Pod, error) {
	f.calls.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	if p := f.pods[ns+"/"+name]; p != nil {
		return p, nil
	}
	return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "pods"}, name)
}

func (f *fakePods) set(p *corev1.Pod) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pods[p.Namespace+"/"+p.Name] = p
}

func (f *fakePods) del(p *corev1.Pod) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.pods, p.Namespace+"/"+p.Name)
}

// The IP-reuse race: pod A (identity A) dies and pod B (identity B) gets its
// IP before the agent's watch has seen either change. B must never receive
// A's token.
func TestIPReuseRaceNeverServesOldPodsToken(t *testing.T) {
	now := t0
	clock := func() time.Time { return now }
	index := NewPodIndex()
	api := &fakePods{pods: map[string]*corev1.Pod{}}
	res := &IndexResolver{Index: index, Pods: api, NodeName: "node1", ConfirmTTL: time.Second, Now: clock}
	tokens := &identityTokens{}
	dec := staticDecider{"uid-a": {{ClientID: "cid-a"}}, "uid-b": {{ClientID: "cid-b"}}}
	h := NewHandler(HandlerConfig{Resolver: res, Decider: dec, Tokens: tokens, Now: clock})
	f := &fixture{index: index, tokens: tokens, h: h, dec: dec}

	a := testPod("a", "10.1.0.5", "uid-a")
	index.Upsert(a)
	api.set(a)
	if code, body, _ := f.do(t, "10.1.0.5", tokenURL, md); code != 200 || body["access_token"] != "token-for-cid-a" {
		t.Fatalf("pod a: %d %v", code, body)
	}

	// A dies; B is created with the same IP. The index still shows A.
	api.del(a)
	b := testPod("b", "10.1.0.5", "uid-b")
	api.set(b)

	// Within the confirmation TTL the index is trusted; past it, the live
	// check finds A gone and denies. (ConfirmTTL bounds the window; 0
	// closes it at the cost of one GET per request.)
	now = now.Add(2 * time.Second)
	code, body, _ := f.do(t, "10.1.0.5", tokenURL, md)
	if code == 200 || body["access_token"] != "" {
		t.Fatalf("new pod got a token while the index lagged: %d %v", code, body)
	}
	if !strings.Contains(body["error_description"], "reusing the IP") {
		t.Fatalf("denial: %v", body)
	}

	// Same pod name recreated (StatefulSet): UID differs, still denied.
	a2 := testPod("a", "10.1.0.5", "uid-a2")
	api.set(a2)
	now = now.Add(2 * time.Second)
	if code, body, _ := f.do(t, "10.1.0.5", tokenURL, md); code == 200 || !strings.Contains(body["error_description"], "replaced") {
		t.Fatalf("recreated pod: %d %v", code, body)
	}
	api.del(a2)

	// The watch catches up: B is served its own identity.
	index.Delete(a.UID)
	index.Upsert(b)
	if code, body, _ := f.do(t, "10.1.0.5", tokenURL, md); code != 200 || body["access_token"] != "token-for-cid-b" {
		t.Fatalf("pod b after catch-up: %d %v", code, body)
	}

	// The IP changes hands while a token is being obtained: the post-check
	// (by UID) refuses to hand A's token to B.
	index.Delete(b.UID)
	index.Upsert(a)
	api.del(b)
	api.set(a)
	now = now.Add(2 * time.Second)
	tokens.hook = func() {
		index.Delete(a.UID)
		index.Upsert(b)
		api.del(a)
		api.set(b)
	}
	code, body, _ = f.do(t, "10.1.0.5", tokenURL, md)
	tokens.hook = nil
	if code == 200 || body["access_token"] != "" {
		t.Fatalf("token obtained for A handed to B: %d %v", code, body)
	}
	for _, r := range tokens.reqs {
		if r.Identity.ClientID == "cid-a" && r.Pod.UID != "uid-a" {
			t.Fatal("A's identity requested on behalf of another pod")
		}
	}
}

func TestResolverConfirmTTL(t *testing.T) {
	now := t0
	index := NewPodIndex()
	api := &fakePods{pods: map[string]*corev1.Pod{}}
	a := testPod("a", "10.1.0.5", "uid-a")
	index.Upsert(a)
	api.set(a)
	res := &IndexResolver{Index: index, Pods: api, NodeName: "node1", ConfirmTTL: time.Second, Now: func() time.Time { return now }}
	ip := netip.MustParseAddr("10.1.0.5")
	for range 100 {
		if _, e := res.Resolve(t.Context(), ip); e != nil {
			t.Fatal(e)
		}
	}
	if api.calls.Load() != 1 {
		t.Fatalf("GETs within TTL = %d, want 1", api.calls.Load())
	}
	now = now.Add(time.Second)
	_, _ = res.Resolve(t.Context(), ip)
	if api.calls.Load() != 2 {
		t.Fatalf("GETs after TTL = %d, want 2", api.calls.Load())
	}
	res.ConfirmTTL = 0
	_, _ = res.Resolve(t.Context(), ip)
	_, _ = res.Resolve(t.Context(), ip)
	if api.calls.Load() != 4 {
		t.Fatalf("GETs with TTL 0 = %d, want 4", api.calls.Load())
	}
}

func BenchmarkResolve(b *testing.B) {
	index := NewPodIndex()
	for i := range 10000 {
		ip := netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)})
		index.Upsert(testPod("p", ip.String(), types.UID(ip.String())))
	}
	res := &IndexResolver{Index: index, NodeName: "node1"}
	ip := netip.MustParseAddr("10.1.3.7")
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, e := res.Resolve(context.Background(), ip); e != nil {
				b.Fatal(e)
			}
		}
	})
}

// The index keeps compact records; what it hands out must carry every
// field a decision reads, and nothing it did not keep.
func TestPodIndexRecordRoundTrip(t *testing.T) {
	now := metav1.Now()
	p := testPod("a", "10.1.0.5", "uid-a")
	p.Labels = map[string]string{"aadpodidbinding": "sel", "app": "web", "noaad": "true"}
	p.Annotations = map[string]string{"big": strings.Repeat("x", 1000), DefaultClientIDAnnot: "cid-1", workloadidentity.UseIdentityBindingAnnotation: "true"}
	p.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "x"}}
	p.Spec.Containers = []corev1.Container{{Name: "c", Image: "i"}}
	p.Spec.ServiceAccountName = "sa"
	p.Status.PodIPs = []corev1.PodIP{{IP: "10.1.0.5"}, {IP: "fd00::5"}}
	del := p.DeepCopy()
	del.DeletionTimestamp = &now

	for _, tt := range []struct {
		name string
		in   *corev1.Pod
	}{{"running", p}, {"being deleted", del}} {
		t.Run(tt.name, func(t *testing.T) {
			got := newRecord(tt.in).pod()
			want := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: tt.in.Name, Namespace: tt.in.Namespace, UID: tt.in.UID, Labels: tt.in.Labels,
					Annotations: map[string]string{DefaultClientIDAnnot: "cid-1", workloadidentity.UseIdentityBindingAnnotation: "true"}, DeletionTimestamp: tt.in.DeletionTimestamp},
				Spec:   corev1.PodSpec{NodeName: tt.in.Spec.NodeName, ServiceAccountName: "sa"},
				Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.1.0.5", PodIPs: tt.in.Status.PodIPs},
			}
			if !equality.Semantic.DeepEqual(got, want) {
				t.Fatalf("materialised pod differs:\n got %+v\nwant %+v", got, want)
			}
		})
	}
}

// The reflector's store: a relist (Replace) drops the pods that vanished
// during a watch gap and reports each, and the pods that turned terminal;
// Delete accepts a tombstone.
func TestPodIndexStore(t *testing.T) {
	x := NewPodIndex()
	var gone []types.UID
	x.OnGone = func(uid types.UID) { gone = append(gone, uid) }
	s := x.Store()
	select {
	case <-x.Synced():
		t.Fatal("synced before the first list")
	default:
	}
	a, b, c := testPod("a", "10.1.0.5", "uid-a"), testPod("b", "10.1.0.6", "uid-b"), testPod("c", "10.1.0.7", "uid-c")
	if err := s.Replace([]any{a, b, c}, "1"); err != nil {
		t.Fatal(err)
	}
	<-x.Synced()
	if x.Len() != 3 || len(gone) != 0 {
		t.Fatalf("after first list: %d pods, gone %v", x.Len(), gone)
	}
	doneC := c.DeepCopy()
	doneC.Status.Phase = corev1.PodSucceeded
	reused := testPod("a2", "10.1.0.5", "uid-a2") // a's IP, a new pod
	if err := s.Replace([]any{b, doneC, reused}, "2"); err != nil {
		t.Fatal(err)
	}
	slices.Sort(gone)
	if want := []types.UID{"uid-a", "uid-c"}; !slices.Equal(gone, want) {
		t.Fatalf("gone after relist = %v, want %v", gone, want)
	}
	if p, err := x.lookup(netip.MustParseAddr("10.1.0.5")); err != nil || p.UID != "uid-a2" {
		t.Fatalf("10.1.0.5 resolves to %v (%v), want uid-a2", p, err)
	}
	if _, err := x.lookup(netip.MustParseAddr("10.1.0.7")); err == nil {
		t.Fatal("a finished pod's IP still resolves")
	}
	gone = nil
	if err := s.Delete(toolscache.DeletedFinalStateUnknown{Key: "ns/b", Obj: b}); err != nil {
		t.Fatal(err)
	}
	if err := s.Add("not a pod"); err == nil {
		t.Fatal("a non-pod object was accepted")
	}
	if !slices.Equal(gone, []types.UID{"uid-b"}) || x.Len() != 2 {
		t.Fatalf("after tombstone delete: gone %v, %d pods", gone, x.Len())
	}
}
