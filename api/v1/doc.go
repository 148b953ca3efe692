// Package v1 holds the aadpodidentity.k8s.io/v1 API: AzureIdentity,
// AzureIdentityBinding, AzureAssignedIdentity and AzurePodIdentityException,
// wire-compatible with AAD Pod Identity so existing manifests apply unchanged.
//
// Manifests written before 2020 use capitalised keys (ResourceID, ClientID,
// AzureIdentity, Selector, PodLabels …). The CRD schema declares those keys
// too, so the API server stores them instead of pruning them, and a CEL rule
// rejects a manifest that gives both spellings with different values. Readers
// never look at the raw fields: they call Normalized(), which folds the legacy
// spelling into the canonical one.
//
// +kubebuilder:object:generate=true
// +groupName=aadpodidentity.k8s.io
package v1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the API group and version of these types.
	GroupVersion = schema.GroupVersion{Group: "aadpodidentity.k8s.io", Version: "v1"}

	// SchemeBuilder registers the types with a runtime.Scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the types in this group-version to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

func init() {
	SchemeBuilder.Register(
		&AzureIdentity{}, &AzureIdentityList{},
		&AzureIdentityBinding{}, &AzureIdentityBindingList{},
		&AzureAssignedIdentity{}, &AzureAssignedIdentityList{},
		&AzurePodIdentityException{}, &AzurePodIdentityExceptionList{},
	)
}
