package controller_test

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	podidv1 "github.com/podid/podid/api/v1"
	"github.com/podid/podid/internal/binding"
	"github.com/podid/podid/internal/controller"
)

const clientA = "11111111-1111-1111-1111-111111111111"

func TestAssignmentLifecycle(t *testing.T) {
	e := env.Need(t)
	startController(t, controller.Options{})
	ns := e.Namespace(t)
	ctx := t.Context()

	id, b := identity(ns, "id1", clientA), bindingObj(ns, "b1", "id1", "app1")
	p := pod(ns, "p1", "node-a", map[string]string{podidv1.PodLabelKey: "app1"})
	unscheduled := pod(ns, "p2", "", map[string]string{podidv1.PodLabelKey: "app1"})
	create(t, id, b, p, unscheduled)

	name := controller.AssignmentName(ns, "p1", ns, "id1")
	got := waitAssigned(t, ns, name)[name]
	if got.Status.Status != podidv1.AssignedIDAssigned || got.Spec.NodeName != "node-a" || got.Spec.Pod != "p1" ||
		got.Spec.PodNamespace != ns || got.Spec.PodUID != string(p.UID) ||
		got.Spec.AzureIdentityRef.Spec.ClientID != clientA || got.Spec.AzureBindingRef.Name != "b1" ||
		got.Labels[controller.LabelNode] != "node-a" || got.Labels[controller.LabelPodUID] != string(p.UID) {
		t.Fatalf("assignment does not describe the pod: %+v", got)
	}

	// Scheduling the second pod (as the scheduler does, through pods/binding) assigns it too.
	if err := e.Client.SubResource("binding").Create(ctx, unscheduled, &corev1.Binding{
		ObjectMeta: metav1.ObjectMeta{Name: "p2"}, Target: corev1.ObjectReference{Kind: "Node", Name: "node-b"},
	}); err != nil {
		t.Fatalf("bind p2: %v", err)
	}
	name2 := controller.AssignmentName(ns, "p2", ns, "id1")
	waitAssigned(t, ns, name, name2)

	steps := []struct {
		name  string
		do    func() error
		after []string
	}{
		{"label changed away", func() error { return relabel(ctx, ns, "p1", "other") }, []string{name2}},
		{"label changed back", func() error { return relabel(ctx, ns, "p1", "app1") }, []string{name, name2}},
		{"binding deleted", func() error { return e.Client.Delete(ctx, bindingObj(ns, "b1", "", "")) }, nil},
		{"binding recreated", func() error { return e.Client.Create(ctx, bindingObj(ns, "b1", "id1", "app1")) }, []string{name, name2}},
		{"identity deleted", func() error { return e.Client.Delete(ctx, identity(ns, "id1", "")) }, nil},
		{"identity recreated", func() error { return e.Client.Create(ctx, identity(ns, "id1", clientA)) }, []string{name, name2}},
		{"pod deleted", func() error {
			return e.Client.Delete(ctx, pod(ns, "p2", "", nil), client.GracePeriodSeconds(0))
		}, []string{name}},
		{"assignment deleted by hand is restored", func() error {
			return e.Client.Delete(ctx, &podidv1.AzureAssignedIdentity{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}})
		}, []string{name}},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		waitAssigned(t, ns, s.after...)
	}
}

func relabel(ctx context.Context, ns, name, sel string) error {
	var p corev1.Pod
	if err := env.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, &p); err != nil {
		return err
	}
	p.Labels[podidv1.PodLabelKey] = sel
	return env.Client.Update(ctx, &p)
}

