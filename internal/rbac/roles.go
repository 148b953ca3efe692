// Package rbac is Azure role-based access control as podid models it: the
// built-in role definitions (their real ids, names and permissions), ARM
// scopes and their inheritance, and the evaluation of "does this set of
// role assignments grant action A at scope S". The sts serves and stores
// assignments; the CLI and the sts's data planes read the table from here.
package rbac

import (
	"strings"
)

// Types and provider paths of Microsoft.Authorization.
const (
	RoleAssignmentType = "Microsoft.Authorization/roleAssignments"
	RoleDefinitionType = "Microsoft.Authorization/roleDefinitions"
	// DefinitionPath is what follows a scope in a role definition id.
	DefinitionPath = "/providers/Microsoft.Authorization/roleDefinitions/"
	// AssignmentPath is what follows a scope in a role assignment id.
	AssignmentPath = "/providers/Microsoft.Authorization/roleAssignments/"
)

// Names of the built-in roles podid's own code refers to.
const (
	Owner                   = "Owner"
	Contributor             = "Contributor"
	Reader                  = "Reader"
	UserAccessAdministrator = "User Access Administrator"
)

// Role is a role definition: Actions minus NotActions on the control plane
// (ARM), DataActions minus NotDataActions on data planes. Patterns are
// matched case-insensitively and '*' matches any run of characters,
// including '/', as Azure does.
type Role struct {
	ID             string // the definition's GUID, as in Azure
	Name           string
	Description    string
	Actions        []string
	NotActions     []string
	DataActions    []string
	NotDataActions []string
}

// keyVaultMgmtRead is the control-plane part Azure gives every Key Vault
// data role that also reads the vault.
var keyVaultMgmtRead = []string{
	"Microsoft.Authorization/*/read",
	"Microsoft.Insights/alertRules/*",
	"Microsoft.Resources/deployments/*",
	"Microsoft.Resources/subscriptions/resourceGroups/read",
	"Microsoft.Support/*",
	"Microsoft.KeyVault/checkNameAvailability/read",
	"Microsoft.KeyVault/deletedVaults/read",
	"Microsoft.KeyVault/locations/*/read",
	"Microsoft.KeyVault/vaults/*/read",
	"Microsoft.KeyVault/operations/read",
}

