package controller

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	podidv1 "github.com/podid/podid/api/v1"
)

// The cache keeps each AzureAssignedIdentity trimmed: what upToDate compares
// (spec, status, labels, owner references) is folded into a digest, and only
// the fields the controller reads directly stay (metadata, pod name, namespace
// and UID). The digest and the identity and binding keys the indexes need
// travel in cache-only annotations under this prefix; they are never sent to
// the API server (serverAnnotations), and any the server holds are ignored.
const cacheAnnotationPrefix = "cache.podid.dev/"

// Cache-only annotations of a trimmed AzureAssignedIdentity.
const (
	cacheDigest   = cacheAnnotationPrefix + "digest"   // assignmentDigest of the object as stored
	cacheIdentity = cacheAnnotationPrefix + "identity" // identity namespace/name
	cacheBinding  = cacheAnnotationPrefix + "binding"  // binding namespace/name
)

// trimAssignment is the cache transform of AzureAssignedIdentity. At 10k
// assignments the untrimmed objects (two spec copies, labels, owner
// references, managed fields) are the largest part of the controller's heap.
// It is idempotent: a trimmed object passes unchanged.
func trimAssignment(obj any) (any, error) {
	a, ok := obj.(*podidv1.AzureAssignedIdentity)
	if !ok || isTrimmed(a) {
		return obj, nil
	}
	ann := make(map[string]string, len(a.Annotations)+3)
	for k, v := range a.Annotations {
		if !strings.HasPrefix(k, cacheAnnotationPrefix) {
			ann[k] = v
		}
	}
	ann[cacheDigest] = assignmentDigest(a)
	if r := a.Spec.AzureIdentityRef; r != nil {
		ann[cacheIdentity] = key(r.Namespace, r.Name)
	}
	if r := a.Spec.AzureBindingRef; r != nil {
		ann[cacheBinding] = key(r.Namespace, r.Name)
	}
	m := a.ObjectMeta
	m.Annotations, m.Labels, m.OwnerReferences, m.ManagedFields = ann, nil, nil, nil
	return &podidv1.AzureAssignedIdentity{
		TypeMeta:   a.TypeMeta,
		ObjectMeta: m,
		Spec: podidv1.AzureAssignedIdentitySpec{
			Pod: a.Spec.Pod, PodNamespace: a.Spec.PodNamespace, PodUID: a.Spec.PodUID,
		},
	}, nil
}

// isTrimmed reports whether a came out of trimAssignment. Objects from the
// API server always carry both references (the schema requires them).
func isTrimmed(a *podidv1.AzureAssignedIdentity) bool {
	_, ok := a.Annotations[cacheDigest]
	return ok && a.Spec.AzureIdentityRef == nil && a.Spec.AzureBindingRef == nil
}

// assignmentDigest digests what upToDate compares: spec, status, labels and
// owner references, in their JSON form (what the API server stores, so an
// object read back digests like the one written).
func assignmentDigest(a *podidv1.AzureAssignedIdentity) string {
	h := sha256.New()
	// Encoding these types cannot fail; a failure would only make the
	// assignment look out of date and be written again.
	_ = json.NewEncoder(h).Encode(struct {
		Spec            podidv1.AzureAssignedIdentitySpec   `json:"spec"`
		Status          podidv1.AzureAssignedIdentityStatus `json:"status"`
		Labels          map[string]string                   `json:"labels,omitempty"`
		OwnerReferences []metav1.OwnerReference             `json:"ownerReferences,omitempty"`
	}{a.Spec, a.Status, a.Labels, a.OwnerReferences})
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil))
}

// upToDate reports whether the stored assignment cur (trimmed or not) already
// says what want says.
func upToDate(cur, want *podidv1.AzureAssignedIdentity) bool {
	d := cur.Annotations[cacheDigest]
	if !isTrimmed(cur) {
		d = assignmentDigest(cur)
	}
	return d == assignmentDigest(want)
}

// serverAnnotations returns a's annotations without the cache-only ones: what
// the API server holds, for a write that starts from a cached object.
func serverAnnotations(a map[string]string) map[string]string {
	var out map[string]string
	for k, v := range a {
		if strings.HasPrefix(k, cacheAnnotationPrefix) {
			continue
		}
		if out == nil {
			out = make(map[string]string, len(a))
		}
		out[k] = v
	}
	return out
}

// assignmentIdentity and assignmentBinding return the identity and binding
// (namespace/name) an assignment refers to, trimmed or not; "" when unset.
func assignmentIdentity(a *podidv1.AzureAssignedIdentity) string {
	if r := a.Spec.AzureIdentityRef; r != nil {
		return key(r.Namespace, r.Name)
	}
	return a.Annotations[cacheIdentity]
}

func assignmentBinding(a *podidv1.AzureAssignedIdentity) string {
	if r := a.Spec.AzureBindingRef; r != nil {
		return key(r.Namespace, r.Name)
	}
	return a.Annotations[cacheBinding]
}
