package binding

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	podidv1 "github.com/podid/podid/api/v1"
)

const cid = "11111111-1111-1111-1111-111111111111"

func id(ns, name string, annotations map[string]string, spec podidv1.AzureIdentitySpec) *podidv1.AzureIdentity {
	return &podidv1.AzureIdentity{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Annotations: annotations}, Spec: spec}
}

func bind(ns, name string, spec podidv1.AzureIdentityBindingSpec) *podidv1.AzureIdentityBinding {
	return &podidv1.AzureIdentityBinding{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: spec}
}

func podIn(ns, sel string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "p", Labels: map[string]string{podidv1.PodLabelKey: sel}},
		Spec:       corev1.PodSpec{NodeName: "n"},
	}
}

func TestFor(t *testing.T) {
	valid := podidv1.AzureIdentitySpec{ClientID: cid}
	legacy := podidv1.AzureIdentitySpec{LegacyClientID: cid}
	namespaced := map[string]string{podidv1.BehaviorAnnotation: podidv1.BehaviorNamespaced}
	identities := func(ids ...*podidv1.AzureIdentity) map[types.NamespacedName]*podidv1.AzureIdentity {
		m := map[types.NamespacedName]*podidv1.AzureIdentity{}
		for _, i := range ids {
			m[types.NamespacedName{Namespace: i.Namespace, Name: i.Name}] = i
		}
		return m
	}
	for _, tt := range []struct {
		name         string
		rules        Rules
		pod          *corev1.Pod
		in           Inputs
		want         []string // identity namespace/name
		wantProblems []string // reasons
	}{
		{
			name: "same namespace match",
			pod:  podIn("a", "web"),
			in:   Inputs{Bindings: []*podidv1.AzureIdentityBinding{bind("a", "b", podidv1.AzureIdentityBindingSpec{AzureIdentity: "i", Selector: "web"})}, Identities: identities(id("a", "i", nil, valid))},
			want: []string{"a/i"},
		},
		{
			name: "legacy keys on binding and identity",
			pod:  podIn("a", "web"),
			in:   Inputs{Bindings: []*podidv1.AzureIdentityBinding{bind("a", "b", podidv1.AzureIdentityBindingSpec{LegacyAzureIdentity: "i", LegacySelector: "web"})}, Identities: identities(id("a", "i", nil, legacy))},
			want: []string{"a/i"},
		},
		{
			name: "selector is compared exactly",
			pod:  podIn("a", "Web"),
			in:   Inputs{Bindings: []*podidv1.AzureIdentityBinding{bind("a", "b", podidv1.AzureIdentityBindingSpec{AzureIdentity: "i", Selector: "web"})}, Identities: identities(id("a", "i", nil, valid))},
		},
		{
			name: "other namespace ignored when namespaced",
			pod:  podIn("b", "web"),
			in:   Inputs{Bindings: []*podidv1.AzureIdentityBinding{bind("a", "b", podidv1.AzureIdentityBindingSpec{AzureIdentity: "i", Selector: "web"})}, Identities: identities(id("a", "i", nil, valid))},
		},
		{
			name:  "other namespace matched cluster-wide",
			rules: Rules{ClusterWide: true},
			pod:   podIn("b", "web"),
			in:    Inputs{Bindings: []*podidv1.AzureIdentityBinding{bind("a", "b", podidv1.AzureIdentityBindingSpec{AzureIdentity: "i", Selector: "web"})}, Identities: identities(id("a", "i", nil, valid))},
			want:  []string{"a/i"},
		},
		{
			name:  "namespaced identity stays home even cluster-wide",
			rules: Rules{ClusterWide: true},
			pod:   podIn("b", "web"),
			in:    Inputs{Bindings: []*podidv1.AzureIdentityBinding{bind("a", "b", podidv1.AzureIdentityBindingSpec{AzureIdentity: "i", Selector: "web"})}, Identities: identities(id("a", "i", namespaced, valid))},
		},
		{
			name:         "identity looked up in the binding's namespace only",
			pod:          podIn("a", "web"),
			in:           Inputs{Bindings: []*podidv1.AzureIdentityBinding{bind("a", "b", podidv1.AzureIdentityBindingSpec{AzureIdentity: "i", Selector: "web"})}, Identities: identities(id("z", "i", nil, valid))},
			wantProblems: []string{"IdentityNotFound"},
		},
		{
			name:         "invalid identity reported, not used",
			pod:          podIn("a", "web"),
			in:           Inputs{Bindings: []*podidv1.AzureIdentityBinding{bind("a", "b", podidv1.AzureIdentityBindingSpec{AzureIdentity: "i", Selector: "web"})}, Identities: identities(id("a", "i", nil, podidv1.AzureIdentitySpec{}))},
			wantProblems: []string{"InvalidIdentity"},
		},
		{
			name: "two bindings, one identity: listed once; results sorted",
			pod:  podIn("a", "web"),
			in: Inputs{Bindings: []*podidv1.AzureIdentityBinding{
				bind("a", "b1", podidv1.AzureIdentityBindingSpec{AzureIdentity: "z", Selector: "web"}),
				bind("a", "b2", podidv1.AzureIdentityBindingSpec{AzureIdentity: "i", Selector: "web"}),
				bind("a", "b3", podidv1.AzureIdentityBindingSpec{AzureIdentity: "i", Selector: "web"}),
			}, Identities: identities(id("a", "i", nil, valid), id("a", "z", nil, valid))},
			want: []string{"a/i", "a/z"},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, problems := tt.rules.For(tt.pod, tt.in)
			var names, reasons []string
			for _, m := range got {
				names = append(names, m.Identity.Namespace+"/"+m.Identity.Name)
				if m.Spec.ClientID != cid || m.Spec.LegacyClientID != "" {
					t.Errorf("match spec not normalised: %+v", m.Spec)
				}
			}
			for _, p := range problems {
				reasons = append(reasons, p.Reason)
				if p.Message == "" {
					t.Errorf("problem %s has no message", p.Reason)
				}
			}
			if strings.Join(names, ",") != strings.Join(tt.want, ",") {
				t.Errorf("matches = %v, want %v", names, tt.want)
			}
			if strings.Join(reasons, ",") != strings.Join(tt.wantProblems, ",") {
				t.Errorf("problems = %v, want %v", reasons, tt.wantProblems)
			}
		})
	}
}

