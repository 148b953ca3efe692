// Package workloadidentity is the one home of the names of the Azure
// workload-identity convention that podid reads and writes: the labels and
// annotations users put on pods and service accounts, the environment the
// Azure SDKs' WorkloadIdentityCredential reads, where the projected token
// is mounted, and the audience of the tokens exchanged at the identity
// provider. They are wire names shared with azure-workload-identity and
// the SDKs; docs/webhook.md lists them.
package workloadidentity

import corev1 "k8s.io/api/core/v1"

// Labels and annotations.
const (
	UseLabel                     = "azure.workload.identity/use"
	ClientIDAnnotation           = "azure.workload.identity/client-id"
	TenantIDAnnotation           = "azure.workload.identity/tenant-id"
	TokenExpirationAnnotation    = "azure.workload.identity/service-account-token-expiration"
	SkipContainersAnnotation     = "azure.workload.identity/skip-containers"
	InjectProxySidecarAnnotation = "azure.workload.identity/inject-proxy-sidecar"
	ProxySidecarPortAnnotation   = "azure.workload.identity/proxy-sidecar-port"
	// UseIdentityBindingAnnotation (pod, "true"): AKS identity bindings. The
	// pod gets its service account's identity from the IMDS endpoint,
	// obtained through the podid broker, instead of a federated token file.
	UseIdentityBindingAnnotation = "azure.workload.identity/use-identity-binding"
)

// Environment read by the Azure SDKs.
const (
	EnvClientID           = "AZURE_CLIENT_ID"
	EnvTenantID           = "AZURE_TENANT_ID"
	EnvFederatedTokenFile = "AZURE_FEDERATED_TOKEN_FILE"
	EnvAuthorityHost      = "AZURE_AUTHORITY_HOST"
)

// The projected service-account token.
const (
	TokenVolumeName = "azure-identity-token"
	TokenDir        = "/var/run/secrets/azure/tokens"
	TokenFileName   = "azure-identity-token"
	TokenFile       = TokenDir + "/" + TokenFileName
	// TokenAudience is the audience of service-account tokens exchanged at
	// the identity provider (a federated identity credential's default).
	TokenAudience = "api://AzureADTokenExchange"
)

// Entra's limits on federated identity credentials, which the sts enforces
// and the CLI checks before it sends a request that would fail.
const (
	MaxFederatedCredentials     = 20  // per identity
	MaxFederatedCredentialField = 600 // characters of issuer, subject or audience
)

// ServiceAccountName is the pod's effective ServiceAccount name: an empty
// name means "default".
func ServiceAccountName(pod *corev1.Pod) string {
	switch {
	case pod.Spec.ServiceAccountName != "":
		return pod.Spec.ServiceAccountName
	case pod.Spec.DeprecatedServiceAccount != "":
		return pod.Spec.DeprecatedServiceAccount
	}
	return "default"
}
