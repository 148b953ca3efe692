package agent

import (
	"fmt"
	"net/netip"
	"sort"
	"sync"
	"unique"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"

	"github.com/podid/podid/internal/workloadidentity"
)

// PodIndex is the agent's view of the pods on its node, indexed by IP. It
// is the store of the agent's pod reflector (toolscache.ReflectorStore):
// the watch decodes full pods, the index keeps a compact record of the
// few fields a decision reads (about 300 bytes instead of the ~1.7 KB even
// a trimmed corev1.Pod costs) and no second copy in an informer cache. At
// 10,000 pods on a node that is the difference that keeps the agent small.
type PodIndex struct {
	// OnGone, if set, is called (outside the lock) with the UID of every pod
	// that left the index or stopped being live, so that confirmations and
	// cached tokens tied to it are dropped at once.
	OnGone func(types.UID)
	// OnRelist, if set, is called (outside the lock) after every complete
	// list of the node's pods has replaced the index.
	OnRelist func(pods int)

	mu   sync.RWMutex // protects byIP, pods, host
	byIP map[netip.Addr][]*podRecord
	pods map[types.UID]*podRecord
	// host holds the node's own addresses: callers from them are host processes.
	host map[netip.Addr]bool

	syncOnce sync.Once
	synced   chan struct{} // closed by the first Replace
}

// podRecord is what the agent keeps of a pod. Strings that repeat across
// pods (namespace, node, service account, phase, label keys and values)
// are interned.
type podRecord struct {
	name              string
	uid               types.UID
	resourceVersion   string
	namespace         unique.Handle[string]
	nodeName          unique.Handle[string]
	serviceAccount    unique.Handle[string]
	phase             unique.Handle[string]
	labels            []labelPair // sorted by key
	defaultClientID   string
	identityBinding   bool // annotated for AKS identity bindings: served through the broker
	ips               []netip.Addr
	deletionTimestamp *metav1.Time
	hostNetwork       bool
}

type labelPair struct{ key, value unique.Handle[string] }

func newRecord(p *corev1.Pod) *podRecord {
	r := &podRecord{
		name:              p.Name,
		uid:               p.UID,
		resourceVersion:   p.ResourceVersion,
		namespace:         unique.Make(p.Namespace),
		nodeName:          unique.Make(p.Spec.NodeName),
		serviceAccount:    unique.Make(p.Spec.ServiceAccountName),
		phase:             unique.Make(string(p.Status.Phase)),
		defaultClientID:   p.Annotations[DefaultClientIDAnnot],
		identityBinding:   p.Annotations[workloadidentity.UseIdentityBindingAnnotation] == "true",
		ips:               podIPs(p),
		deletionTimestamp: p.DeletionTimestamp,
		hostNetwork:       p.Spec.HostNetwork,
	}
	if r.deletionTimestamp != nil {
		t := *r.deletionTimestamp // not a pointer into the decoded pod
		r.deletionTimestamp = &t
	}
	if len(p.Labels) > 0 {
		r.labels = make([]labelPair, 0, len(p.Labels))
		for k, v := range p.Labels {
			r.labels = append(r.labels, labelPair{unique.Make(k), unique.Make(v)})
		}
		sort.Slice(r.labels, func(i, j int) bool { return r.labels[i].key.Value() < r.labels[j].key.Value() })
	}
	return r
}

