// Command wiclient is the workload of the workload-identity end-to-end tests
// (test/e2e/workload_identity_test.go, localcloud_test.go) and of podid up's
// v2 demo. It does what an application using the Azure SDK for Go does, and
// nothing more: the unmodified azidentity.WorkloadIdentityCredential — or
// with -default the DefaultAzureCredential most applications use — with
// default options, configured only by the environment the podid webhook
// injects (AZURE_CLIENT_ID, AZURE_TENANT_ID, AZURE_FEDERATED_TOKEN_FILE,
// AZURE_AUTHORITY_HOST). No authority option and no
// DisableInstanceDiscovery: MSAL validates the authority with
// login.microsoftonline.com as on Azure, which the local cloud's DNS answers
// with podid sts (docs/local-cloud.md); the sts CA is the image's system
// trust store's file.
//
//	wiclient [-default] [-no-instance-discovery] [-scope SCOPE] [-out FILE] [-vault-url URL -secret NAME]
//	wiclient mounted -file FILE -env NAME
//
// -vault-url and -secret read a Key Vault secret with the unmodified
// azsecrets client and its default options (the vault's 401 challenge names
// the tenant and resource; the SDK checks the resource against the vault's
// host). The result line then says the secret's name, version and value:
// podid up's vault holds demo data only.
//
// -no-instance-discovery is for a process outside the cluster (the
// integration test runs this binary on the host, against a loopback sts):
// there no DNS answers login.microsoftonline.com, and nothing may ask the
// internet's.
//
// The loop (failures printed with their AADSTS code), output, "cat" and
// "mounted" are azclient's.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"

	"github.com/podid/podid/test/e2e/images/azclient"
)

func main() {
	azclient.Run("wiclient", azclient.Program{Credential: credential, Resource: vaultSecret})
}

func credential(fs *flag.FlagSet) func() (azcore.TokenCredential, error) {
	useDefault := fs.Bool("default", false, "use DefaultAzureCredential instead of WorkloadIdentityCredential")
	noDiscovery := fs.Bool("no-instance-discovery", false, "DisableInstanceDiscovery (outside the local cloud's DNS only)")
	return func() (azcore.TokenCredential, error) {
		for _, k := range []string{"AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_FEDERATED_TOKEN_FILE", "AZURE_AUTHORITY_HOST"} {
			fmt.Printf("wiclient: %s=%s\n", k, os.Getenv(k)) // paths and ids, no secrets
		}
		if *useDefault {
			cred, err := azidentity.NewDefaultAzureCredential(&azidentity.DefaultAzureCredentialOptions{DisableInstanceDiscovery: *noDiscovery})
			if err != nil {
				return nil, fmt.Errorf("NewDefaultAzureCredential: %w", err)
			}
			return cred, nil
		}
		cred, err := azidentity.NewWorkloadIdentityCredential(&azidentity.WorkloadIdentityCredentialOptions{DisableInstanceDiscovery: *noDiscovery})
		if err != nil {
			return nil, fmt.Errorf("NewWorkloadIdentityCredential: %w", err)
		}
		return cred, nil
	}
}

// vaultSecret reads -secret from -vault-url, when both are given.
func vaultSecret(fs *flag.FlagSet) func(context.Context, azcore.TokenCredential) (string, error) {
	vaultURL := fs.String("vault-url", "", "read -secret from this Key Vault (https://NAME.vault.azure.net)")
	secret := fs.String("secret", "", "the secret -vault-url holds")
	return func(ctx context.Context, cred azcore.TokenCredential) (string, error) {
		if *vaultURL == "" && *secret == "" {
			return "", nil
		}
		if *vaultURL == "" || *secret == "" {
			return "", errors.New("-vault-url and -secret go together")
		}
		c, err := azsecrets.NewClient(*vaultURL, cred, nil)
		if err != nil {
			return "", fmt.Errorf("azsecrets.NewClient: %w", err)
		}
		r, err := c.GetSecret(ctx, *secret, "", nil)
		if err != nil {
			return "", fmt.Errorf("GetSecret %s: %w", *secret, err)
		}
		if r.ID == nil || r.Value == nil {
			return "", fmt.Errorf("GetSecret %s: an answer without id or value", *secret)
		}
		version := r.ID.Version()
		if len(version) > 8 {
			version = version[:8] + "…"
		}
		// The value is printed because it is the demo's own data.
		return fmt.Sprintf("%s %s = %q (demo data)", r.ID.Name(), version, *r.Value), nil
	}
}
