package v1

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Well-known labels and annotations of the pod-identity (v1) model.
const (
	// PodLabelKey is the pod label whose value is matched against a binding's selector.
	PodLabelKey = "aadpodidbinding"
	// BehaviorAnnotation set to BehaviorNamespaced on an AzureIdentity limits it to
	// pods in its own namespace even when the controller matches cluster-wide.
	BehaviorAnnotation = "aadpodidentity.k8s.io/Behavior"
	// BehaviorNamespaced is the only meaningful value of BehaviorAnnotation.
	BehaviorNamespaced = "namespaced"
)

// IdentityType says how the identity proves itself to the identity provider.
// +kubebuilder:validation:Enum=0;1;2
type IdentityType int

const (
	// UserAssignedMSI is a user-assigned managed identity (federated per pod by podid).
	UserAssignedMSI IdentityType = 0
	// ServicePrincipal authenticates with a client secret kept in a Secret.
	ServicePrincipal IdentityType = 1
	// ServicePrincipalCertificate authenticates with a certificate kept in a Secret.
	ServicePrincipalCertificate IdentityType = 2
)

func (t IdentityType) String() string {
	switch t {
	case UserAssignedMSI:
		return "UserAssignedMSI"
	case ServicePrincipal:
		return "ServicePrincipal"
	case ServicePrincipalCertificate:
		return "ServicePrincipalCertificate"
	}
	return "IdentityType(" + strconv.Itoa(int(t)) + ")"
}

// AzureIdentitySpec describes one cloud identity.
// +kubebuilder:validation:XValidation:rule="!has(self.ResourceID) || !has(self.resourceID) || self.ResourceID == self.resourceID",message="ResourceID (legacy spelling) and resourceID disagree; keep one"
// +kubebuilder:validation:XValidation:rule="!has(self.ClientID) || !has(self.clientID) || self.ClientID == self.clientID",message="ClientID (legacy spelling) and clientID disagree; keep one"
// +kubebuilder:validation:XValidation:rule="!has(self.TenantID) || !has(self.tenantID) || self.TenantID == self.tenantID",message="TenantID (legacy spelling) and tenantID disagree; keep one"
type AzureIdentitySpec struct {
	// Type is 0 (user-assigned managed identity), 1 (service principal with a
	// client secret) or 2 (service principal with a certificate).
	// +optional
	Type IdentityType `json:"type,omitempty"`
	// ResourceID is the ARM id of a user-assigned identity (type 0).
	// +kubebuilder:validation:MaxLength=1024
	// +optional
	ResourceID string `json:"resourceID,omitempty"`
	// ClientID is the application (client) id of the identity.
	// +kubebuilder:validation:MaxLength=128
	// +optional
	ClientID string `json:"clientID,omitempty"`
	// ClientPassword references the Secret holding the client secret (type 1)
	// or the certificate (type 2).
	// +optional
	ClientPassword corev1.SecretReference `json:"clientPassword,omitempty"`
	// TenantID is the directory the identity lives in.
	// +kubebuilder:validation:MaxLength=128
	// +optional
	TenantID string `json:"tenantID,omitempty"`
	// AuxiliaryTenantIDs lists further tenants a service principal may act in.
	// +kubebuilder:validation:MaxItems=16
	// +optional
	AuxiliaryTenantIDs []string `json:"auxiliaryTenantIDs,omitempty"`
	// ADResourceID is accepted for compatibility and unused.
	// +optional
	ADResourceID string `json:"adResourceID,omitempty"`
	// ADEndpoint overrides the identity provider's authority host for this identity.
	// +kubebuilder:validation:MaxLength=1024
	// +optional
	ADEndpoint string `json:"adEndpoint,omitempty"`
	// Replicas is accepted for compatibility and unused.
	// +optional
	Replicas *int32 `json:"replicas,omitempty"`

	// Legacy spellings (manifests written before 2020). Read Normalized() instead.

	// +kubebuilder:validation:MaxLength=1024
	// +optional
	LegacyResourceID string `json:"ResourceID,omitempty"`
	// +kubebuilder:validation:MaxLength=128
	// +optional
	LegacyClientID string `json:"ClientID,omitempty"`
	// +optional
	LegacyClientPassword *corev1.SecretReference `json:"ClientPassword,omitempty"`
	// +kubebuilder:validation:MaxLength=128
	// +optional
	LegacyTenantID string `json:"TenantID,omitempty"`
}