// pod materialises the record as the trimmed *corev1.Pod the rest of the
// agent reads (internal/binding works on pods). A fresh object per call:
// callers may keep it without holding the index.
func (r *podRecord) pod() *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: r.name, Namespace: r.namespace.Value(), UID: r.uid, ResourceVersion: r.resourceVersion, DeletionTimestamp: r.deletionTimestamp},
		Spec:       corev1.PodSpec{NodeName: r.nodeName.Value(), HostNetwork: r.hostNetwork, ServiceAccountName: r.serviceAccount.Value()},
		Status:     corev1.PodStatus{Phase: corev1.PodPhase(r.phase.Value())},
	}
	if len(r.labels) > 0 {
		p.Labels = make(map[string]string, len(r.labels))
		for _, l := range r.labels {
			p.Labels[l.key.Value()] = l.value.Value()
		}
	}
	// The annotations a decision reads (decide.go), and only those.
	if r.defaultClientID != "" || r.identityBinding {
		p.Annotations = map[string]string{}
	}
	if r.defaultClientID != "" {
		p.Annotations[DefaultClientIDAnnot] = r.defaultClientID
	}
	if r.identityBinding {
		p.Annotations[workloadidentity.UseIdentityBindingAnnotation] = "true"
	}
	for i, ip := range r.ips {
		if i == 0 {
			p.Status.PodIP = ip.String()
		}
		p.Status.PodIPs = append(p.Status.PodIPs, corev1.PodIP{IP: ip.String()})
	}
	return p
}

func (r *podRecord) live() bool {
	ph := corev1.PodPhase(r.phase.Value())
	return r.deletionTimestamp == nil && ph != corev1.PodSucceeded && ph != corev1.PodFailed
}

// NewPodIndex returns an empty index.
func NewPodIndex() *PodIndex {
	return &PodIndex{
		byIP: map[netip.Addr][]*podRecord{}, pods: map[types.UID]*podRecord{}, host: map[netip.Addr]bool{},
		synced: make(chan struct{}),
	}
}

// SetHostAddrs replaces the node's own addresses.
func (x *PodIndex) SetHostAddrs(addrs []netip.Addr) {
	m := make(map[netip.Addr]bool, len(addrs))
	for _, a := range addrs {
		m[a.Unmap()] = true
	}
	x.mu.Lock()
	x.host = m
	x.mu.Unlock()
}

func podIPs(p *corev1.Pod) []netip.Addr {
	var out []netip.Addr
	add := func(s string) {
		if a, err := netip.ParseAddr(s); err == nil {
			a = a.Unmap()
			for _, o := range out {
				if o == a {
					return
				}
			}
			out = append(out, a)
		}
	}
	add(p.Status.PodIP)
	for _, ip := range p.Status.PodIPs {
		add(ip.IP)
	}
	return out
}

// Upsert adds or replaces a pod; a pod that is no longer live is reported
// to OnGone.
func (x *PodIndex) Upsert(p *corev1.Pod) {
	r := newRecord(p)
	x.mu.Lock()
	x.removeLocked(r.uid)
	x.insertLocked(r)
	x.mu.Unlock()
	if !r.live() {
		x.gone(r.uid)
	}
}

// Delete removes a pod and reports it to OnGone.
func (x *PodIndex) Delete(uid types.UID) {
	x.mu.Lock()
	x.removeLocked(uid)
	x.mu.Unlock()
	x.gone(uid)
}

func (x *PodIndex) gone(uid types.UID) {
	if x.OnGone != nil {
		x.OnGone(uid)
	}
}

func (x *PodIndex) insertLocked(r *podRecord) {
	x.pods[r.uid] = r
	for _, ip := range r.ips {
		x.byIP[ip] = append(x.byIP[ip], r)
	}
}

func (x *PodIndex) removeLocked(uid types.UID) {
	old := x.pods[uid]
	if old == nil {
		return
	}
	for _, ip := range old.ips {
		rs := x.byIP[ip]
		for i, r := range rs {
			if r == old {
				rs = append(rs[:i:i], rs[i+1:]...)
				break
			}
		}
		if len(rs) == 0 {
			delete(x.byIP, ip)
		} else {
			x.byIP[ip] = rs
		}
	}
	delete(x.pods, uid)
}

// Len is the number of indexed pods.
func (x *PodIndex) Len() int {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return len(x.pods)
}

// Synced is closed once the index holds a complete list of the node's
// pods (the first Replace through Store).
func (x *PodIndex) Synced() <-chan struct{} { return x.synced }

// Store is the index as the store of a pod reflector: the watch's full
// pods go in, compact records are kept.
func (x *PodIndex) Store() toolscache.ReflectorStore { return podStore{x} }

