package agent

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/podid/podid/internal/intercept"
)

// tableGuard answers from two tables: what it holds now, and what a fresh
// read of the node's records would give.
type tableGuard struct {
	now, fresh map[netip.Addr]intercept.Sandbox
	freshReads int
}

func (g *tableGuard) Owner(ip netip.Addr) (intercept.Sandbox, bool) {
	sb, ok := g.now[ip]
	return sb, ok
}

func (g *tableGuard) Ensure(_ context.Context, ip netip.Addr, fresh bool) (intercept.Sandbox, bool) {
	if sb, ok := g.now[ip]; ok && !fresh {
		return sb, true
	}
	g.freshReads++
	g.now = g.fresh
	sb, ok := g.now[ip]
	return sb, ok
}

// The node's records, not the API server's view, decide whether an
// address is the pod's: unguarded or contradicting records are a denial.
func TestResolverRequiresTheNodesGuard(t *testing.T) {
	ip := netip.MustParseAddr("10.1.0.5")
	a := intercept.Sandbox{PodUID: "uid-a", PodNamespace: "ns", PodName: "a", IPs: []netip.Addr{ip}}
	b := intercept.Sandbox{PodUID: "uid-b", PodNamespace: "ns", PodName: "b", IPs: []netip.Addr{ip}}
	noUID := intercept.Sandbox{PodNamespace: "ns", PodName: "a", IPs: []netip.Addr{ip}}
	m := func(sb ...intercept.Sandbox) map[netip.Addr]intercept.Sandbox {
		out := map[netip.Addr]intercept.Sandbox{}
		for _, s := range sb {
			out[ip] = s
		}
		return out
	}
	for _, tt := range []struct {
		name       string
		now, fresh map[netip.Addr]intercept.Sandbox
		want       DenialReason // 0: served
		freshReads int
	}{
		{"guarded, same pod", m(a), m(a), 0, 0},
		{"guarded by name when the runtime passes no UID", m(noUID), m(noUID), 0, 0},
		{"not guarded yet, guarded after a fresh read", m(), m(a), 0, 1},
		{"never guarded", m(), m(), DenyUnguardedCaller, 1},
		{"records give the IP to another pod", m(b), m(b), DenyStaleCaller, 1},
		{"IP reused: the fresh read agrees", m(b), m(a), 0, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			index := NewPodIndex()
			index.Upsert(testPod("a", ip.String(), "uid-a"))
			g := &tableGuard{now: tt.now, fresh: tt.fresh}
			res := &IndexResolver{Index: index, NodeName: "node1", Guard: g}
			p, err := res.Resolve(t.Context(), ip)
			var d *Denial
			switch {
			case tt.want == 0 && (err != nil || p.UID != "uid-a"):
				t.Fatalf("got %v %v, want pod a", p, err)
			case tt.want != 0 && (!errors.As(err, &d) || d.Reason != tt.want):
				t.Fatalf("got %v %v, want denial %d", p, err, tt.want)
			}
			if g.freshReads != tt.freshReads {
				t.Fatalf("%d fresh reads, want %d", g.freshReads, tt.freshReads)
			}
		})
	}
}

// podsDown is an API server that cannot be reached.
type podsDown struct{ calls *int }

func (p podsDown) GetPod(context.Context, string, string) (*corev1.Pod, error) {
	if p.calls != nil {
		*p.calls++
	}
	return nil, errors.New("dial tcp 10.0.0.1:6443: connect: connection refused")
}

// Through an API-server outage the live confirmation cannot run: with the
// node's guard vouching for the address the pod is still served; without
// it the agent cannot tell and refuses (503).
func TestResolverThroughAPIServerOutage(t *testing.T) {
	ip := netip.MustParseAddr("10.1.0.5")
	a := intercept.Sandbox{PodUID: "uid-a", PodNamespace: "ns", PodName: "a", IPs: []netip.Addr{ip}}
	b := intercept.Sandbox{PodUID: "uid-b", PodNamespace: "ns", PodName: "b", IPs: []netip.Addr{ip}}
	for _, tt := range []struct {
		name  string
		guard Guard
		want  DenialReason
	}{
		{"guarded", &tableGuard{now: map[netip.Addr]intercept.Sandbox{ip: a}, fresh: map[netip.Addr]intercept.Sandbox{ip: a}}, 0},
		{"guarded for another pod", &tableGuard{now: map[netip.Addr]intercept.Sandbox{ip: b}, fresh: map[netip.Addr]intercept.Sandbox{ip: b}}, DenyStaleCaller},
		{"no guard", nil, DenyKubernetes},
	} {
		t.Run(tt.name, func(t *testing.T) {
			index := NewPodIndex()
			index.Upsert(testPod("a", ip.String(), "uid-a"))
			res := &IndexResolver{Index: index, NodeName: "node1", Pods: podsDown{}, Guard: tt.guard}
			p, err := res.Resolve(t.Context(), ip)
			var d *Denial
			switch {
			case tt.want == 0 && (err != nil || p.UID != "uid-a"):
				t.Fatalf("got %v %v, want pod a", p, err)
			case tt.want != 0 && (!errors.As(err, &d) || d.Reason != tt.want):
				t.Fatalf("got %v %v, want denial %d", p, err, tt.want)
			}
		})
	}
}

