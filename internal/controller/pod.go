package controller

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	ctrl "sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	crcontroller "sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	podidv1 "github.com/podid/podid/api/v1"
	"github.com/podid/podid/internal/binding"
)

// PodReconciler keeps one AzureAssignedIdentity per (pod, identity) the pod may hold.
type PodReconciler struct {
	Client  client.Client
	Rules   binding.Rules
	Metrics *Metrics
	// created remembers assignments this process created that its cache has
	// not shown yet, so a pod reconciled again in that window (a burst of
	// binding events) does not send a create that can only fail with
	// AlreadyExists. Zero value ready.
	created expectations
}

// expectationTTL bounds how long a create is trusted without the cache
// confirming it; after that the reconcile creates again.
const expectationTTL = 30 * time.Second

// expectations is a set of assignment names with the time they were created.
type expectations struct {
	mu sync.Mutex           // protects m
	m  map[string]time.Time // assignment namespace/name → creation time
}

func (e *expectations) add(k string, now time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.m == nil {
		e.m = map[string]time.Time{}
	}
	e.m[k] = now
}

// pending reports whether k was created less than expectationTTL ago and not
// yet observed, and how long that still holds.
func (e *expectations) pending(k string, now time.Time) (bool, time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	t, ok := e.m[k]
	if !ok {
		return false, 0
	}
	if left := expectationTTL - now.Sub(t); left > 0 {
		return true, left
	}
	delete(e.m, k)
	return false, 0
}

func (e *expectations) observed(k string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.m, k)
}

var _ reconcile.Reconciler = &PodReconciler{}

// SetupWithManager watches pods and everything that changes what a pod may hold.
func (r *PodReconciler) SetupWithManager(mgr manager.Manager, workers int) error {
	if workers <= 0 {
		workers = 32
	}
	c := mgr.GetClient()
	bindingPods := func(ctx context.Context, o client.Object) []reconcile.Request {
		b := o.(*podidv1.AzureIdentityBinding)
		ns := b.Namespace
		if r.Rules.ClusterWide {
			ns = ""
		}
		// New selector's pods, plus the pods it granted something before (the
		// selector or identity may just have changed).
		reqs := podsForSelector(ctx, c, ns, b.Spec.Normalized().Selector)
		return append(reqs, podsOfAssignments(ctx, c, indexAssignBinding, key(b.Namespace, b.Name))...)
	}
	identityPods := func(ctx context.Context, o client.Object) []reconcile.Request {
		id := o.(*podidv1.AzureIdentity)
		var bl podidv1.AzureIdentityBindingList
		if err := c.List(ctx, &bl, client.MatchingFields{indexBindingID: key(id.Namespace, id.Name)}, client.UnsafeDisableDeepCopy); err != nil {
			log.FromContext(ctx).Error(err, "list bindings for identity")
		}
		var reqs []reconcile.Request
		for i := range bl.Items {
			reqs = append(reqs, bindingPods(ctx, &bl.Items[i])...)
		}
		return append(reqs, podsOfAssignments(ctx, c, indexAssignID, key(id.Namespace, id.Name))...)
	}
	exceptionPods := func(ctx context.Context, o client.Object) []reconcile.Request {
		var pods corev1.PodList
		if err := c.List(ctx, &pods, client.InNamespace(o.GetNamespace()), client.HasLabels{podidv1.PodLabelKey}, client.UnsafeDisableDeepCopy); err != nil {
			log.FromContext(ctx).Error(err, "list pods for exception")
			return nil
		}
		reqs := make([]reconcile.Request, 0, len(pods.Items))
		for i := range pods.Items {
			reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&pods.Items[i])})
		}
		return reqs
	}
	assignmentPod := func(_ context.Context, o client.Object) []reconcile.Request {
		a := o.(*podidv1.AzureAssignedIdentity)
		return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: a.Spec.PodNamespace, Name: a.Spec.Pod}}}
	}
	return ctrl.ControllerManagedBy(mgr).
		Named("podidentity").
		For(&corev1.Pod{}, ctrl.WithPredicates(relevantPod())).
		Watches(&podidv1.AzureIdentityBinding{}, handler.EnqueueRequestsFromMapFunc(bindingPods)).
		Watches(&podidv1.AzureIdentity{}, handler.EnqueueRequestsFromMapFunc(identityPods)).
		Watches(&podidv1.AzurePodIdentityException{}, handler.EnqueueRequestsFromMapFunc(exceptionPods)).
		Watches(&podidv1.AzureAssignedIdentity{}, handler.EnqueueRequestsFromMapFunc(assignmentPod)).
		WithOptions(crcontroller.Options{MaxConcurrentReconciles: workers}).
		Complete(r)
}

