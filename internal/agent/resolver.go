package agent

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"

	"github.com/podid/podid/internal/intercept"
)

// Resolver maps a caller's source IP to exactly one running pod on this
// node. A refusal is a *Denial.
type Resolver interface {
	Resolve(ctx context.Context, ip netip.Addr) (*corev1.Pod, error)
}

// PodGetter reads a pod from the API server (not from a cache).
type PodGetter interface {
	GetPod(ctx context.Context, namespace, name string) (*corev1.Pod, error)
}

// IndexResolver resolves callers through a PodIndex and, at most every
// ConfirmTTL per pod, confirms with a live read from the API server that the
// indexed pod still exists with the same UID, still owns the IP, is running
// on this node and is not being deleted. The confirmation bounds how long a
// lagging watch can attribute a reused IP to a pod that is gone.
type IndexResolver struct {
	Index *PodIndex
	// Guard, if set, must vouch for the caller's address: a pod is served
	// only once the node's CNI records tie the address to the same pod and
	// the anti-spoofing rules for it are in place (fail closed).
	Guard    Guard
	Pods     PodGetter // nil disables confirmation
	NodeName string
	// ConfirmTTL is how long a confirmation stays valid; 0 confirms every request.
	ConfirmTTL time.Duration
	Now        func() time.Time

	flight singleflight.Group
	mu     sync.Mutex // protects confirmed
	// confirmed maps a pod UID to when it was last confirmed and for which IP.
	confirmed map[types.UID]confirmation
}

type confirmation struct {
	until time.Time // valid before this
	ip    netip.Addr
}

// Resolve implements Resolver.
func (r *IndexResolver) Resolve(ctx context.Context, ip netip.Addr) (*corev1.Pod, error) {
	ip = ip.Unmap()
	p, err := r.Index.lookup(ip)
	if err != nil {
		var d *Denial
		if r.Guard == nil || !errors.As(err, &d) || d.Reason != DenyUnknownCaller {
			return nil, err
		}
		// The kubelet reports a pod's address (and Running) to the API
		// server only after its containers start; the node's records have
		// it from the moment the sandbox exists.
		if p = r.fromRecords(ctx, ip); p == nil {
			return nil, err
		}
	}
	if r.Guard != nil {
		if err := r.guarded(ctx, p, ip); err != nil {
			return nil, err
		}
	}
	if r.Pods == nil {
		return p, nil
	}
	now := r.now()
	r.mu.Lock()
	c, ok := r.confirmed[p.UID]
	r.mu.Unlock()
	if ok && c.ip == ip && r.ConfirmTTL > 0 && now.Before(c.until) {
		return p, nil
	}
	key := string(p.UID) + "|" + ip.String()
	v, err, _ := r.flight.Do(key, func() (any, error) {
		cctx := ctx
		if r.Guard != nil { // the confirmation is only a second opinion: do not wait long for it
			var cancel context.CancelFunc
			cctx, cancel = context.WithTimeout(ctx, guardedConfirmWait)
			defer cancel()
		}
		return nil, r.confirm(cctx, p, ip)
	})
	_ = v
	if err != nil {
		var d *Denial
		if errors.As(err, &d) {
			return nil, d
		}
		if r.Guard == nil || ctx.Err() != nil {
			return nil, denied(DenyKubernetes, "cannot confirm the calling pod with the API server: %v", err)
		}
		// The API server cannot be reached, but the node's own records
		// (checked above) tie the address to this pod's UID, which is what
		// the confirmation is for: keep serving, and do not make this pod's
		// requests wait for the API server again for a while.
	}
	until := now.Add(r.ConfirmTTL)
	if err != nil {
		until = r.now().Add(guardedOutageHold)
	}
	r.mu.Lock()
	if r.confirmed == nil {
		r.confirmed = map[types.UID]confirmation{}
	}
	r.confirmed[p.UID] = confirmation{until: until, ip: ip}
	r.mu.Unlock()
	return p, nil
}

// Guard is the node's own record of which sandbox owns an address, and
// the rules that keep every other pod from claiming it (intercept.Guard).
type Guard interface {
	// Owner returns the sandbox guarded at ip now.
	Owner(ip netip.Addr) (intercept.Sandbox, bool)
	// Ensure returns the sandbox guarded at ip; if there is none, or fresh
	// is set, it first re-reads the node's records (bounded by ctx).
	Ensure(ctx context.Context, ip netip.Addr, fresh bool) (intercept.Sandbox, bool)
}