// Normalized returns the spec with every legacy spelling folded into the
// canonical field (the canonical one wins when both are set) and the legacy
// fields cleared.
func (s AzureIdentitySpec) Normalized() AzureIdentitySpec {
	n := s
	n.AuxiliaryTenantIDs = append([]string(nil), s.AuxiliaryTenantIDs...)
	if n.ResourceID == "" {
		n.ResourceID = s.LegacyResourceID
	}
	if n.ClientID == "" {
		n.ClientID = s.LegacyClientID
	}
	if n.TenantID == "" {
		n.TenantID = s.LegacyTenantID
	}
	if n.ClientPassword == (corev1.SecretReference{}) && s.LegacyClientPassword != nil {
		n.ClientPassword = *s.LegacyClientPassword
	}
	n.LegacyResourceID, n.LegacyClientID, n.LegacyTenantID, n.LegacyClientPassword = "", "", "", nil
	if s.Replicas != nil {
		r := *s.Replicas
		n.Replicas = &r
	}
	return n
}

// AzureIdentityStatus reports whether podid can use the identity.
type AzureIdentityStatus struct {
	// +optional
	AvailableReplicas int32 `json:"availableReplicas,omitempty"`
	// Conditions: Valid says whether the spec is usable and, if not, what to fix.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// AzureIdentity is a cloud identity that pods may be given through bindings.
// +kubebuilder:metadata:annotations="api-approved.kubernetes.io=unapproved, kept for compatibility with the AAD Pod Identity API (aadpodidentity.k8s.io)"
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Namespaced,shortName=azid
// +kubebuilder:printcolumn:name="Type",type=integer,JSONPath=`.spec.type`
// +kubebuilder:printcolumn:name="Valid",type=string,JSONPath=`.status.conditions[?(@.type=="Valid")].status`
// +kubebuilder:printcolumn:name="ClientID",type=string,JSONPath=`.spec.clientID`
// +kubebuilder:printcolumn:name="ClientID (legacy)",type=string,JSONPath=`.spec.ClientID`,priority=1
// +kubebuilder:printcolumn:name="ResourceID",type=string,JSONPath=`.spec.resourceID`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type AzureIdentity struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec AzureIdentitySpec `json:"spec,omitempty"`
	// +optional
	Status AzureIdentityStatus `json:"status,omitempty"`
}

// IsNamespaced reports whether the identity carries the namespaced Behavior annotation.
func (a *AzureIdentity) IsNamespaced() bool {
	return a.Annotations[BehaviorAnnotation] == BehaviorNamespaced
}

// AzureIdentityList is a list of AzureIdentity.
// +kubebuilder:object:root=true
type AzureIdentityList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []AzureIdentity `json:"items"`
}

// AzureIdentityBindingSpec links pods carrying the label aadpodidbinding=<selector>
// to an AzureIdentity in the binding's namespace.
// +kubebuilder:validation:XValidation:rule="!has(self.AzureIdentity) || !has(self.azureIdentity) || self.AzureIdentity == self.azureIdentity",message="AzureIdentity (legacy spelling) and azureIdentity disagree; keep one"
// +kubebuilder:validation:XValidation:rule="!has(self.Selector) || !has(self.selector) || self.Selector == self.selector",message="Selector (legacy spelling) and selector disagree; keep one"
type AzureIdentityBindingSpec struct {
	// AzureIdentity is the name of the AzureIdentity this binding grants.
	// +kubebuilder:validation:MaxLength=253
	// +optional
	AzureIdentity string `json:"azureIdentity,omitempty"`
	// Selector is compared for equality with the pod label aadpodidbinding.
	// +kubebuilder:validation:MaxLength=63
	// +optional
	Selector string `json:"selector,omitempty"`
	// Weight is accepted for compatibility and unused.
	// +optional
	Weight int `json:"weight,omitempty"`

	// Legacy spellings. Read Normalized() instead.

	// +kubebuilder:validation:MaxLength=253
	// +optional
	LegacyAzureIdentity string `json:"AzureIdentity,omitempty"`
	// +kubebuilder:validation:MaxLength=63
	// +optional
	LegacySelector string `json:"Selector,omitempty"`
}