func TestNamespacedAndClusterWide(t *testing.T) {
	e := env.Need(t)
	idNS, podNS := e.Namespace(t), e.Namespace(t)
	nsd := identity(idNS, "nsd", clientA)
	nsd.Annotations = map[string]string{podidv1.BehaviorAnnotation: podidv1.BehaviorNamespaced}
	create(t,
		identity(idNS, "shared", clientA), bindingObj(idNS, "shared", "shared", "web"),
		nsd, bindingObj(idNS, "nsd", "nsd", "web"),
		pod(podNS, "web", "node-a", map[string]string{podidv1.PodLabelKey: "web"}),
		pod(idNS, "local", "node-a", map[string]string{podidv1.PodLabelKey: "web"}),
	)
	local := []string{controller.AssignmentName(idNS, "local", idNS, "nsd"), controller.AssignmentName(idNS, "local", idNS, "shared")}

	r := startController(t, controller.Options{})
	waitAssigned(t, idNS, local...)
	if got := assignments(t.Context(), t, podNS); len(got) != 0 {
		t.Fatalf("namespaced mode assigned a binding from another namespace: %v", got)
	}
	r.stop()

	startController(t, controller.Options{Rules: binding.Rules{ClusterWide: true}})
	// Cluster-wide: the other namespace's binding applies, except for the
	// identity that asked to stay in its namespace.
	waitAssigned(t, podNS, controller.AssignmentName(podNS, "web", idNS, "shared"))
	waitAssigned(t, idNS, local...)
}

func TestExceptions(t *testing.T) {
	e := env.Need(t)
	startController(t, controller.Options{})
	ns := e.Namespace(t)
	ctx := t.Context()
	ex := &podidv1.AzurePodIdentityException{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "no-aad"},
		Spec:       podidv1.AzurePodIdentityExceptionSpec{PodLabels: map[string]podidv1.LabelValue{"noaad": "true"}},
	}
	create(t, identity(ns, "id1", clientA), bindingObj(ns, "b1", "id1", "app"), ex,
		pod(ns, "excepted", "node-a", map[string]string{podidv1.PodLabelKey: "app", "noaad": "true"}),
		pod(ns, "normal", "node-a", map[string]string{podidv1.PodLabelKey: "app", "noaad": "false"}),
	)
	normal := controller.AssignmentName(ns, "normal", ns, "id1")
	waitAssigned(t, ns, normal)

	eventually(t, "exception status names the excepted pod", func(ctx context.Context) (bool, error) {
		var got podidv1.AzurePodIdentityException
		if err := e.Client.Get(ctx, client.ObjectKeyFromObject(ex), &got); err != nil {
			return false, err
		}
		c := meta.FindStatusCondition(got.Status.Conditions, podidv1.ConditionActive)
		return c != nil && c.Status == metav1.ConditionTrue && len(got.Status.ExceptedPods) == 1 && got.Status.ExceptedPods[0] == "excepted", nil
	})
	waitEvent(t, ns, "excepted", "IdentityExcepted", "remove the matching label")

	// Dropping the label ends the exception for that pod.
	var p corev1.Pod
	if err := e.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: "excepted"}, &p); err != nil {
		t.Fatal(err)
	}
	delete(p.Labels, "noaad")
	if err := e.Client.Update(ctx, &p); err != nil {
		t.Fatal(err)
	}
	waitAssigned(t, ns, normal, controller.AssignmentName(ns, "excepted", ns, "id1"))
}

func waitEvent(t *testing.T, ns, object, reason, msgPart string) {
	t.Helper()
	eventually(t, "event "+reason+" on "+object, func(ctx context.Context) (bool, error) {
		var l corev1.EventList
		if err := env.Client.List(ctx, &l, client.InNamespace(ns)); err != nil {
			return false, err
		}
		for _, ev := range l.Items {
			if ev.InvolvedObject.Name == object && ev.Reason == reason && strings.Contains(ev.Message, msgPart) {
				return true, nil
			}
		}
		return false, nil
	})
}