// BuiltIn are the Azure built-in roles podid knows, with Azure's ids,
// names and permissions (az role definition list --name NAME).
var BuiltIn = []Role{
	{ID: "8e3af657-a8ff-443c-a75c-2fe8c4bcb635", Name: Owner,
		Description: "Grants full access to manage all resources, including the ability to assign roles in Azure RBAC.",
		Actions:     []string{"*"}},
	{ID: "b24988ac-6180-42a0-ab88-20f7382dd24c", Name: Contributor,
		Description: "Grants full access to manage all resources, but does not allow you to assign roles in Azure RBAC, manage assignments in Azure Blueprints, or share image galleries.",
		Actions:     []string{"*"},
		NotActions: []string{
			"Microsoft.Authorization/*/Delete", "Microsoft.Authorization/*/Write", "Microsoft.Authorization/elevateAccess/Action",
			"Microsoft.Blueprint/blueprintAssignments/write", "Microsoft.Blueprint/blueprintAssignments/delete",
			"Microsoft.Compute/galleries/share/action", "Microsoft.Purview/consents/write", "Microsoft.Purview/consents/delete",
		}},
	{ID: "acdd72a7-3385-48ef-bd42-f606fba81ae7", Name: Reader,
		Description: "View all resources, but does not allow you to make any changes.",
		Actions:     []string{"*/read"}},
	{ID: "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9", Name: UserAccessAdministrator,
		Description: "Lets you manage user access to Azure resources.",
		Actions:     []string{"*/read", "Microsoft.Authorization/*", "Microsoft.Support/*"}},
	{ID: "f1a07417-d97a-45cb-824c-7a7467783830", Name: "Managed Identity Operator",
		Description: "Read and Assign User Assigned Identity",
		Actions: []string{
			"Microsoft.ManagedIdentity/userAssignedIdentities/*/read", "Microsoft.ManagedIdentity/userAssignedIdentities/*/assign/action",
			"Microsoft.Authorization/*/read", "Microsoft.Insights/alertRules/*", "Microsoft.Resources/subscriptions/resourceGroups/read",
			"Microsoft.Resources/deployments/*", "Microsoft.Support/*",
		}},
	{ID: "00482a5a-887f-4fb3-b363-3b7fe8e74483", Name: "Key Vault Administrator",
		Description: "Perform all data plane operations on a key vault and all objects in it, including certificates, keys, and secrets. Cannot manage key vault resources or manage role assignments. Only works for key vaults that use the 'Azure role-based access control' permission model.",
		Actions:     keyVaultMgmtRead,
		DataActions: []string{"Microsoft.KeyVault/vaults/*"}},
	{ID: "b86a8fe4-44ce-4948-aee5-eccb2c155cd7", Name: "Key Vault Secrets Officer",
		Description: "Perform any action on the secrets of a key vault, except manage permissions. Only works for key vaults that use the 'Azure role-based access control' permission model.",
		Actions:     keyVaultMgmtRead,
		DataActions: []string{"Microsoft.KeyVault/vaults/secrets/*"}},
	{ID: "4633458b-17de-408a-b874-0445c86b69e6", Name: "Key Vault Secrets User",
		Description: "Read secret contents. Only works for key vaults that use the 'Azure role-based access control' permission model.",
		DataActions: []string{"Microsoft.KeyVault/vaults/secrets/getSecret/action", "Microsoft.KeyVault/vaults/secrets/readMetadata/action"}},
	{ID: "21090545-7ca7-4776-b22c-e363652d74d2", Name: "Key Vault Reader",
		Description: "Read metadata of key vaults and its certificates, keys, and secrets. Cannot read sensitive values such as secret contents or key material. Only works for key vaults that use the 'Azure role-based access control' permission model.",
		Actions:     keyVaultMgmtRead,
		DataActions: []string{"Microsoft.KeyVault/vaults/*/read", "Microsoft.KeyVault/vaults/secrets/readMetadata/action"}},
	{ID: "a4417e6f-fecd-4de8-b567-7b0420556985", Name: "Key Vault Certificates Officer",
		Description: "Perform any action on the certificates of a key vault, except manage permissions. Only works for key vaults that use the 'Azure role-based access control' permission model.",
		Actions:     keyVaultMgmtRead,
		DataActions: []string{"Microsoft.KeyVault/vaults/certificatecas/*", "Microsoft.KeyVault/vaults/certificates/*", "Microsoft.KeyVault/vaults/certificatecontacts/write"}},
	{ID: "db79e9a7-68ee-4b58-9aeb-b90e7c24fcba", Name: "Key Vault Certificate User",
		Description: "Read entire certificate contents including secret and key portion. Only works for key vaults that use the 'Azure role-based access control' permission model.",
		DataActions: []string{
			"Microsoft.KeyVault/vaults/certificates/read", "Microsoft.KeyVault/vaults/secrets/getSecret/action",
			"Microsoft.KeyVault/vaults/secrets/readMetadata/action", "Microsoft.KeyVault/vaults/keys/read",
		}},
	{ID: "14b46e9e-c2b7-41b4-b07b-48a6ebf60603", Name: "Key Vault Crypto Officer",
		Description: "Perform any action on the keys of a key vault, except manage permissions. Only works for key vaults that use the 'Azure role-based access control' permission model.",
		Actions:     keyVaultMgmtRead,
		DataActions: []string{"Microsoft.KeyVault/vaults/keys/*", "Microsoft.KeyVault/vaults/keyrotationpolicies/*"}},
	{ID: "12338af0-0e69-4776-bea7-57ae8d297424", Name: "Key Vault Crypto User",
		Description: "Perform cryptographic operations using keys. Only works for key vaults that use the 'Azure role-based access control' permission model.",
		DataActions: []string{
			"Microsoft.KeyVault/vaults/keys/read", "Microsoft.KeyVault/vaults/keys/update/action", "Microsoft.KeyVault/vaults/keys/backup/action",
			"Microsoft.KeyVault/vaults/keys/encrypt/action", "Microsoft.KeyVault/vaults/keys/decrypt/action",
			"Microsoft.KeyVault/vaults/keys/wrap/action", "Microsoft.KeyVault/vaults/keys/unwrap/action",
			"Microsoft.KeyVault/vaults/keys/sign/action", "Microsoft.KeyVault/vaults/keys/verify/action",
		}},
	{ID: "974c5e8b-45b9-4653-ba55-5f855dd0fb88", Name: "Storage Queue Data Contributor",
		Description: "Read, write, and delete Azure Storage queues and queue messages.",
		Actions: []string{
			"Microsoft.Storage/storageAccounts/queueServices/queues/delete", "Microsoft.Storage/storageAccounts/queueServices/queues/read",
			"Microsoft.Storage/storageAccounts/queueServices/queues/write",
		},
		DataActions: []string{
			"Microsoft.Storage/storageAccounts/queueServices/queues/messages/delete", "Microsoft.Storage/storageAccounts/queueServices/queues/messages/read",
			"Microsoft.Storage/storageAccounts/queueServices/queues/messages/write", "Microsoft.Storage/storageAccounts/queueServices/queues/messages/process/action",
		}},
	{ID: "19e7f393-937e-4f77-808e-94535e297925", Name: "Storage Queue Data Reader",
		Description: "Read and list Azure Storage queues and queue messages.",
		Actions:     []string{"Microsoft.Storage/storageAccounts/queueServices/queues/read"},
		DataActions: []string{"Microsoft.Storage/storageAccounts/queueServices/queues/messages/read"}},
	{ID: "c6a89b2d-59bc-44d0-9896-0f6e12d7b80a", Name: "Storage Queue Data Message Sender",
		Description: "Add messages to an Azure Storage queue.",
		DataActions: []string{"Microsoft.Storage/storageAccounts/queueServices/queues/messages/add/action"}},
	{ID: "8a0f0c08-91a1-4084-bc3d-661d67233fed", Name: "Storage Queue Data Message Processor",
		Description: "Peek, retrieve, and delete a message from an Azure Storage queue.",
		DataActions: []string{"Microsoft.Storage/storageAccounts/queueServices/queues/messages/read", "Microsoft.Storage/storageAccounts/queueServices/queues/messages/process/action"}},
	{ID: "b7e6dc6d-f1e8-4753-8033-0f276bb0955b", Name: "Storage Blob Data Owner",
		Description: "Provides full access to Azure Storage blob containers and data, including assigning POSIX access control.",
		Actions:     []string{"Microsoft.Storage/storageAccounts/blobServices/containers/*", "Microsoft.Storage/storageAccounts/blobServices/generateUserDelegationKey/action"},
		DataActions: []string{"Microsoft.Storage/storageAccounts/blobServices/containers/blobs/*"}},
	{ID: "ba92f5b4-2d11-453d-a403-e96b0029c9fe", Name: "Storage Blob Data Contributor",
		Description: "Read, write, and delete Azure Storage containers and blobs.",
		Actions: []string{
			"Microsoft.Storage/storageAccounts/blobServices/containers/delete", "Microsoft.Storage/storageAccounts/blobServices/containers/read",
			"Microsoft.Storage/storageAccounts/blobServices/containers/write", "Microsoft.Storage/storageAccounts/blobServices/generateUserDelegationKey/action",
		},
		DataActions: []string{
			"Microsoft.Storage/storageAccounts/blobServices/containers/blobs/delete", "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read",
			"Microsoft.Storage/storageAccounts/blobServices/containers/blobs/write", "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/move/action",
			"Microsoft.Storage/storageAccounts/blobServices/containers/blobs/add/action",
		}},
	{ID: "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1", Name: "Storage Blob Data Reader",
		Description: "Read and list Azure Storage containers and blobs.",
		Actions:     []string{"Microsoft.Storage/storageAccounts/blobServices/containers/read", "Microsoft.Storage/storageAccounts/blobServices/generateUserDelegationKey/action"},
		DataActions: []string{"Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read"}},
}

