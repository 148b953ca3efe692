package agent

import (
	"context"
	"sync"
	"sync/atomic"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/podid/podid/internal/token"
)

// MemoDecider remembers each pod's decision until the pod changes
// (another resourceVersion) or anything a decision reads changes
// (Invalidate, called by the informers' event handlers of bindings,
// identities, exceptions and service accounts). A decision reads the same
// informer caches either way, so remembering it adds no staleness; it takes
// the cache lists, the identity copy and the rule evaluation off the
// cached-token path, where they were most of the handler's CPU.
type MemoDecider struct {
	Decider Decider

	gen atomic.Uint64 // bumped by Invalidate

	mu sync.RWMutex // protects m
	m  map[types.UID]memo
}

type memo struct {
	gen             uint64
	resourceVersion string
	ids             []token.Identity
	denial          error
}

// Invalidate marks every remembered decision as stale.
func (d *MemoDecider) Invalidate() { d.gen.Add(1) }

// Forget drops a pod's decision (call when the pod is gone).
func (d *MemoDecider) Forget(uid types.UID) {
	d.mu.Lock()
	delete(d.m, uid)
	d.mu.Unlock()
}

// Identities implements Decider.
func (d *MemoDecider) Identities(ctx context.Context, pod *corev1.Pod) ([]token.Identity, error) {
	if pod.ResourceVersion == "" { // not from the API server: nothing to key on
		return d.Decider.Identities(ctx, pod)
	}
	gen := d.gen.Load() // before the decision: a change during it makes the result stale, never the reverse
	d.mu.RLock()
	m, ok := d.m[pod.UID]
	d.mu.RUnlock()
	if ok && m.gen == gen && m.resourceVersion == pod.ResourceVersion {
		return m.ids, m.denial
	}
	ids, denial := d.Decider.Identities(ctx, pod)
	if dn, ok := denial.(*Denial); denial != nil && (!ok || dn.Temporary()) {
		return ids, denial // a failed read, not a decision
	}
	d.mu.Lock()
	if d.m == nil {
		d.m = map[types.UID]memo{}
	}
	d.m[pod.UID] = memo{gen: gen, resourceVersion: pod.ResourceVersion, ids: ids, denial: denial}
	d.mu.Unlock()
	return ids, denial
}
