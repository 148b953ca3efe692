package binding

import (
	"context"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	podidv1 "github.com/podid/podid/api/v1"
	"github.com/podid/podid/internal/scheme"
)

func TestLoad(t *testing.T) {
	meta := func(ns, name string) metav1.ObjectMeta { return metav1.ObjectMeta{Namespace: ns, Name: name} }
	objs := []client.Object{
		&podidv1.AzureIdentity{ObjectMeta: meta("a", "id1")},
		&podidv1.AzureIdentity{ObjectMeta: meta("a", "id2")},
		&podidv1.AzureIdentity{ObjectMeta: meta("b", "id1")},
		&podidv1.AzureIdentityBinding{ObjectMeta: meta("a", "b1"), Spec: podidv1.AzureIdentityBindingSpec{AzureIdentity: "id1", Selector: "web"}},
		// Legacy capitalised keys are indexed by their normalised value.
		&podidv1.AzureIdentityBinding{ObjectMeta: meta("a", "b2"), Spec: podidv1.AzureIdentityBindingSpec{LegacyAzureIdentity: "id2", LegacySelector: "web"}},
		&podidv1.AzureIdentityBinding{ObjectMeta: meta("a", "b3"), Spec: podidv1.AzureIdentityBindingSpec{AzureIdentity: "gone", Selector: "web"}},
		&podidv1.AzureIdentityBinding{ObjectMeta: meta("a", "other"), Spec: podidv1.AzureIdentityBindingSpec{AzureIdentity: "id1", Selector: "db"}},
		&podidv1.AzureIdentityBinding{ObjectMeta: meta("b", "b1"), Spec: podidv1.AzureIdentityBindingSpec{AzureIdentity: "id1", Selector: "web"}},
		&podidv1.AzurePodIdentityException{ObjectMeta: meta("a", "exc")},
		&podidv1.AzurePodIdentityException{ObjectMeta: meta("b", "exc")},
	}
	c := fake.NewClientBuilder().WithScheme(scheme.New()).WithObjects(objs...).
		WithIndex(&podidv1.AzureIdentityBinding{}, SelectorIndex, SelectorOf).Build()
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "p", Labels: map[string]string{podidv1.PodLabelKey: "web"}}}
	names := func(in Inputs) (bindings, identities, exceptions []string) {
		for _, b := range in.Bindings {
			bindings = append(bindings, b.Namespace+"/"+b.Name)
		}
		for k := range in.Identities {
			identities = append(identities, k.String())
		}
		for _, e := range in.Exceptions {
			exceptions = append(exceptions, e.Namespace+"/"+e.Name)
		}
		slices.Sort(bindings)
		slices.Sort(identities)
		return bindings, identities, exceptions
	}
	for _, tt := range []struct {
		name                string
		rules               Rules
		wantB, wantI, wantE []string
	}{
		{"namespaced", Rules{}, []string{"a/b1", "a/b2", "a/b3"}, []string{"a/id1", "a/id2"}, []string{"a/exc"}},
		{"cluster-wide", Rules{ClusterWide: true}, []string{"a/b1", "a/b2", "a/b3", "b/b1"}, []string{"a/id1", "a/id2", "b/id1"}, []string{"a/exc"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			in, err := tt.rules.Load(context.Background(), c, pod)
			if err != nil {
				t.Fatal(err)
			}
			b, i, e := names(in)
			if !slices.Equal(b, tt.wantB) || !slices.Equal(i, tt.wantI) || !slices.Equal(e, tt.wantE) {
				t.Fatalf("bindings %v identities %v exceptions %v; want %v %v %v", b, i, e, tt.wantB, tt.wantI, tt.wantE)
			}
			if _, ok := in.Identities[types.NamespacedName{Namespace: "a", Name: "gone"}]; ok {
				t.Error("a missing identity was invented")
			}
		})
	}
}