// guardWait bounds how long a request waits for the guard to catch up;
// guardedConfirmWait how long a guarded caller waits for the API server's
// confirmation.
// guardedOutageHold how long a guarded pod is not confirmed again after
// the API server could not be reached.
const (
	guardWait          = 2 * time.Second
	guardedConfirmWait = time.Second
	guardedOutageHold  = 10 * time.Second
)

// fromRecords returns the pod the node's CNI records give ip to, if the
// index knows that pod (by UID) and it is live.
func (r *IndexResolver) fromRecords(ctx context.Context, ip netip.Addr) *corev1.Pod {
	wctx, cancel := context.WithTimeout(ctx, guardWait)
	defer cancel()
	sb, ok := r.Guard.Ensure(wctx, ip, false)
	if !ok || sb.PodUID == "" {
		return nil
	}
	return r.Index.byUID(types.UID(sb.PodUID))
}

// guarded checks that the node's CNI records give ip to pod p and that its
// rules are in place. A mismatch is first re-read: the records may be
// newer than the last sync (IP reuse).
func (r *IndexResolver) guarded(ctx context.Context, p *corev1.Pod, ip netip.Addr) error {
	owns := func(sb intercept.Sandbox) bool {
		if sb.PodUID != "" {
			return sb.PodUID == string(p.UID)
		}
		return sb.PodNamespace == p.Namespace && sb.PodName == p.Name
	}
	sb, ok := r.Guard.Owner(ip)
	if ok && owns(sb) {
		return nil // the hot path: one map read
	}
	wctx, cancel := context.WithTimeout(ctx, guardWait)
	defer cancel()
	// Not guarded: re-read the records (a pod that has just started).
	// Guarded for another pod: re-read them too, the IP may have changed
	// hands since the last sync.
	sb, ok = r.Guard.Ensure(wctx, ip, ok)
	if ok && owns(sb) {
		return nil
	}
	if !ok {
		return denied(DenyUnguardedCaller, "IP %s (pod %s/%s) is not guarded on this node: no CNI record ties it to the pod's interface, or the rules that stop other pods from claiming it are not in place; no token until they are (see the agent's log)", ip, p.Namespace, p.Name)
	}
	return denied(DenyStaleCaller, "the node's CNI records give IP %s to pod %s/%s (uid %s), the API server to pod %s/%s (uid %s): refusing until they agree", ip, sb.PodNamespace, sb.PodName, sb.PodUID, p.Namespace, p.Name, p.UID)
}

// Forget drops a pod's confirmation (call on pod deletion).
func (r *IndexResolver) Forget(uid types.UID) {
	r.mu.Lock()
	delete(r.confirmed, uid)
	r.mu.Unlock()
}

func (r *IndexResolver) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

func (r *IndexResolver) confirm(ctx context.Context, p *corev1.Pod, ip netip.Addr) error {
	live, err := r.Pods.GetPod(ctx, p.Namespace, p.Name)
	stale := func(why string) error {
		return denied(DenyStaleCaller, "IP %s was held by pod %s/%s (uid %s), which %s: the caller may be a new pod reusing the IP; refusing until the agent's view catches up", ip, p.Namespace, p.Name, p.UID, why)
	}
	switch {
	case apierrors.IsNotFound(err):
		return stale("no longer exists")
	case err != nil:
		return err
	case live.UID != p.UID:
		return stale("was replaced by another pod with the same name")
	case live.DeletionTimestamp != nil:
		return stale("is being deleted")
	case live.Spec.NodeName != r.NodeName:
		return stale("is not on this node")
	case r.Guard != nil && (live.Status.Phase == corev1.PodSucceeded || live.Status.Phase == corev1.PodFailed):
		return stale("has finished")
	case r.Guard == nil && live.Status.Phase != corev1.PodRunning:
		return stale("is not running")
	case live.Spec.HostNetwork:
		return denied(DenyHostCaller, "pod %s/%s shares the node's network", p.Namespace, p.Name)
	}
	ips := podIPs(live)
	if r.Guard != nil && len(ips) == 0 {
		return nil // the node's records (checked first) give ip to this UID; the kubelet has not reported it yet
	}
	for _, a := range ips {
		if a == ip {
			return nil
		}
	}
	return stale("no longer has that IP")
}
