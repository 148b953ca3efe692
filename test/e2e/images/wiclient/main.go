// Command wiclient is the workload of the workload-identity end-to-end tests
// (test/e2e/workload_identity_test.go, localcloud_test.go). It does what an
// application using the Azure SDK for Go does, and nothing more: the
// unmodified azidentity.WorkloadIdentityCredential — or with -default the
// DefaultAzureCredential most applications use — with default options,
// configured only by the environment the podid webhook injects
// (AZURE_CLIENT_ID, AZURE_TENANT_ID, AZURE_FEDERATED_TOKEN_FILE,
// AZURE_AUTHORITY_HOST). No authority option and no
// DisableInstanceDiscovery: MSAL validates the authority with
// login.microsoftonline.com as on Azure, which the local cloud's DNS answers
// with podid sts (docs/local-cloud.md); the sts CA is the image's system
// trust store's file.
//
//	wiclient [-default] [-no-instance-discovery] [-scope SCOPE] [-out FILE]
//
// -no-instance-discovery is for a process outside the cluster (the
// integration test runs this binary on the host, against a loopback sts):
// there no DNS answers login.microsoftonline.com, and nothing may ask the
// internet's.
//
// The loop (failures printed with their AADSTS code), output and "cat" are
// azclient's.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"

	"github.com/podid/podid/test/e2e/images/azclient"
)

func main() {
	azclient.Main("wiclient", func(fs *flag.FlagSet) func() (azcore.TokenCredential, error) {
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
	})
}
