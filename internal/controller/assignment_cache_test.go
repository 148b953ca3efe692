package controller

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	podidv1 "github.com/podid/podid/api/v1"
	"github.com/podid/podid/internal/binding"
	"github.com/podid/podid/internal/scheme"
)

const testClientID = "11111111-1111-1111-1111-111111111111"

func testObjects() (*corev1.Pod, *podidv1.AzureIdentity, *podidv1.AzureIdentityBinding) {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p", UID: "pod-uid", Labels: map[string]string{podidv1.PodLabelKey: "sel"}},
		Spec:       corev1.PodSpec{NodeName: "node-a"},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning},
	}
	id := &podidv1.AzureIdentity{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "id"},
		Spec: podidv1.AzureIdentitySpec{ClientID: testClientID}}
	b := &podidv1.AzureIdentityBinding{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "b"},
		Spec: podidv1.AzureIdentityBindingSpec{AzureIdentity: "id", Selector: "sel"}}
	return p, id, b
}

// stored returns a as the cache holds it: read back from the API server
// (JSON) with server metadata, then trimmed.
func stored(t *testing.T, a *podidv1.AzureAssignedIdentity, annotations map[string]string) *podidv1.AzureAssignedIdentity {
	t.Helper()
	raw, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	var s podidv1.AzureAssignedIdentity
	if err := json.Unmarshal(raw, &s); err != nil {
		t.Fatal(err)
	}
	s.UID, s.ResourceVersion, s.Annotations = "aai-uid", "7", annotations
	s.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: FieldManager}}
	out, err := trimAssignment(&s)
	if err != nil {
		t.Fatal(err)
	}
	return out.(*podidv1.AzureAssignedIdentity)
}