func TestEligibleAndExcepted(t *testing.T) {
	base := podIn("a", "web")
	for _, tt := range []struct {
		name   string
		mutate func(*corev1.Pod)
		want   bool
	}{
		{"scheduled and labelled", func(*corev1.Pod) {}, true},
		{"no label", func(p *corev1.Pod) { p.Labels = nil }, false},
		{"unscheduled", func(p *corev1.Pod) { p.Spec.NodeName = "" }, false},
		{"host network", func(p *corev1.Pod) { p.Spec.HostNetwork = true }, false},
		{"succeeded", func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded }, false},
		{"deleting", func(p *corev1.Pod) { p.DeletionTimestamp = &metav1.Time{} }, false},
	} {
		p := base.DeepCopy()
		tt.mutate(p)
		if got := Eligible(p); got != tt.want {
			t.Errorf("%s: Eligible = %v, want %v", tt.name, got, tt.want)
		}
	}
	ex := &podidv1.AzurePodIdentityException{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "e"},
		Spec: podidv1.AzurePodIdentityExceptionSpec{LegacyPodLabels: map[string]podidv1.LabelValue{"noaad": "true"}}}
	p := base.DeepCopy()
	p.Labels["noaad"] = "true"
	if ExceptedBy(p, []*podidv1.AzurePodIdentityException{ex}) != ex {
		t.Error("pod with noaad=true not excepted")
	}
	p.Namespace = "b"
	if ExceptedBy(p, []*podidv1.AzurePodIdentityException{ex}) != nil {
		t.Error("exception applied across namespaces")
	}
}

func TestValidate(t *testing.T) {
	rid := "/subscriptions/s/resourcegroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/x"
	for _, tt := range []struct {
		name string
		spec podidv1.AzureIdentitySpec
		err  string
	}{
		{"msi ok", podidv1.AzureIdentitySpec{ClientID: cid, ResourceID: rid}, ""},
		{"msi resource id case-insensitive", podidv1.AzureIdentitySpec{ClientID: cid, ResourceID: strings.ToUpper(rid)}, ""},
		{"msi no client id", podidv1.AzureIdentitySpec{ResourceID: rid}, "clientID is empty"},
		{"msi bad resource id", podidv1.AzureIdentitySpec{ClientID: cid, ResourceID: "/subscriptions/s/x"}, "not a user-assigned identity id"},
		{"sp ok", podidv1.AzureIdentitySpec{Type: 1, ClientID: cid, TenantID: cid, ClientPassword: corev1.SecretReference{Name: "s"}}, ""},
		{"sp no secret", podidv1.AzureIdentitySpec{Type: 1, ClientID: cid, TenantID: cid}, "client secret"},
		{"cert no secret", podidv1.AzureIdentitySpec{Type: 2, ClientID: cid, TenantID: cid}, "certificate"},
		{"bad tenant", podidv1.AzureIdentitySpec{Type: 1, ClientID: cid, TenantID: "contoso", ClientPassword: corev1.SecretReference{Name: "s"}}, "tenantID"},
		{"unknown type", podidv1.AzureIdentitySpec{Type: 7, ClientID: cid}, "unknown"},
	} {
		err := Validate(tt.spec)
		switch {
		case tt.err == "" && err != nil:
			t.Errorf("%s: unexpected error %v", tt.name, err)
		case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
			t.Errorf("%s: error %v, want it to mention %q", tt.name, err, tt.err)
		}
	}
}
