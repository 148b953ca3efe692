package binding

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	podidv1 "github.com/podid/podid/api/v1"
)

// SelectorIndex is the cache field index of AzureIdentityBindings by their
// normalised selector, which Load reads (IndexBindings registers it).
const SelectorIndex = "podid.selector"

// SelectorOf is SelectorIndex's index function.
func SelectorOf(o client.Object) []string {
	if s := o.(*podidv1.AzureIdentityBinding).Spec.Normalized().Selector; s != "" {
		return []string{s}
	}
	return nil
}

// IndexBindings registers SelectorIndex with a cache before it starts.
func IndexBindings(ctx context.Context, idx client.FieldIndexer) error {
	if err := idx.IndexField(ctx, &podidv1.AzureIdentityBinding{}, SelectorIndex, SelectorOf); err != nil {
		return fmt.Errorf("index AzureIdentityBindings by selector: %w", err)
	}
	return nil
}

// Load reads from a cache (with SelectorIndex) the Inputs of a decision
// about pod: the exceptions in its namespace, the bindings whose selector
// is its aadpodidbinding label (in its namespace unless ClusterWide), and
// the identities those bindings name. It runs once per pod reconcile and
// once per IMDS request, so it reads only those objects, and without deep
// copies: the Inputs point into the cache and must not be modified.
func (r Rules) Load(ctx context.Context, c client.Reader, pod *corev1.Pod) (Inputs, error) {
	in := Inputs{Identities: map[types.NamespacedName]*podidv1.AzureIdentity{}}
	var exl podidv1.AzurePodIdentityExceptionList
	if err := c.List(ctx, &exl, client.InNamespace(pod.Namespace), client.UnsafeDisableDeepCopy); err != nil {
		return in, fmt.Errorf("list AzurePodIdentityExceptions in %s: %w", pod.Namespace, err)
	}
	for i := range exl.Items {
		in.Exceptions = append(in.Exceptions, &exl.Items[i])
	}
	opts := []client.ListOption{client.MatchingFields{SelectorIndex: pod.Labels[podidv1.PodLabelKey]}, client.UnsafeDisableDeepCopy}
	if !r.ClusterWide {
		opts = append(opts, client.InNamespace(pod.Namespace))
	}
	var bl podidv1.AzureIdentityBindingList
	if err := c.List(ctx, &bl, opts...); err != nil {
		return in, fmt.Errorf("list AzureIdentityBindings for pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	for i := range bl.Items {
		b := &bl.Items[i]
		in.Bindings = append(in.Bindings, b)
		k := types.NamespacedName{Namespace: b.Namespace, Name: b.Spec.Normalized().AzureIdentity}
		if _, done := in.Identities[k]; done || k.Name == "" {
			continue
		}
		var id podidv1.AzureIdentity
		switch err := c.Get(ctx, k, &id); {
		case apierrors.IsNotFound(err):
			// For reports the binding's missing identity.
		case err != nil:
			return in, fmt.Errorf("get AzureIdentity %s: %w", k, err)
		default:
			in.Identities[k] = &id
		}
	}
	return in, nil
}