// A pod calls before the kubelet has reported its address (or Running) to
// the API server: the node's records name it, so it is served at once;
// without the guard it waits for the API server, as before.
func TestResolverServesPodsTheAPIServerHasNoAddressForYet(t *testing.T) {
	ip := netip.MustParseAddr("10.1.0.5")
	a := intercept.Sandbox{PodUID: "uid-a", PodNamespace: "ns", PodName: "a", IPs: []netip.Addr{ip}}
	pending := testPod("a", "", "uid-a")
	pending.Status.Phase = corev1.PodPending
	finished := testPod("a", "", "uid-a")
	finished.Status.Phase = corev1.PodSucceeded
	pendingWithIP := testPod("a", ip.String(), "uid-a")
	pendingWithIP.Status.Phase = corev1.PodPending
	for _, tt := range []struct {
		name    string
		indexed *corev1.Pod
		records map[netip.Addr]intercept.Sandbox
		guard   bool
		want    DenialReason
	}{
		{"no address yet, in the records", pending, map[netip.Addr]intercept.Sandbox{ip: a}, true, 0},
		{"address reported, still Pending", pendingWithIP, map[netip.Addr]intercept.Sandbox{ip: a}, true, 0},
		{"no address yet, no guard", pending, nil, false, DenyUnknownCaller},
		{"no address yet, not in the records", pending, map[netip.Addr]intercept.Sandbox{}, true, DenyUnknownCaller},
		{"finished", finished, map[netip.Addr]intercept.Sandbox{ip: a}, true, DenyUnknownCaller},
		{"records name a pod the index does not know", testPod("b", "", "uid-b"), map[netip.Addr]intercept.Sandbox{ip: a}, true, DenyUnknownCaller},
	} {
		t.Run(tt.name, func(t *testing.T) {
			index := NewPodIndex()
			index.Upsert(tt.indexed)
			api := &fakePods{pods: map[string]*corev1.Pod{}}
			api.set(tt.indexed)
			res := &IndexResolver{Index: index, NodeName: "node1", Pods: api}
			if tt.guard {
				res.Guard = &tableGuard{now: tt.records, fresh: tt.records}
			}
			p, err := res.Resolve(t.Context(), ip)
			var d *Denial
			switch {
			case tt.want == 0 && (err != nil || p.UID != "uid-a"):
				t.Fatalf("got %v %v, want pod a", p, err)
			case tt.want != 0 && (!errors.As(err, &d) || d.Reason != tt.want):
				t.Fatalf("got %v %v, want denial %d", p, err, tt.want)
			}
		})
	}
}

// A guarded pod's requests do not each wait for the unreachable API
// server: after a failed confirmation it is not asked about again for
// guardedOutageHold, then it is.
func TestResolverOutageHold(t *testing.T) {
	ip := netip.MustParseAddr("10.1.0.5")
	a := intercept.Sandbox{PodUID: "uid-a", PodNamespace: "ns", PodName: "a", IPs: []netip.Addr{ip}}
	index := NewPodIndex()
	index.Upsert(testPod("a", ip.String(), "uid-a"))
	now := t0
	var calls int
	g := &tableGuard{now: map[netip.Addr]intercept.Sandbox{ip: a}, fresh: map[netip.Addr]intercept.Sandbox{ip: a}}
	res := &IndexResolver{Index: index, NodeName: "node1", Pods: podsDown{&calls}, Guard: g, ConfirmTTL: time.Second, Now: func() time.Time { return now }}
	for _, step := range []struct {
		advance time.Duration
		calls   int
	}{{0, 1}, {2 * time.Second, 1}, {5 * time.Second, 1}, {4 * time.Second, 2}} {
		now = now.Add(step.advance)
		if _, err := res.Resolve(t.Context(), ip); err != nil {
			t.Fatal(err)
		}
		if calls != step.calls {
			t.Fatalf("after %s: %d API calls, want %d", now.Sub(t0), calls, step.calls)
		}
	}
}