// Normalized returns the spec with legacy spellings folded into the canonical fields.
func (s AzureIdentityBindingSpec) Normalized() AzureIdentityBindingSpec {
	n := s
	if n.AzureIdentity == "" {
		n.AzureIdentity = s.LegacyAzureIdentity
	}
	if n.Selector == "" {
		n.Selector = s.LegacySelector
	}
	n.LegacyAzureIdentity, n.LegacySelector = "", ""
	return n
}

// AzureIdentityBindingStatus reports whether the binding grants a usable identity.
type AzureIdentityBindingStatus struct {
	// +optional
	AvailableReplicas int32 `json:"availableReplicas,omitempty"`
	// Conditions: Ready says whether the named identity exists and is valid.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// AzureIdentityBinding grants an AzureIdentity to the pods that carry its selector.
// +kubebuilder:metadata:annotations="api-approved.kubernetes.io=unapproved, kept for compatibility with the AAD Pod Identity API (aadpodidentity.k8s.io)"
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Namespaced,shortName=azidb
// +kubebuilder:printcolumn:name="Identity",type=string,JSONPath=`.spec.azureIdentity`
// +kubebuilder:printcolumn:name="Selector",type=string,JSONPath=`.spec.selector`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Identity (legacy)",type=string,JSONPath=`.spec.AzureIdentity`,priority=1
// +kubebuilder:printcolumn:name="Selector (legacy)",type=string,JSONPath=`.spec.Selector`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type AzureIdentityBinding struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec AzureIdentityBindingSpec `json:"spec,omitempty"`
	// +optional
	Status AzureIdentityBindingStatus `json:"status,omitempty"`
}

// AzureIdentityBindingList is a list of AzureIdentityBinding.
// +kubebuilder:object:root=true
type AzureIdentityBindingList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []AzureIdentityBinding `json:"items"`
}

// Assignment states, as in AAD Pod Identity.
const (
	AssignedIDCreated    = "Created"
	AssignedIDAssigned   = "Assigned"
	AssignedIDUnAssigned = "Unassigned"
)

// IdentityRef is the part of an AzureIdentity an assignment records.
type IdentityRef struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
	// Spec is the identity's normalised spec at assignment time.
	Spec AzureIdentitySpec `json:"spec"`
}

// BindingRef is the part of an AzureIdentityBinding an assignment records.
type BindingRef struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
	// Spec is the binding's normalised spec at assignment time.
	Spec AzureIdentityBindingSpec `json:"spec"`
}

// AzureAssignedIdentitySpec records which pod holds which identity on which node.
type AzureAssignedIdentitySpec struct {
	AzureIdentityRef *IdentityRef `json:"azureIdentityRef"`
	AzureBindingRef  *BindingRef  `json:"azureBindingRef"`
	Pod              string       `json:"pod"`
	// PodUID pins the assignment to one incarnation of the pod: a new pod with
	// the same name is a different assignment.
	// +optional
	PodUID       string `json:"podUID,omitempty"`
	PodNamespace string `json:"podNamespace"`
	NodeName     string `json:"nodename"`
	// +optional
	Replicas *int32 `json:"replicas,omitempty"`
}

// AzureAssignedIdentityStatus is the assignment's state.
type AzureAssignedIdentityStatus struct {
	// Status is Created, Assigned or Unassigned.
	// +optional
	Status string `json:"status,omitempty"`
	// +optional
	AvailableReplicas int32 `json:"availableReplicas,omitempty"`
}

// AzureAssignedIdentity is written by podid controller only: the record that pod
// X in namespace N on node M holds identity I through binding B. It has no
// status subresource: the controller writes spec and status in one request.
// +kubebuilder:metadata:annotations="api-approved.kubernetes.io=unapproved, kept for compatibility with the AAD Pod Identity API (aadpodidentity.k8s.io)"
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Namespaced,shortName=azaid
// +kubebuilder:printcolumn:name="Pod",type=string,JSONPath=`.spec.pod`
// +kubebuilder:printcolumn:name="Identity",type=string,JSONPath=`.spec.azureIdentityRef.name`
// +kubebuilder:printcolumn:name="ClientID",type=string,JSONPath=`.spec.azureIdentityRef.spec.clientID`,priority=1
// +kubebuilder:printcolumn:name="Binding",type=string,JSONPath=`.spec.azureBindingRef.name`,priority=1
// +kubebuilder:printcolumn:name="Node",type=string,JSONPath=`.spec.nodename`
// +kubebuilder:printcolumn:name="State",type=string,JSONPath=`.status.status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type AzureAssignedIdentity struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec AzureAssignedIdentitySpec `json:"spec,omitempty"`
	// +optional
	Status AzureAssignedIdentityStatus `json:"status,omitempty"`
}

