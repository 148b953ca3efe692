// Package webhook is podid's workload-identity mutating admission webhook, a
// drop-in for the azure.workload.identity/* labels and annotations
// (docs/contracts.md §5).
//
// A pod labelled azure.workload.identity/use: "true" gets, in every init and
// regular container that is not listed in skip-containers, the AZURE_* env
// vars the Azure SDKs' WorkloadIdentityCredential reads and a read-only mount
// of a projected service-account token (audience api://AzureADTokenExchange).
// An env var the user already set by name is never touched.
//
// The handler answers with a minimal RFC 6902 JSON patch computed against the
// raw request object: only the operations that change the pod, no re-marshal
// of the typed Pod. Re-submitting its own output yields no patch. What the
// webhook injected is recorded in the pod annotation podid.dev/injected, so on
// reinvocation (another webhook changed serviceAccountName) it updates exactly
// the values it owns and nothing the user set.
//
// ServiceAccounts are read from an informer cache (a watch of ServiceAccounts
// only); the handler never issues a live GET. A ServiceAccount missing from
// the cache is denied by default (MissingServiceAccountDeny) or admitted
// without mutation (MissingServiceAccountAllow).
//
// Limits: only CREATE of core/v1 pods is mutated; any other request is
// admitted unchanged. Env vars set through envFrom cannot be seen and are
// overridden by the injected explicit env, as with azure-workload-identity.
// The proxy sidecar is never injected: inject-proxy-sidecar: "true" marks the
// pod with podid.dev/imds: "true" for the node agent instead.
package webhook
