package controller

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	podidv1 "github.com/podid/podid/api/v1"
	"github.com/podid/podid/internal/binding"
)

// FieldManager is the name podid controller writes under.
const FieldManager = "podid-controller"

// Labels on AzureAssignedIdentity objects, for kubectl -l and for the agent.
const (
	LabelPodUID   = "podid.dev/pod-uid"
	LabelNode     = "podid.dev/node"
	LabelIdentity = "podid.dev/identity"
)

// Cache index names.
const (
	indexPodKey        = "podid.pod"      // AzureAssignedIdentity → pod namespace/name
	indexAssignBinding = "podid.binding"  // AzureAssignedIdentity → binding namespace/name
	indexAssignID      = "podid.identity" // AzureAssignedIdentity → identity namespace/name
	indexBindingID     = "podid.bindsid"  // AzureIdentityBinding → identity namespace/name
)

// The controller's RBAC, generated into deploy/controller/role.yaml. It never
// reads Secrets and writes pods never.
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch
// +kubebuilder:rbac:groups="events.k8s.io",resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=aadpodidentity.k8s.io,resources=azureidentities;azureidentitybindings;azurepodidentityexceptions,verbs=get;list;watch
// +kubebuilder:rbac:groups=aadpodidentity.k8s.io,resources=azureidentities/status;azureidentitybindings/status;azurepodidentityexceptions/status,verbs=get;patch;update
// +kubebuilder:rbac:groups=aadpodidentity.k8s.io,resources=azureassignedidentities,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=coordination.k8s.io,resources=leases,verbs=get;list;watch;create;update;patch,namespace=podid-system

// Config is what the reconcilers need.
type Config struct {
	Client   client.Client // reads from the manager's cache
	Recorder record.EventRecorder
	Rules    binding.Rules
	Metrics  *Metrics
	// MaxConcurrentReconciles bounds parallel pod reconciles.
	MaxConcurrentReconciles int
}

// Setup registers the indexes and reconcilers with mgr.
func Setup(ctx context.Context, mgr ctrl.Manager, c Config) error {
	if err := addIndexes(ctx, mgr); err != nil {
		return err
	}
	pods := &PodReconciler{Client: c.Client, Rules: c.Rules, Metrics: c.Metrics}
	if err := pods.SetupWithManager(mgr, c.MaxConcurrentReconciles); err != nil {
		return fmt.Errorf("set up pod reconciler: %w", err)
	}
	st := &StatusReconciler{Client: c.Client, Recorder: c.Recorder, Rules: c.Rules}
	if err := st.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("set up status reconcilers: %w", err)
	}
	return nil
}

func key(ns, name string) string { return ns + "/" + name }

func addIndexes(ctx context.Context, mgr ctrl.Manager) error {
	idx := mgr.GetFieldIndexer()
	type ix struct {
		obj   client.Object
		name  string
		value func(client.Object) []string
	}
	for _, i := range []ix{
		{&podidv1.AzureAssignedIdentity{}, indexPodKey, func(o client.Object) []string {
			a := o.(*podidv1.AzureAssignedIdentity)
			return []string{key(a.Spec.PodNamespace, a.Spec.Pod)}
		}},
		{&podidv1.AzureAssignedIdentity{}, indexAssignBinding, func(o client.Object) []string {
			if k := assignmentBinding(o.(*podidv1.AzureAssignedIdentity)); k != "" {
				return []string{k}
			}
			return nil
		}},
		{&podidv1.AzureAssignedIdentity{}, indexAssignID, func(o client.Object) []string {
			if k := assignmentIdentity(o.(*podidv1.AzureAssignedIdentity)); k != "" {
				return []string{k}
			}
			return nil
		}},
		{&podidv1.AzureIdentityBinding{}, binding.SelectorIndex, binding.SelectorOf},
		{&podidv1.AzureIdentityBinding{}, indexBindingID, func(o client.Object) []string {
			b := o.(*podidv1.AzureIdentityBinding)
			if id := b.Spec.Normalized().AzureIdentity; id != "" {
				return []string{key(b.Namespace, id)}
			}
			return nil
		}},
	} {
		if err := idx.IndexField(ctx, i.obj, i.name, i.value); err != nil {
			return fmt.Errorf("index %s: %w", i.name, err)
		}
	}
	return nil
}

// podsForSelector lists the keys of pods carrying aadpodidbinding=sel, in ns
// (all namespaces when ns is "").
func podsForSelector(ctx context.Context, c client.Reader, ns, sel string) []reconcile.Request {
	if sel == "" {
		return nil
	}
	var pods corev1.PodList
	opts := []client.ListOption{client.MatchingLabels{podidv1.PodLabelKey: sel}, client.UnsafeDisableDeepCopy}
	if ns != "" {
		opts = append(opts, client.InNamespace(ns))
	}
	if err := c.List(ctx, &pods, opts...); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "list pods for selector", "selector", sel)
		return nil
	}
	reqs := make([]reconcile.Request, 0, len(pods.Items))
	for i := range pods.Items {
		reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: pods.Items[i].Namespace, Name: pods.Items[i].Name}})
	}
	return reqs
}

// podsOfAssignments lists the pods of assignments whose index field equals v.
func podsOfAssignments(ctx context.Context, c client.Reader, index, v string) []reconcile.Request {
	var l podidv1.AzureAssignedIdentityList
	if err := c.List(ctx, &l, client.MatchingFields{index: v}, client.UnsafeDisableDeepCopy); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "list assignments", "index", index)
		return nil
	}
	reqs := make([]reconcile.Request, 0, len(l.Items))
	for i := range l.Items {
		reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: l.Items[i].Spec.PodNamespace, Name: l.Items[i].Spec.Pod}})
	}
	return reqs
}