type podStore struct{ x *PodIndex }

func asPod(obj any) (*corev1.Pod, error) {
	if d, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return nil, fmt.Errorf("pod index: got %T, want *v1.Pod", obj)
	}
	return p, nil
}

func (s podStore) Add(obj any) error { return s.Update(obj) }

func (s podStore) Update(obj any) error {
	p, err := asPod(obj)
	if err != nil {
		return err
	}
	s.x.Upsert(p)
	return nil
}

func (s podStore) Delete(obj any) error {
	p, err := asPod(obj)
	if err != nil {
		return err
	}
	s.x.Delete(p.UID)
	return nil
}

// Replace makes the index exactly list (the initial list, or a relist
// after a watch gap); every pod that vanished in the gap is reported to
// OnGone.
func (s podStore) Replace(list []any, _ string) error {
	recs := make([]*podRecord, 0, len(list))
	for _, obj := range list {
		p, err := asPod(obj)
		if err != nil {
			return err
		}
		recs = append(recs, newRecord(p))
	}
	x := s.x
	x.mu.Lock()
	old := x.pods
	x.pods = make(map[types.UID]*podRecord, len(recs))
	x.byIP = make(map[netip.Addr][]*podRecord, len(recs))
	for _, r := range recs {
		x.insertLocked(r)
	}
	var gone []types.UID
	for uid := range old {
		if r, ok := x.pods[uid]; !ok || !r.live() {
			gone = append(gone, uid)
		}
	}
	x.mu.Unlock()
	for _, uid := range gone {
		x.gone(uid)
	}
	// OnRelist first: whoever waits on Synced then also sees the relist
	// handled (the pod watch's "resumed" state and log line).
	if x.OnRelist != nil {
		x.OnRelist(len(recs))
	}
	x.syncOnce.Do(func() { close(x.synced) })
	return nil
}

// Resync: the reflector runs without a resync period; nothing to re-deliver.
func (s podStore) Resync() error { return nil }

// byUID returns the live, non-hostNetwork pod with uid, whatever addresses
// and phase the API server reports for it yet.
func (x *PodIndex) byUID(uid types.UID) *corev1.Pod {
	x.mu.RLock()
	defer x.mu.RUnlock()
	r := x.pods[uid]
	if r == nil || !r.live() || r.hostNetwork {
		return nil
	}
	return r.pod()
}

// lookup resolves ip against the index alone.
func (x *PodIndex) lookup(ip netip.Addr) (*corev1.Pod, error) {
	ip = ip.Unmap()
	if ip.IsLoopback() || ip.IsUnspecified() {
		return nil, denied(DenyHostCaller, "caller %s is a process on the node, not a pod: host processes never get pod identities", ip)
	}
	x.mu.RLock()
	defer x.mu.RUnlock()
	if x.host[ip] {
		return nil, denied(DenyHostCaller, "caller %s is a process on the node, not a pod: host processes never get pod identities", ip)
	}
	var found *podRecord
	n := 0
	for _, r := range x.byIP[ip] {
		if r.hostNetwork {
			return nil, denied(DenyHostCaller, "caller %s shares the node's network (hostNetwork pod %s/%s): such pods never get pod identities", ip, r.namespace.Value(), r.name)
		}
		if !r.live() {
			continue
		}
		found = r
		n++
	}
	switch {
	case n == 0:
		// 404: clients retry, and a pod that just started may not be indexed yet.
		return nil, denied(DenyUnknownCaller, "no running pod on this node has IP %s (yet): the caller is not a known pod", ip)
	case n > 1:
		return nil, denied(DenyAmbiguousCaller, "%d pods on this node claim IP %s: refusing to guess which one is calling", n, ip)
	}
	if ph := corev1.PodPhase(found.phase.Value()); ph != corev1.PodRunning {
		return nil, denied(DenyUnknownCaller, "pod %s/%s with IP %s is %s, not Running", found.namespace.Value(), found.name, ip, ph)
	}
	return found.pod(), nil
}
