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
)

// Resolver maps a caller's source IP to exactly one running pod on this
// node. A refusal is a *Denial.
type Resolver interface {
	Resolve(ctx context.Context, ip netip.Addr) (*corev1.Pod, error)
}

// live reports whether a pod may hold its IP now: not finished, not being deleted.
func live(p *corev1.Pod) bool {
	return p.DeletionTimestamp == nil && p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed
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
	Index    *PodIndex
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
	at time.Time
	ip netip.Addr
}

// Resolve implements Resolver.
func (r *IndexResolver) Resolve(ctx context.Context, ip netip.Addr) (*corev1.Pod, error) {
	ip = ip.Unmap()
	p, err := r.Index.lookup(ip)
	if err != nil {
		return nil, err
	}
	if r.Pods == nil {
		return p, nil
	}
	now := r.now()
	r.mu.Lock()
	c, ok := r.confirmed[p.UID]
	r.mu.Unlock()
	if ok && c.ip == ip && r.ConfirmTTL > 0 && now.Sub(c.at) < r.ConfirmTTL {
		return p, nil
	}
	key := string(p.UID) + "|" + ip.String()
	v, err, _ := r.flight.Do(key, func() (any, error) {
		return nil, r.confirm(ctx, p, ip)
	})
	_ = v
	if err != nil {
		var d *Denial
		if errors.As(err, &d) {
			return nil, d
		}
		return nil, denied(DenyKubernetes, "cannot confirm the calling pod with the API server: %v", err)
	}
	r.mu.Lock()
	if r.confirmed == nil {
		r.confirmed = map[types.UID]confirmation{}
	}
	r.confirmed[p.UID] = confirmation{at: now, ip: ip}
	r.mu.Unlock()
	return p, nil
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
	case live.Status.Phase != corev1.PodRunning:
		return stale("is not running")
	case live.Spec.HostNetwork:
		return denied(DenyHostCaller, "pod %s/%s shares the node's network", p.Namespace, p.Name)
	}
	for _, a := range podIPs(live) {
		if a == ip {
			return nil
		}
	}
	return stale("no longer has that IP")
}
