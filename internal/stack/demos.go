package stack

// This file is the main job's data: the identities podid up sets up with
// podid's CLI, and the demos that prove each path works. Adding a demo is
// one entry in Demos (plus its manifest under deploy/examples/up).

// IdentitySpec is a user-assigned identity podid up creates through the
// CLI (`podid identity create`), with the service accounts it trusts
// (`podid fic create`) and its role assignments (`podid role-assignment create`).
type IdentitySpec struct {
	Name string
	// ServiceAccounts are NAMESPACE/NAME whose tokens the identity trusts.
	ServiceAccounts []string
	Roles           []RoleSpec
}

// RoleSpec is one role assignment, as the CLI's --role and --scope take
// them; an empty Scope leaves --scope out (the CLI's default).
type RoleSpec struct{ Role, Scope string }

// Manifest is a file under deploy/examples/up applied into Namespace
// (namespaced objects that name none), like `kubectl apply -n`.
type Manifest struct{ File, Namespace string }

// Demo is one pod that must get a token, and how its result is read and checked.
type Demo struct {
	// Name is the summary's row, Path how the token travels there.
	Name, Path string
	// Manifests are applied before the demo's pod is looked for (a file
	// listed by several demos is applied once).
	Manifests []Manifest
	// Namespace and Selector find the demo's pod (the newest one).
	Namespace, Selector string
	// Container prints the result line (internal/demoresult).
	Container string
	// Identity names the IdentitySpec whose token the pod must get: the
	// token's oid must be its principal id, tid the tenant.
	Identity string
	// Audience is the token's required aud (trailing "/" ignored).
	Audience string
	// Resource: the demo also calls a resource and must report what it
	// returned (demoresult.Result.Resource, no Error).
	Resource bool
	// Want, when set, is a value the resource's answer must hold, quoted
	// (a vault secret's demo value).
	Want string
	// NoToken: the pod gets no token itself; a volume driver gets one for
	// the pod's identity and mounts the secret, and the pod reports what it
	// got (no claims to check; Want is required).
	NoToken bool
}

// VaultSpec is a Key Vault podid up creates with the CLI (`podid keyvault
// create`) in the demo resource group, with its secrets (`podid keyvault
// secret set`, once: a second run leaves them). As in seed 003, the operator
// grants itself Key Vault Administrator on the vault to set them; the
// identities' Roles grant them reading.
type VaultSpec struct {
	Name    string
	Secrets []SecretSpec
}

// SecretSpec is one secret of the demo data.
type SecretSpec struct{ Name, Value string }

// demoVault is seed 003's $KV (a fixed name: the local sts is this
// machine's own, so no $RANDOM is needed to make it unique).
const demoVault = "podid-demo-kv"

// Vaults the demos read.
var Vaults = []VaultSpec{{Name: demoVault, Secrets: []SecretSpec{{Name: "demosecret", Value: "demovalue"}}}}

// vaultScope is a vault's ARM id, the scope of its role assignments.
func vaultScope(name string) string {
	return "/subscriptions/" + subscriptionID + "/resourceGroups/" + resourceGroup + "/providers/Microsoft.KeyVault/vaults/" + name
}

// Backend is a service the demos call (a storage emulator, a vault):
// its manifests are applied after podid's rollout and before the demos,
// and every Deployment and DaemonSet in Namespace must roll out.
type Backend struct {
	Name      string
	Namespace string
	Manifests []Manifest
}

// Backends the demos need; none yet (the resource calls plug in here).
var Backends = []Backend{}

// Identities the demos use.
var Identities = []IdentitySpec{
	{
		// v1 (pod identity): the agent exchanges the pod's own
		// service-account token, so the identity trusts demo's default SA.
		Name:            "demo-pod-identity",
		ServiceAccounts: []string{"demo/default"},
		// Azure RBAC at the demo resource group (the CLI's default scope), as
		// `az role assignment create` without --scope on a resource group.
		Roles: []RoleSpec{{Role: "Storage Queue Data Contributor"}},
	},
	{
		// v2 (workload identity): seed 003's ServiceAccount; it reads the
		// vault's secrets (the least role that does).
		Name:            "demo-workload-identity",
		ServiceAccounts: []string{"demo/sademo"},
		Roles:           []RoleSpec{{Role: "Key Vault Secrets User", Scope: vaultScope(demoVault)}},
	},
	{
		// Seed 003's Secrets Store CSI identity (on AKS the add-on's
		// azurekeyvaultsecretsprovider-<cluster>, attached to the nodes). podid
		// attaches no identity to nodes: the grant is a federated credential
		// for the ServiceAccount of the pods that mount with it (docs/csi.md),
		// the seed's Deployment's default/default.
		Name:            "azurekeyvaultsecretsprovider-local",
		ServiceAccounts: []string{"default/default"},
		Roles:           []RoleSpec{{Role: "Key Vault Secrets User", Scope: vaultScope(demoVault)}},
	},
}

// Namespaces podid up applies first (deploy/examples/up/namespaces.yaml).
const namespacesFile = "namespaces.yaml"

// Demos, in the summary's order.
var Demos = []Demo{
	{
		Name: "v1 seed 001", Path: "aadpodidbinding → IMDS 169.254.169.254 → agent",
		Manifests: []Manifest{{"seed-001.yaml", "demo"}},
		Namespace: "demo", Selector: "app=myapp", Container: "app",
		Identity: "demo-pod-identity", Audience: "https://storage.azure.com",
	},
	{
		Name: "v1 seed 000 (namespaced)", Path: "aadpodidbinding → IMDS → agent; a queue message on Azurite",
		Manifests: []Manifest{{"seed-000.yaml", "demo"}},
		Namespace: "demo", Selector: "app=busandstoragemessagehandlers", Container: "secretlessfunc",
		Identity: "demo-pod-identity", Audience: "https://storage.azure.com", Resource: true,
	},
	{
		Name: "v1 seed 004 (aad-broker)", Path: "binding in aad-broker → IMDS → agent",
		Manifests: []Manifest{{"seed-004-identities.yaml", "aad-broker"}, {"seed-004-pod.yaml", "demo"}},
		Namespace: "demo", Selector: "aadpodidbinding=brokered-app", Container: "app",
		Identity: "demo-pod-identity", Audience: "https://storage.azure.com",
	},
	{
		Name: "v2 seed 003", Path: "workload identity → federated token → sts; GetSecret from https://" + demoVault + ".vault.azure.net",
		Manifests: []Manifest{{"seed-003.yaml", "demo"}},
		Namespace: "demo", Selector: "app=azcli", Container: "azcli",
		Identity: "demo-workload-identity", Audience: "https://vault.azure.net",
		Resource: true, Want: "demovalue",
	},
	{
		Name: "v2, IMDS-only SDK", Path: "workload identity → IMDS → agent",
		Manifests: []Manifest{{"seed-003.yaml", "demo"}},
		Namespace: "demo", Selector: "app=imds-app", Container: "app",
		Identity: "demo-workload-identity", Audience: "https://management.azure.com",
	},
	{
		Name: "v2 seed 003 CSI mount", Path: "SecretProviderClass → CSI driver → podid csi-provider (the pod's own token) → vault",
		// The seed applies both in namespace default.
		Manifests: []Manifest{{"seed-003-csi.yaml", "default"}},
		Namespace: "default", Selector: "app=secretpods", Container: "nginx",
		Identity: "azurekeyvaultsecretsprovider-local", NoToken: true, Resource: true, Want: "demovalue",
	},
}