// AzureAssignedIdentityList is a list of AzureAssignedIdentity.
// +kubebuilder:object:root=true
type AzureAssignedIdentityList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []AzureAssignedIdentity `json:"items"`
}

// LabelValue is a pod label value in an exception. Legacy manifests write
// `noaad: true`, which YAML makes a boolean; it is read as the string "true",
// the only thing a pod label can hold.
// +kubebuilder:validation:Type=""
// +kubebuilder:validation:Schemaless
// +kubebuilder:pruning:PreserveUnknownFields
type LabelValue string

// UnmarshalJSON accepts a JSON string, boolean or number.
func (v *LabelValue) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return fmt.Errorf("empty label value")
	}
	switch b[0] {
	case '"':
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*v = LabelValue(s)
	case 't', 'f':
		var x bool
		if err := json.Unmarshal(b, &x); err != nil {
			return err
		}
		*v = LabelValue(strconv.FormatBool(x))
	case 'n':
		return fmt.Errorf("label value must not be null")
	case '{', '[':
		return fmt.Errorf("label value must be a string, boolean or number, not %s", string(b[:1]))
	default:
		var n json.Number
		if err := json.Unmarshal(b, &n); err != nil {
			return err
		}
		*v = LabelValue(n.String())
	}
	return nil
}

// AzurePodIdentityExceptionSpec lists pod labels; a pod in the exception's
// namespace carrying any one of the pairs is excepted from identity service.
// +kubebuilder:validation:MinProperties=1
type AzurePodIdentityExceptionSpec struct {
	// +kubebuilder:validation:MaxProperties=64
	// +optional
	PodLabels map[string]LabelValue `json:"podLabels,omitempty"`
	// Legacy spelling. Read Normalized() instead.
	// +kubebuilder:validation:MaxProperties=64
	// +optional
	LegacyPodLabels map[string]LabelValue `json:"PodLabels,omitempty"`
}

// Normalized returns the union of both spellings as plain strings (the
// canonical spelling wins on a shared key).
func (s AzurePodIdentityExceptionSpec) Normalized() map[string]string {
	out := make(map[string]string, len(s.PodLabels)+len(s.LegacyPodLabels))
	for k, v := range s.LegacyPodLabels {
		out[k] = string(v)
	}
	for k, v := range s.PodLabels {
		out[k] = string(v)
	}
	return out
}

// Matches reports whether any one label pair of the exception is on the pod.
func (s AzurePodIdentityExceptionSpec) Matches(podLabels map[string]string) bool {
	for k, v := range s.Normalized() {
		if pv, ok := podLabels[k]; ok && pv == v {
			return true
		}
	}
	return false
}

// AzurePodIdentityExceptionStatus reports which pods the exception keeps
// from their identities.
type AzurePodIdentityExceptionStatus struct {
	// +optional
	Status string `json:"status,omitempty"`
	// ExceptedPods names (sorted, at most 100) the pods that carry an
	// aadpodidbinding label but get no identity because of this exception.
	// +optional
	// +kubebuilder:validation:MaxItems=100
	ExceptedPods []string `json:"exceptedPods,omitempty"`
	// Conditions: Active says how many selected pods it currently excepts.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// AzurePodIdentityException exempts matching pods in its namespace from identity service.
// +kubebuilder:metadata:annotations="api-approved.kubernetes.io=unapproved, kept for compatibility with the AAD Pod Identity API (aadpodidentity.k8s.io)"
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Namespaced,shortName=azpie
// +kubebuilder:printcolumn:name="Excepting",type=string,JSONPath=`.status.conditions[?(@.type=="Active")].message`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type AzurePodIdentityException struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec AzurePodIdentityExceptionSpec `json:"spec,omitempty"`
	// +optional
	Status AzurePodIdentityExceptionStatus `json:"status,omitempty"`
}

// AzurePodIdentityExceptionList is a list of AzurePodIdentityException.
// +kubebuilder:object:root=true
type AzurePodIdentityExceptionList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []AzurePodIdentityException `json:"items"`
}

// Condition types and reasons written by podid controller.
const (
	ConditionValid  = "Valid"
	ConditionReady  = "Ready"
	ConditionActive = "Active"
)