func TestInvalidIdentities(t *testing.T) {
	e := env.Need(t)
	startController(t, controller.Options{})
	ns := e.Namespace(t)
	for _, tt := range []struct {
		name string
		spec podidv1.AzureIdentitySpec
		hint string
	}{
		{"missing-client-id", podidv1.AzureIdentitySpec{Type: 0}, "spec.clientID is empty"},
		{"bad-resource-id", podidv1.AzureIdentitySpec{Type: 0, ClientID: clientA, ResourceID: "/subscriptions/x/identities/y"}, "is not a user-assigned identity id"},
		{"client-id-not-guid", podidv1.AzureIdentitySpec{Type: 0, ClientID: "my-app"}, "is not a GUID"},
		{"sp-secret-no-ref", podidv1.AzureIdentitySpec{Type: 1, ClientID: clientA, TenantID: clientA}, "Secret reference holding its client secret"},
		{"sp-cert-no-ref", podidv1.AzureIdentitySpec{Type: 2, ClientID: clientA, TenantID: clientA}, "Secret reference holding its certificate"},
		{"sp-no-tenant", podidv1.AzureIdentitySpec{Type: 1, ClientID: clientA, ClientPassword: corev1.SecretReference{Name: "s"}}, "spec.tenantID is empty"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			sel := tt.name
			create(t,
				&podidv1.AzureIdentity{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: tt.name}, Spec: tt.spec},
				bindingObj(ns, tt.name, tt.name, sel),
				pod(ns, tt.name, "node-a", map[string]string{podidv1.PodLabelKey: sel}),
			)
			waitCondition(t, &podidv1.AzureIdentity{}, ns, tt.name, podidv1.ConditionValid, "InvalidIdentity", tt.hint)
			waitCondition(t, &podidv1.AzureIdentityBinding{}, ns, tt.name, podidv1.ConditionReady, "InvalidIdentity", tt.hint)
			waitEvent(t, ns, tt.name, "InvalidIdentity", tt.hint)
		})
	}
	t.Run("binding-to-missing-identity", func(t *testing.T) {
		create(t, bindingObj(ns, "dangling", "nope", "dangling"))
		waitCondition(t, &podidv1.AzureIdentityBinding{}, ns, "dangling", podidv1.ConditionReady, "IdentityNotFound", `AzureIdentity "nope" does not exist`)
	})
	t.Run("unknown-type-rejected-at-apply", func(t *testing.T) {
		err := e.Client.Create(t.Context(), &podidv1.AzureIdentity{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "type3"}, Spec: podidv1.AzureIdentitySpec{Type: 3}})
		if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "spec.type") {
			t.Fatalf("want an Invalid error naming spec.type, got %v", err)
		}
	})
	// None of the pods selecting an invalid identity got it.
	if got := assignments(t.Context(), t, ns); len(got) != 0 {
		t.Fatalf("invalid identities were assigned: %v", got)
	}
}

type conditioned interface {
	client.Object
}

func waitCondition(t *testing.T, obj conditioned, ns, name, typ, reason, msgPart string) {
	t.Helper()
	eventually(t, typ+" condition of "+name, func(ctx context.Context) (bool, error) {
		if err := env.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, obj); err != nil {
			return false, err
		}
		var conds []metav1.Condition
		switch o := obj.(type) {
		case *podidv1.AzureIdentity:
			conds = o.Status.Conditions
		case *podidv1.AzureIdentityBinding:
			conds = o.Status.Conditions
		}
		c := meta.FindStatusCondition(conds, typ)
		return c != nil && c.Status == metav1.ConditionFalse && c.Reason == reason && strings.Contains(c.Message, msgPart), nil
	})
}

// reconciles sums controller_runtime_reconcile_total for one controller.
func reconciles(t *testing.T, name string) float64 {
	t.Helper()
	mfs, err := ctrlmetrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != "controller_runtime_reconcile_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "controller" && l.GetValue() == name {
					sum += m.GetCounter().GetValue()
				}
			}
		}
	}
	return sum
}