func TestTrimmedAssignmentUpToDate(t *testing.T) {
	p, id, b := testObjects()
	orig := assignment(p, binding.Match{Identity: id, Binding: b, Spec: id.Spec.Normalized()})
	cur := stored(t, orig, map[string]string{"user": "note"})

	if cur.Spec.AzureIdentityRef != nil || cur.Spec.AzureBindingRef != nil || cur.Labels != nil ||
		cur.OwnerReferences != nil || cur.ManagedFields != nil || cur.Status != (podidv1.AzureAssignedIdentityStatus{}) {
		t.Fatalf("cached assignment not trimmed: %+v", cur)
	}
	if cur.Spec.Pod != "p" || cur.Spec.PodNamespace != "ns" || cur.Spec.PodUID != "pod-uid" || cur.UID != "aai-uid" ||
		cur.ResourceVersion != "7" || cur.Annotations["user"] != "note" {
		t.Fatalf("trimmed assignment lost a field the controller reads: %+v", cur)
	}
	if got := assignmentIdentity(cur); got != "ns/id" {
		t.Fatalf("identity key = %q, want ns/id", got)
	}
	if got := assignmentBinding(cur); got != "ns/b" {
		t.Fatalf("binding key = %q, want ns/b", got)
	}
	if again, _ := trimAssignment(cur); again != any(cur) {
		t.Fatal("trimAssignment is not idempotent")
	}

	for _, tt := range []struct {
		name   string
		change func(want *podidv1.AzureAssignedIdentity)
		want   bool
	}{
		{"unchanged", func(*podidv1.AzureAssignedIdentity) {}, true},
		{"identity spec changed", func(w *podidv1.AzureAssignedIdentity) {
			w.Spec.AzureIdentityRef.Spec.ClientID = "22222222-2222-2222-2222-222222222222"
		}, false},
		{"identity tenant added", func(w *podidv1.AzureAssignedIdentity) { w.Spec.AzureIdentityRef.Spec.TenantID = "t" }, false},
		{"binding spec changed", func(w *podidv1.AzureAssignedIdentity) { w.Spec.AzureBindingRef.Spec.Selector = "other" }, false},
		{"binding renamed", func(w *podidv1.AzureAssignedIdentity) { w.Spec.AzureBindingRef.Name = "b2" }, false},
		{"node changed", func(w *podidv1.AzureAssignedIdentity) { w.Spec.NodeName = "node-b"; w.Labels[LabelNode] = "node-b" }, false},
		{"label changed", func(w *podidv1.AzureAssignedIdentity) { w.Labels[LabelIdentity] = "x" }, false},
		{"label removed", func(w *podidv1.AzureAssignedIdentity) { delete(w.Labels, LabelNode) }, false},
		{"owner changed", func(w *podidv1.AzureAssignedIdentity) { w.OwnerReferences[0].UID = "other" }, false},
		{"status changed", func(w *podidv1.AzureAssignedIdentity) { w.Status.Status = podidv1.AssignedIDCreated }, false},
		{"empty and nil lists are equal", func(w *podidv1.AzureAssignedIdentity) {
			w.Spec.AzureIdentityRef.Spec.AuxiliaryTenantIDs = []string{}
		}, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			want := assignment(p, binding.Match{Identity: id, Binding: b, Spec: id.Spec.Normalized()})
			tt.change(want)
			if got := upToDate(cur, want); got != tt.want {
				t.Fatalf("upToDate(trimmed) = %v, want %v", got, tt.want)
			}
			// An untrimmed object compares the same way.
			if got := upToDate(orig, want); got != tt.want {
				t.Fatalf("upToDate(untrimmed) = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestTrimAssignmentIgnoresServerCacheAnnotations(t *testing.T) {
	p, id, b := testObjects()
	a := assignment(p, binding.Match{Identity: id, Binding: b, Spec: id.Spec.Normalized()})
	// Someone wrote a digest by hand that claims another content: the cache
	// computes its own, so the stale assignment is still seen as stale.
	cur := stored(t, a, map[string]string{cacheDigest: "forged", cacheIdentity: "x/y"})
	if cur.Annotations[cacheDigest] == "forged" || assignmentIdentity(cur) != "ns/id" {
		t.Fatalf("server-side cache annotations trusted: %v", cur.Annotations)
	}
}

// TestUpdateSendsWhatTheServerHas runs Reconcile on a fake client seeded with
// trimmed (cache) assignments and checks what an Update sends.
func TestUpdateSendsWhatTheServerHas(t *testing.T) {
	p, id, b := testObjects()
	match := binding.Match{Identity: id, Binding: b, Spec: id.Spec.Normalized()}
	for _, tt := range []struct {
		name       string
		stale      func(a *podidv1.AzureAssignedIdentity)
		wantUpdate bool
	}{
		{"up to date: no write", func(*podidv1.AzureAssignedIdentity) {}, false},
		{"identity spec changed", func(a *podidv1.AzureAssignedIdentity) { a.Spec.AzureIdentityRef.Spec.ClientID = "old" }, true},
		{"binding spec changed", func(a *podidv1.AzureAssignedIdentity) { a.Spec.AzureBindingRef.Spec.Weight = 3 }, true},
		{"labels changed", func(a *podidv1.AzureAssignedIdentity) { a.Labels[LabelNode] = "node-old" }, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			old := assignment(p, match)
			tt.stale(old)
			cached := stored(t, old, map[string]string{"user": "note"})
			var updates []*podidv1.AzureAssignedIdentity
			writes := 0
			c := fake.NewClientBuilder().WithScheme(scheme.New()).
				WithObjects(p.DeepCopy(), id.DeepCopy(), b.DeepCopy(), cached).
				WithIndex(&podidv1.AzureAssignedIdentity{}, indexPodKey, func(o client.Object) []string {
					a := o.(*podidv1.AzureAssignedIdentity)
					return []string{key(a.Spec.PodNamespace, a.Spec.Pod)}
				}).
				WithIndex(&podidv1.AzureIdentityBinding{}, binding.SelectorIndex, binding.SelectorOf).
				WithInterceptorFuncs(interceptor.Funcs{
					Create: func(context.Context, client.WithWatch, client.Object, ...client.CreateOption) error {
						writes++
						return nil
					},
					Delete: func(context.Context, client.WithWatch, client.Object, ...client.DeleteOption) error {
						writes++
						return nil
					},
					Update: func(_ context.Context, _ client.WithWatch, o client.Object, _ ...client.UpdateOption) error {
						writes++
						updates = append(updates, o.(*podidv1.AzureAssignedIdentity).DeepCopy())
						return nil
					},
				}).Build()
			r := &PodReconciler{Client: c}
			if _, err := r.Reconcile(t.Context(), reconcile.Request{NamespacedName: types.NamespacedName{Namespace: "ns", Name: "p"}}); err != nil {
				t.Fatalf("reconcile: %v", err)
			}
			if !tt.wantUpdate {
				if writes != 0 {
					t.Fatalf("%d writes for an up-to-date assignment", writes)
				}
				return
			}
			if writes != 1 || len(updates) != 1 {
				t.Fatalf("writes = %d, updates = %d; want one update", writes, len(updates))
			}
			got, want := updates[0], assignment(p, match)
			for k := range got.Annotations {
				if strings.HasPrefix(k, cacheAnnotationPrefix) {
					t.Fatalf("update sends cache-only annotation %s", k)
				}
			}
			if got.Annotations["user"] != "note" || len(got.Annotations) != 1 {
				t.Fatalf("update annotations = %v, want the server's {user: note}", got.Annotations)
			}
			if got.UID != "aai-uid" || got.Name != want.Name || got.Namespace != "ns" {
				t.Fatalf("update lost the object's identity: %+v", got.ObjectMeta)
			}
			if assignmentDigest(got) != assignmentDigest(want) || got.Spec.AzureIdentityRef == nil ||
				got.Spec.AzureIdentityRef.Spec.ClientID != testClientID || got.Spec.AzureBindingRef == nil {
				t.Fatalf("update does not send the full desired assignment: %+v", got)
			}
		})
	}
}