// relevantPod passes pods that carry (or carried) the selector label and pod
// changes that can alter a decision; status-only churn (conditions, container
// states) is dropped.
func relevantPod() predicate.Predicate {
	has := func(o client.Object) bool { _, ok := o.GetLabels()[podidv1.PodLabelKey]; return ok }
	return predicate.Funcs{
		CreateFunc:  func(e event.CreateEvent) bool { return has(e.Object) },
		DeleteFunc:  func(e event.DeleteEvent) bool { return has(e.Object) },
		GenericFunc: func(e event.GenericEvent) bool { return has(e.Object) },
		UpdateFunc: func(e event.UpdateEvent) bool {
			if !has(e.ObjectOld) && !has(e.ObjectNew) {
				return false
			}
			o, n := e.ObjectOld.(*corev1.Pod), e.ObjectNew.(*corev1.Pod)
			return !equality.Semantic.DeepEqual(o.Labels, n.Labels) ||
				o.Spec.NodeName != n.Spec.NodeName ||
				o.Status.Phase != n.Status.Phase ||
				(o.DeletionTimestamp == nil) != (n.DeletionTimestamp == nil) ||
				o.UID != n.UID
		},
	}
}

// Reconcile makes the pod's AzureAssignedIdentities match what it may hold now.
func (r *PodReconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	var existing podidv1.AzureAssignedIdentityList
	if err := r.Client.List(ctx, &existing, client.InNamespace(req.Namespace), client.MatchingFields{indexPodKey: req.String()}, client.UnsafeDisableDeepCopy); err != nil {
		return reconcile.Result{}, fmt.Errorf("could not list assignments of pod %s: %w", req, err)
	}
	var pod corev1.Pod
	desired := map[string]*podidv1.AzureAssignedIdentity{}
	switch err := r.Client.Get(ctx, req.NamespacedName, &pod); {
	case apierrors.IsNotFound(err):
		// Pod gone: every assignment goes.
	case err != nil:
		return reconcile.Result{}, fmt.Errorf("could not fetch pod %s: %w", req, err)
	default:
		d, err := r.desired(ctx, &pod)
		if err != nil {
			return reconcile.Result{}, err
		}
		desired = d
	}

	for i := range existing.Items {
		cur := &existing.Items[i]
		r.created.observed(key(cur.Namespace, cur.Name))
		want, ok := desired[cur.Name]
		if !ok {
			if err := r.Client.Delete(ctx, cur, client.Preconditions{UID: &cur.UID}); err != nil && !apierrors.IsNotFound(err) {
				return reconcile.Result{}, fmt.Errorf("could not delete assignment %s/%s: %w", cur.Namespace, cur.Name, err)
			}
			r.Metrics.write("delete")
			log.FromContext(ctx).V(1).Info("unassigned identity", "assignment", cur.Name)
			continue
		}
		delete(desired, cur.Name)
		if upToDate(cur, want) {
			continue
		}
		if cur.Spec.PodUID != want.Spec.PodUID {
			// Another incarnation of the pod: replace, never re-point, so the
			// record's UID and creation time describe this pod.
			if err := r.Client.Delete(ctx, cur, client.Preconditions{UID: &cur.UID}); err != nil && !apierrors.IsNotFound(err) {
				return reconcile.Result{}, fmt.Errorf("could not delete stale assignment %s/%s: %w", cur.Namespace, cur.Name, err)
			}
			r.Metrics.write("delete")
			desired[cur.Name] = want
			continue
		}
		// cur is the cache's trimmed copy: everything but its metadata is
		// replaced, and its cache-only annotations never reach the server.
		upd := cur.DeepCopy()
		upd.Labels, upd.OwnerReferences, upd.Spec, upd.Status = want.Labels, want.OwnerReferences, want.Spec, want.Status
		upd.Annotations = serverAnnotations(cur.Annotations)
		if err := r.Client.Update(ctx, upd, client.FieldOwner(FieldManager)); err != nil {
			return reconcile.Result{}, fmt.Errorf("could not update assignment %s/%s: %w", cur.Namespace, cur.Name, err)
		}
		r.Metrics.write("update")
	}
	var requeue time.Duration
	for _, want := range desired {
		k := key(want.Namespace, want.Name)
		if wait, left := r.created.pending(k, time.Now()); wait {
			// Created moments ago; its watch event brings us back. The requeue
			// covers an object deleted before our cache ever saw it.
			requeue = max(requeue, left)
			continue
		}
		if err := r.Client.Create(ctx, want, client.FieldOwner(FieldManager)); err != nil {
			if apierrors.IsAlreadyExists(err) {
				// Our cache lags our own earlier write; the watch event will requeue.
				continue
			}
			return reconcile.Result{}, fmt.Errorf("could not create assignment %s/%s: %w", want.Namespace, want.Name, err)
		}
		r.created.add(k, time.Now())
		r.Metrics.write("create")
		log.FromContext(ctx).V(1).Info("assigned identity", "assignment", want.Name, "identity", want.Spec.AzureIdentityRef.Name)
	}
	return reconcile.Result{RequeueAfter: requeue}, nil
}

