package controller

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	crcontroller "sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	podidv1 "github.com/podid/podid/api/v1"
	"github.com/podid/podid/internal/binding"
)

// maxExceptedPods bounds the pod names an exception's status lists.
const maxExceptedPods = 100

// StatusReconciler keeps the conditions of identities, bindings and
// exceptions, and emits an event whenever one turns bad (or an exception
// starts excepting a pod), so no misconfiguration is silent.
type StatusReconciler struct {
	Client   client.Client
	Recorder record.EventRecorder
	Rules    binding.Rules
}

// SetupWithManager registers one controller per kind.
func (r *StatusReconciler) SetupWithManager(mgr manager.Manager) error {
	c := mgr.GetClient()
	// A few workers each: after a bulk apply, thousands of first conditions
	// are written and each write waits on the API server.
	opts := crcontroller.Options{MaxConcurrentReconciles: 4}
	if err := ctrl.ControllerManagedBy(mgr).Named("identitystatus").
		For(&podidv1.AzureIdentity{}).WithOptions(opts).
		Complete(reconcile.Func(r.reconcileIdentity)); err != nil {
		return err
	}
	bindingsOfIdentity := func(ctx context.Context, o client.Object) []reconcile.Request {
		var bl podidv1.AzureIdentityBindingList
		if err := c.List(ctx, &bl, client.MatchingFields{indexBindingID: key(o.GetNamespace(), o.GetName())}); err != nil {
			log.FromContext(ctx).Error(err, "list bindings of identity")
			return nil
		}
		reqs := make([]reconcile.Request, len(bl.Items))
		for i := range bl.Items {
			reqs[i] = reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&bl.Items[i])}
		}
		return reqs
	}
	if err := ctrl.ControllerManagedBy(mgr).Named("bindingstatus").
		For(&podidv1.AzureIdentityBinding{}).WithOptions(opts).
		Watches(&podidv1.AzureIdentity{}, handler.EnqueueRequestsFromMapFunc(bindingsOfIdentity)).
		Complete(reconcile.Func(r.reconcileBinding)); err != nil {
		return err
	}
	exceptionsOfPod := func(ctx context.Context, o client.Object) []reconcile.Request {
		if _, ok := o.GetLabels()[podidv1.PodLabelKey]; !ok {
			return nil
		}
		var el podidv1.AzurePodIdentityExceptionList
		if err := c.List(ctx, &el, client.InNamespace(o.GetNamespace())); err != nil {
			log.FromContext(ctx).Error(err, "list exceptions")
			return nil
		}
		reqs := make([]reconcile.Request, len(el.Items))
		for i := range el.Items {
			reqs[i] = reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&el.Items[i])}
		}
		return reqs
	}
	return ctrl.ControllerManagedBy(mgr).Named("exceptionstatus").
		For(&podidv1.AzurePodIdentityException{}).WithOptions(opts).
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(exceptionsOfPod), ctrl.WithPredicates(relevantPod())).
		Complete(reconcile.Func(r.reconcileException))
}

func (r *StatusReconciler) reconcileIdentity(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	var id podidv1.AzureIdentity
	if err := r.Client.Get(ctx, req.NamespacedName, &id); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	cond := metav1.Condition{Type: podidv1.ConditionValid, Status: metav1.ConditionTrue, Reason: "Valid",
		Message: fmt.Sprintf("%s identity with client id %s", id.Spec.Normalized().Type, id.Spec.Normalized().ClientID)}
	if err := binding.Validate(id.Spec.Normalized()); err != nil {
		cond = metav1.Condition{Type: podidv1.ConditionValid, Status: metav1.ConditionFalse, Reason: "InvalidIdentity", Message: err.Error()}
	}
	orig := id.DeepCopy()
	if !setCondition(&id.Status.Conditions, cond, id.Generation) {
		return reconcile.Result{}, nil
	}
	if err := r.Client.Status().Patch(ctx, &id, client.MergeFrom(orig), client.FieldOwner(FieldManager)); err != nil {
		return reconcile.Result{}, fmt.Errorf("could not update status of identity %s: %w", req, err)
	}
	if cond.Status == metav1.ConditionFalse {
		r.Recorder.Event(&id, corev1.EventTypeWarning, cond.Reason, cond.Message)
	}
	return reconcile.Result{}, nil
}