// ByID returns the built-in role with the definition GUID id (any case).
func ByID(id string) (Role, bool) {
	for _, r := range BuiltIn {
		if strings.EqualFold(r.ID, id) {
			return r, true
		}
	}
	return Role{}, false
}

// ByName returns the built-in role named name, case-insensitively (as
// az role assignment create --role does).
func ByName(name string) (Role, bool) {
	for _, r := range BuiltIn {
		if strings.EqualFold(r.Name, name) {
			return r, true
		}
	}
	return Role{}, false
}

// DefinitionGUID returns the GUID of a role definition given as a GUID or
// as a definition id at any scope (…/providers/Microsoft.Authorization/
// roleDefinitions/{guid}), or "" when it is neither.
func DefinitionGUID(ref string) string {
	if GUID(ref) {
		return strings.ToLower(ref)
	}
	i := strings.LastIndex(strings.ToLower(ref), strings.ToLower(DefinitionPath))
	if i < 0 {
		return ""
	}
	scope, g := ref[:i], ref[i+len(DefinitionPath):]
	if !GUID(g) {
		return ""
	}
	if scope != "" {
		if _, err := ParseScope(scope); err != nil {
			return ""
		}
	}
	return strings.ToLower(g)
}

// DefinitionID is the id Azure gives a built-in role definition read at
// scope: under the scope's subscription, or tenant-level without one.
func DefinitionID(scope Scope, guid string) string {
	if sub := scope.Subscription(); sub != "" {
		return "/subscriptions/" + sub + DefinitionPath + guid
	}
	return DefinitionPath + guid
}

// Permits reports whether the role grants action on the control plane
// (data false) or on a data plane (data true).
func (r Role) Permits(action string, data bool) bool {
	allow, deny := r.Actions, r.NotActions
	if data {
		allow, deny = r.DataActions, r.NotDataActions
	}
	return matchAny(allow, action) && !matchAny(deny, action)
}

func matchAny(patterns []string, action string) bool {
	for _, p := range patterns {
		if Match(p, action) {
			return true
		}
	}
	return false
}

// Match reports whether an action pattern matches an action: case-
// insensitively, '*' standing for any run of characters (also '/').
func Match(pattern, action string) bool {
	p, a := strings.ToLower(pattern), strings.ToLower(action)
	// Classic glob with one '*' kind: greedy with backtracking to the last star.
	pi, ai, star, mark := 0, 0, -1, 0
	for ai < len(a) {
		switch {
		case pi < len(p) && p[pi] == '*':
			star, mark = pi, ai
			pi++
		case pi < len(p) && p[pi] == a[ai]:
			pi++
			ai++
		case star >= 0:
			pi = star + 1
			mark++
			ai = mark
		default:
			return false
		}
	}
	for pi < len(p) && p[pi] == '*' {
		pi++
	}
	return pi == len(p)
}
