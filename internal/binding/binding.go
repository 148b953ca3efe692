package binding

import (
	"fmt"
	"regexp"
	"sort"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	podidv1 "github.com/podid/podid/api/v1"
)

// Rules are the matching policy.
type Rules struct {
	// ClusterWide lets a binding select pods in any namespace (the legacy AAD
	// Pod Identity default). Off by default: a pod only matches bindings in its
	// own namespace. An identity annotated Behavior: namespaced stays in its
	// namespace either way.
	ClusterWide bool
}

// Match is one identity a pod may hold, and the binding that grants it.
type Match struct {
	Identity *podidv1.AzureIdentity
	Binding  *podidv1.AzureIdentityBinding
	// Spec is the identity's normalised spec.
	Spec podidv1.AzureIdentitySpec
}

// Inputs are the objects a decision depends on. Identities are keyed by
// namespace/name.
type Inputs struct {
	Bindings   []*podidv1.AzureIdentityBinding
	Identities map[types.NamespacedName]*podidv1.AzureIdentity
	// Exceptions must be those in the pod's namespace.
	Exceptions []*podidv1.AzurePodIdentityException
}

// Eligible reports whether a pod can hold identities at all: it carries the
// selector label, is scheduled, is not finished or being deleted, and does not
// share the node's network (its traffic could not be told from the node's).
func Eligible(pod *corev1.Pod) bool {
	if pod.Labels[podidv1.PodLabelKey] == "" || pod.Spec.NodeName == "" || pod.DeletionTimestamp != nil {
		return false
	}
	if pod.Spec.HostNetwork {
		return false
	}
	return pod.Status.Phase != corev1.PodSucceeded && pod.Status.Phase != corev1.PodFailed
}

// ExceptedBy returns the exception (in the pod's namespace) that exempts the
// pod, or nil.
func ExceptedBy(pod *corev1.Pod, exceptions []*podidv1.AzurePodIdentityException) *podidv1.AzurePodIdentityException {
	for _, e := range exceptions {
		if e.Namespace == pod.Namespace && e.Spec.Matches(pod.Labels) {
			return e
		}
	}
	return nil
}

// Problem explains why a binding selecting a pod grants nothing.
type Problem struct {
	Binding  *podidv1.AzureIdentityBinding
	Identity *podidv1.AzureIdentity // nil when the identity does not exist
	Reason   string                 // CamelCase, for events and conditions
	Message  string                 // names the fix
}

// For returns the identities the pod may hold, sorted by identity
// namespace/name, and the problems of bindings that select it but grant
// nothing. It does not look at exceptions or eligibility; callers check those
// first.
func (r Rules) For(pod *corev1.Pod, in Inputs) ([]Match, []Problem) {
	sel := pod.Labels[podidv1.PodLabelKey]
	var (
		matches  []Match
		problems []Problem
		seen     = map[types.NamespacedName]bool{}
	)
	for _, b := range in.Bindings {
		bs := b.Spec.Normalized()
		if bs.Selector == "" || bs.Selector != sel {
			continue
		}
		if !r.ClusterWide && b.Namespace != pod.Namespace {
			continue
		}
		key := types.NamespacedName{Namespace: b.Namespace, Name: bs.AzureIdentity}
		id := in.Identities[key]
		if id == nil {
			problems = append(problems, Problem{Binding: b, Reason: "IdentityNotFound",
				Message: fmt.Sprintf("binding %s/%s names AzureIdentity %q, which does not exist in namespace %s: create it or fix spec.azureIdentity", b.Namespace, b.Name, bs.AzureIdentity, b.Namespace)})
			continue
		}
		if id.IsNamespaced() && id.Namespace != pod.Namespace {
			continue
		}
		spec := id.Spec.Normalized()
		if err := Validate(spec); err != nil {
			problems = append(problems, Problem{Binding: b, Identity: id, Reason: "InvalidIdentity",
				Message: fmt.Sprintf("AzureIdentity %s/%s is invalid: %v", id.Namespace, id.Name, err)})
			continue
		}
		if seen[key] {
			continue
		}
		seen[key] = true
		matches = append(matches, Match{Identity: id, Binding: b, Spec: spec})
	}
	sort.Slice(matches, func(i, j int) bool {
		a, b := matches[i].Identity, matches[j].Identity
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		return a.Name < b.Name
	})
	return matches, problems
}

var (
	guid = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
	// /subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}, case-insensitive as ARM is.
	resourceID = regexp.MustCompile(`(?i)^/subscriptions/[^/]+/resourcegroups/[^/]+/providers/microsoft\.managedidentity/userassignedidentities/[^/]+$`)
)

// Validate checks a normalised identity spec and says what to fix.
func Validate(s podidv1.AzureIdentitySpec) error {
	switch s.Type {
	case podidv1.UserAssignedMSI:
		if s.ClientID == "" {
			return fmt.Errorf("spec.clientID is empty: set it to the client id of the user-assigned identity (az identity show --query clientId)")
		}
		if s.ResourceID != "" && !resourceID.MatchString(s.ResourceID) {
			return fmt.Errorf("spec.resourceID %q is not a user-assigned identity id: expected /subscriptions/<sub>/resourceGroups/<rg>/providers/Microsoft.ManagedIdentity/userAssignedIdentities/<name>", s.ResourceID)
		}
	case podidv1.ServicePrincipal, podidv1.ServicePrincipalCertificate:
		if s.ClientID == "" {
			return fmt.Errorf("spec.clientID is empty: set it to the service principal's application (client) id")
		}
		if s.TenantID == "" {
			return fmt.Errorf("spec.tenantID is empty: a type %d identity needs the service principal's tenant", s.Type)
		}
		if s.ClientPassword.Name == "" {
			what := "client secret"
			if s.Type == podidv1.ServicePrincipalCertificate {
				what = "certificate"
			}
			return fmt.Errorf("spec.clientPassword.name is empty: a type %d identity needs a Secret reference holding its %s", s.Type, what)
		}
	default:
		return fmt.Errorf("spec.type %d is unknown: use 0 (user-assigned identity), 1 (service principal secret) or 2 (service principal certificate)", s.Type)
	}
	if s.ClientID != "" && !guid.MatchString(s.ClientID) {
		return fmt.Errorf("spec.clientID %q is not a GUID", s.ClientID)
	}
	if s.TenantID != "" && !guid.MatchString(s.TenantID) {
		return fmt.Errorf("spec.tenantID %q is not a GUID", s.TenantID)
	}
	return nil
}