func TestRestartWithExistingStateWritesNothing(t *testing.T) {
	e := env.Need(t)
	ns := e.Namespace(t)
	first := startController(t, controller.Options{})
	var want []string
	objs := []client.Object{
		identity(ns, "id1", clientA), bindingObj(ns, "b1", "id1", "app"),
		&podidv1.AzureIdentity{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "broken"}},
		bindingObj(ns, "b2", "broken", "app"),
		&podidv1.AzurePodIdentityException{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "ex"},
			Spec: podidv1.AzurePodIdentityExceptionSpec{PodLabels: map[string]podidv1.LabelValue{"skip": "yes"}}},
		pod(ns, "skipped", "node-a", map[string]string{podidv1.PodLabelKey: "app", "skip": "yes"}),
	}
	for _, n := range []string{"a", "b", "c", "d", "e"} {
		objs = append(objs, pod(ns, n, "node-a", map[string]string{podidv1.PodLabelKey: "app"}))
		want = append(want, controller.AssignmentName(ns, n, ns, "id1"))
	}
	create(t, objs...)
	waitAssigned(t, ns, want...)
	waitCondition(t, &podidv1.AzureIdentityBinding{}, ns, "b2", podidv1.ConditionReady, "InvalidIdentity", "clientID")
	eventually(t, "exception status", func(ctx context.Context) (bool, error) {
		var ex podidv1.AzurePodIdentityException
		err := e.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: "ex"}, &ex)
		return err == nil && len(ex.Status.ExceptedPods) == 1, err
	})
	first.stop()

	before := reconciles(t, "podidentity")
	beforeStatus := reconciles(t, "bindingstatus") + reconciles(t, "identitystatus") + reconciles(t, "exceptionstatus")
	second := startController(t, controller.Options{})
	// Every pod, binding, identity and exception of this test is reconciled
	// again by the new process (other tests' leftovers may add more).
	eventually(t, "the restarted controller to reconcile everything", func(context.Context) (bool, error) {
		status := reconciles(t, "bindingstatus") + reconciles(t, "identitystatus") + reconciles(t, "exceptionstatus")
		return reconciles(t, "podidentity")-before >= 6 && status-beforeStatus >= 5, nil
	})
	if n := second.writes.count(); n != 0 {
		t.Fatalf("restart with unchanged state made %d API writes, want 0", n)
	}
	if got := assignments(t.Context(), t, ns); len(got) != len(want) {
		t.Fatalf("assignments changed across restart: %d, want %d", len(got), len(want))
	}
}

func TestLeaderElection(t *testing.T) {
	e := env.Need(t)
	ns := e.Namespace(t)
	opts := controller.Options{
		LeaderElection: true, LeaderElectionID: "podid-test-" + ns,
		LeaseDuration: 4 * time.Second, RenewDeadline: 3 * time.Second, RetryPeriod: 200 * time.Millisecond,
	}
	a, b := startController(t, opts), startController(t, opts)
	create(t, identity(ns, "id1", clientA), bindingObj(ns, "b1", "id1", "app"),
		pod(ns, "p1", "node-a", map[string]string{podidv1.PodLabelKey: "app"}))
	waitAssigned(t, ns, controller.AssignmentName(ns, "p1", ns, "id1"))

	leader, follower := a, b
	if b.writes.count() > 0 {
		leader, follower = b, a
	}
	if leader.writes.count() == 0 || follower.writes.count() != 0 {
		t.Fatalf("want exactly one replica writing, got %d and %d writes", a.writes.count(), b.writes.count())
	}

	// The leader goes away (releasing its lease, as on a rolling update); the
	// follower takes over and handles new work.
	start := time.Now()
	leader.stop()
	create(t, pod(ns, "p2", "node-a", map[string]string{podidv1.PodLabelKey: "app"}))
	waitAssigned(t, ns, controller.AssignmentName(ns, "p1", ns, "id1"), controller.AssignmentName(ns, "p2", ns, "id1"))
	t.Logf("failover: new pod assigned %v after the leader stopped", time.Since(start).Round(time.Millisecond))
	if follower.writes.count() == 0 {
		t.Fatal("follower never wrote after taking over")
	}
}