func (r *StatusReconciler) reconcileBinding(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	var b podidv1.AzureIdentityBinding
	if err := r.Client.Get(ctx, req.NamespacedName, &b); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	bs := b.Spec.Normalized()
	cond := metav1.Condition{Type: podidv1.ConditionReady, Status: metav1.ConditionTrue, Reason: "Ready",
		Message: fmt.Sprintf("pods labelled %s=%s get identity %s", podidv1.PodLabelKey, bs.Selector, bs.AzureIdentity)}
	var id podidv1.AzureIdentity
	err := r.Client.Get(ctx, types.NamespacedName{Namespace: b.Namespace, Name: bs.AzureIdentity}, &id)
	switch {
	case bs.Selector == "":
		cond.Status, cond.Reason, cond.Message = metav1.ConditionFalse, "NoSelector", "spec.selector is empty: set it to the value of the pods' aadpodidbinding label"
	case bs.AzureIdentity == "":
		cond.Status, cond.Reason, cond.Message = metav1.ConditionFalse, "NoIdentity", "spec.azureIdentity is empty: set it to the name of an AzureIdentity in this namespace"
	case apierrors.IsNotFound(err):
		cond.Status, cond.Reason = metav1.ConditionFalse, "IdentityNotFound"
		cond.Message = fmt.Sprintf("AzureIdentity %q does not exist in namespace %s: create it or fix spec.azureIdentity", bs.AzureIdentity, b.Namespace)
	case err != nil:
		return reconcile.Result{}, fmt.Errorf("could not fetch identity of binding %s: %w", req, err)
	default:
		if verr := binding.Validate(id.Spec.Normalized()); verr != nil {
			cond.Status, cond.Reason = metav1.ConditionFalse, "InvalidIdentity"
			cond.Message = fmt.Sprintf("AzureIdentity %s is invalid: %v", bs.AzureIdentity, verr)
		}
	}
	orig := b.DeepCopy()
	if !setCondition(&b.Status.Conditions, cond, b.Generation) {
		return reconcile.Result{}, nil
	}
	if err := r.Client.Status().Patch(ctx, &b, client.MergeFrom(orig), client.FieldOwner(FieldManager)); err != nil {
		return reconcile.Result{}, fmt.Errorf("could not update status of binding %s: %w", req, err)
	}
	if cond.Status == metav1.ConditionFalse {
		r.Recorder.Event(&b, corev1.EventTypeWarning, cond.Reason, cond.Message)
	}
	return reconcile.Result{}, nil
}

func (r *StatusReconciler) reconcileException(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	var ex podidv1.AzurePodIdentityException
	if err := r.Client.Get(ctx, req.NamespacedName, &ex); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	var pods corev1.PodList
	if err := r.Client.List(ctx, &pods, client.InNamespace(ex.Namespace), client.HasLabels{podidv1.PodLabelKey}); err != nil {
		return reconcile.Result{}, fmt.Errorf("could not list pods in %s: %w", ex.Namespace, err)
	}
	var excepted []*corev1.Pod
	for i := range pods.Items {
		p := &pods.Items[i]
		if binding.Eligible(p) && ex.Spec.Matches(p.Labels) {
			excepted = append(excepted, p)
		}
	}
	sort.Slice(excepted, func(i, j int) bool { return excepted[i].Name < excepted[j].Name })
	names := make([]string, 0, min(len(excepted), maxExceptedPods))
	for _, p := range excepted[:min(len(excepted), maxExceptedPods)] {
		names = append(names, p.Name)
	}
	labels := ex.Spec.Normalized()
	pairs := make([]string, 0, len(labels))
	for k, v := range labels {
		pairs = append(pairs, k+"="+v)
	}
	sort.Strings(pairs)
	cond := metav1.Condition{Type: podidv1.ConditionActive, Status: metav1.ConditionFalse, Reason: "NoPodExcepted",
		Message: "excepts 0 pods"}
	if len(excepted) > 0 {
		cond.Status, cond.Reason = metav1.ConditionTrue, "PodsExcepted"
		cond.Message = fmt.Sprintf("excepts %d pods", len(excepted))
	}
	orig := ex.DeepCopy()
	before := ex.Status.ExceptedPods
	changed := setCondition(&ex.Status.Conditions, cond, ex.Generation)
	if !slices.Equal(before, names) {
		ex.Status.ExceptedPods = names
		changed = true
	}
	if !changed {
		return reconcile.Result{}, nil
	}
	if err := r.Client.Status().Patch(ctx, &ex, client.MergeFrom(orig), client.FieldOwner(FieldManager)); err != nil {
		return reconcile.Result{}, fmt.Errorf("could not update status of exception %s: %w", req, err)
	}
	for _, p := range excepted[:len(names)] {
		if !slices.Contains(before, p.Name) {
			r.Recorder.Eventf(p, corev1.EventTypeNormal, "IdentityExcepted",
				"AzurePodIdentityException %s matches this pod (one of %s), so it gets no identity: remove the matching label from the pod or delete the exception",
				ex.Name, strings.Join(pairs, ", "))
		}
	}
	return reconcile.Result{}, nil
}

// setCondition sets c (keeping LastTransitionTime when the status does not
// change) and reports whether anything changed.
func setCondition(conds *[]metav1.Condition, c metav1.Condition, generation int64) bool {
	c.ObservedGeneration = generation
	if old := meta.FindStatusCondition(*conds, c.Type); old != nil {
		o := *old
		o.LastTransitionTime = metav1.Time{}
		n := c
		n.LastTransitionTime = metav1.Time{}
		if equality.Semantic.DeepEqual(o, n) {
			return false
		}
	}
	meta.SetStatusCondition(conds, c)
	return true
}
