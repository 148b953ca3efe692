package agent

import (
	"context"
	"fmt"
	"maps"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	podidv1 "github.com/podid/podid/api/v1"
	"github.com/podid/podid/internal/binding"
	"github.com/podid/podid/internal/scheme"
	"github.com/podid/podid/internal/token"
	"github.com/podid/podid/internal/workloadidentity"
)

// newIndexedReader is a fake client with n identities and bindings in
// namespace "ns" and the field index binding.IndexBindings adds to the
// agent's cache.
func newIndexedReader(t testing.TB, n int) client.Reader {
	t.Helper()
	b := fake.NewClientBuilder().WithScheme(scheme.New())
	if err := binding.IndexBindings(context.Background(), fieldIndexerFunc(func(obj client.Object, field string, fn client.IndexerFunc) {
		b = b.WithIndex(obj, field, fn)
	})); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		b = b.WithObjects(
			&podidv1.AzureIdentity{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: fmt.Sprintf("id-%d", i)}, Spec: podidv1.AzureIdentitySpec{ClientID: fmt.Sprintf("00000000-0000-0000-0000-%012d", i)}},
			&podidv1.AzureIdentityBinding{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: fmt.Sprintf("b-%d", i)}, Spec: podidv1.AzureIdentityBindingSpec{AzureIdentity: fmt.Sprintf("id-%d", i), Selector: fmt.Sprintf("sel-%d", i)}},
		)
	}
	return b.Build()
}

// fieldIndexerFunc adapts the fake builder's WithIndex to client.FieldIndexer.
type fieldIndexerFunc func(client.Object, string, client.IndexerFunc)

func (f fieldIndexerFunc) IndexField(_ context.Context, obj client.Object, field string, fn client.IndexerFunc) error {
	f(obj, field, fn)
	return nil
}

// With a thousand identities in the namespace, the pod gets exactly the one
// its label selects (the index is what narrows the read).
func TestBindingDeciderPicksTheSelectedIdentity(t *testing.T) {
	d := &BindingDecider{Reader: newIndexedReader(t, 1000), DefaultTenantID: "t"}
	for _, sel := range []string{"sel-0", "sel-517", "sel-999"} {
		p := testPod("p", "10.1.0.5", "uid-p")
		p.Labels[podidv1.PodLabelKey] = sel
		ids, herr := d.Identities(t.Context(), p)
		if herr != nil {
			t.Fatalf("%s: %v", sel, asHTTP(herr).description)
		}
		var n int
		fmt.Sscanf(sel, "sel-%d", &n)
		want := fmt.Sprintf("00000000-0000-0000-0000-%012d", n)
		if len(ids) != 1 || ids[0].ClientID != want || ids[0].Kind != token.Federated {
			t.Fatalf("%s: identities %+v, want exactly %s", sel, ids, want)
		}
	}
	p := testPod("p", "10.1.0.5", "uid-p")
	p.Labels[podidv1.PodLabelKey] = "sel-none"
	if _, herr := d.Identities(t.Context(), p); herr == nil || asHTTP(herr).status != 404 {
		t.Fatalf("unknown selector: %+v, want 404", herr)
	}
}

// The operator picks the broker per identity (BrokerClientIDs); a pod
// annotated for AKS identity bindings gets its service account's identity
// through the broker; every other identity stays per-pod federated.
func TestBindingDeciderMarksBrokerIdentities(t *testing.T) {
	const v1ID, v2ID = "00000000-0000-0000-0000-000000000001", "aaaaaaaa-0000-0000-0000-000000000002"
	reader := func() client.Reader {
		r := newIndexedReader(t, 2).(client.Client)
		sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "sa", Annotations: map[string]string{workloadidentity.ClientIDAnnotation: v2ID}}}
		if err := r.Create(t.Context(), sa); err != nil {
			t.Fatal(err)
		}
		return r
	}()
	cases := []struct {
		name       string
		brokerIDs  []string
		annotation string
		want       map[string]bool
	}{
		{"per-pod by default", nil, "", map[string]bool{v1ID: false, v2ID: false}},
		{"chosen by client id", []string{strings.ToUpper(v1ID)}, "", map[string]bool{v1ID: true, v2ID: false}},
		{"identity-binding pod", nil, "true", map[string]bool{v1ID: false, v2ID: true}},
		{"annotation must be true", nil, "yes", map[string]bool{v1ID: false, v2ID: false}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := &BindingDecider{Reader: reader, DefaultTenantID: "t", BrokerClientIDs: c.brokerIDs}
			p := testPod("p", "10.1.0.5", "uid-p")
			p.Labels[podidv1.PodLabelKey] = "sel-1"
			p.Labels[workloadidentity.UseLabel] = "true"
			if c.annotation != "" {
				p.Annotations = map[string]string{workloadidentity.UseIdentityBindingAnnotation: c.annotation}
			}
			ids, err := d.Identities(t.Context(), p)
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]bool{}
			for _, id := range ids {
				got[id.ClientID] = id.Broker
			}
			if !maps.Equal(got, c.want) {
				t.Fatalf("broker per identity %v, want %v", got, c.want)
			}
		})
	}
}