// desired computes the assignments pod should have, keyed by object name.
func (r *PodReconciler) desired(ctx context.Context, pod *corev1.Pod) (map[string]*podidv1.AzureAssignedIdentity, error) {
	out := map[string]*podidv1.AzureAssignedIdentity{}
	if !binding.Eligible(pod) {
		return out, nil
	}
	in, err := r.Rules.Load(ctx, r.Client, pod)
	if err != nil {
		return nil, fmt.Errorf("could not read what pod %s/%s may hold: %w", pod.Namespace, pod.Name, err)
	}
	if binding.ExceptedBy(pod, in.Exceptions) != nil {
		return out, nil
	}
	matches, _ := r.Rules.For(pod, in) // problems are reported on the binding's status
	for _, m := range matches {
		a := assignment(pod, m)
		out[a.Name] = a
	}
	return out, nil
}

// AssignmentName is the object name of the assignment of identity (idNS/idName)
// to pod (podNS/podName): "<pod>-<podns>-<identity>" as in AAD Pod Identity,
// with the identity's namespace added when it differs, and a hash suffix when
// the result would exceed the name limit.
func AssignmentName(podNS, podName, idNS, idName string) string {
	n := podName + "-" + podNS + "-" + idName
	if idNS != podNS {
		n = podName + "-" + podNS + "-" + idNS + "-" + idName
	}
	if len(n) <= validation.DNS1123SubdomainMaxLength {
		return n
	}
	sum := sha256.Sum256([]byte(n))
	return n[:validation.DNS1123SubdomainMaxLength-17] + "-" + hex.EncodeToString(sum[:8])
}

func assignment(pod *corev1.Pod, m binding.Match) *podidv1.AzureAssignedIdentity {
	labels := map[string]string{
		LabelPodUID:   string(pod.UID),
		LabelIdentity: m.Identity.Name,
	}
	if len(validation.IsValidLabelValue(pod.Spec.NodeName)) == 0 {
		labels[LabelNode] = pod.Spec.NodeName
	}
	if len(validation.IsValidLabelValue(m.Identity.Name)) != 0 {
		delete(labels, LabelIdentity)
	}
	return &podidv1.AzureAssignedIdentity{
		ObjectMeta: metav1.ObjectMeta{
			Name:      AssignmentName(pod.Namespace, pod.Name, m.Identity.Namespace, m.Identity.Name),
			Namespace: pod.Namespace,
			Labels:    labels,
			// Lets the garbage collector remove the record if the pod goes while
			// no controller runs; the controller deletes it itself otherwise.
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "v1", Kind: "Pod", Name: pod.Name, UID: pod.UID,
			}},
		},
		Spec: podidv1.AzureAssignedIdentitySpec{
			AzureIdentityRef: &podidv1.IdentityRef{Name: m.Identity.Name, Namespace: m.Identity.Namespace, Spec: m.Spec},
			AzureBindingRef:  &podidv1.BindingRef{Name: m.Binding.Name, Namespace: m.Binding.Namespace, Spec: m.Binding.Spec.Normalized()},
			Pod:              pod.Name,
			PodUID:           string(pod.UID),
			PodNamespace:     pod.Namespace,
			NodeName:         pod.Spec.NodeName,
		},
		// No node attachment is needed: once recorded, the agent serves it.
		Status: podidv1.AzureAssignedIdentityStatus{Status: podidv1.AssignedIDAssigned},
	}
}
