package keyvault

import "context"

// Data actions of Key Vault secrets, as Azure RBAC names them. Each
// data-plane operation needs exactly one.
const (
	ActionGetSecret    = "Microsoft.KeyVault/vaults/secrets/getSecret/action"
	ActionSetSecret    = "Microsoft.KeyVault/vaults/secrets/setSecret/action"
	ActionReadMetadata = "Microsoft.KeyVault/vaults/secrets/readMetadata/action"
	ActionUpdate       = "Microsoft.KeyVault/vaults/secrets/update/action"
	ActionDelete       = "Microsoft.KeyVault/vaults/secrets/delete"
	ActionRecover      = "Microsoft.KeyVault/vaults/secrets/recover/action"
	ActionPurge        = "Microsoft.KeyVault/vaults/secrets/purge/action"

	ActionCertRead    = "Microsoft.KeyVault/vaults/certificates/read"
	ActionCertImport  = "Microsoft.KeyVault/vaults/certificates/import/action"
	ActionCertDelete  = "Microsoft.KeyVault/vaults/certificates/delete"
	ActionCertRecover = "Microsoft.KeyVault/vaults/certificates/recover/action"
	ActionCertPurge   = "Microsoft.KeyVault/vaults/certificates/purge/action"
	ActionKeyRead     = "Microsoft.KeyVault/vaults/keys/read"
)

// The built-in Key Vault roles, by their role definition ids in Azure.
const (
	RoleAdministrator  = "00482a5a-887f-4fb3-b363-3b7fe8e74483" // Key Vault Administrator
	RoleSecretsOfficer = "b86a8fe4-44ce-4948-aee5-eccb2c155cd7" // Key Vault Secrets Officer
	RoleSecretsUser    = "4633458b-17de-408a-b874-0445c86b69e6" // Key Vault Secrets User
	RoleReader         = "21090545-7ca7-4776-b22c-e363652d74d2" // Key Vault Reader
	RoleCertsOfficer   = "a4417e6f-fecd-4de8-b567-7b0420556985" // Key Vault Certificates Officer
	RoleCertUser       = "db79e9a7-68ee-4b58-9aeb-b90e7c24fcba" // Key Vault Certificate User
	RoleCryptoOfficer  = "14b46e9e-c2b7-41b4-b07b-48a6ebf60603" // Key Vault Crypto Officer
	RoleCryptoUser     = "12338af0-0e69-4776-bea7-57ae8d297424" // Key Vault Crypto User
)

// Authorizer answers Azure RBAC's data-plane question: does the principal
// (an object id of tenantID) hold dataAction at scope, through a role
// assignment at scope or at any scope above it (the vault, its resource
// group, its subscription)? The scope of a secret operation is the
// secret's ARM id, {vault resource id}/secrets/{name}; list operations use
// the vault's.
type Authorizer interface {
	HasDataAction(ctx context.Context, tenantID, principalID, scope, dataAction string) (bool, error)
}
