// Command wiclient is the workload of the workload-identity end-to-end test
// (test/e2e/workload_identity_test.go). It does what an application using
// the Azure SDK for Go does, and nothing more: the unmodified
// azidentity.WorkloadIdentityCredential configured only by the environment
// the podid webhook injects (AZURE_CLIENT_ID, AZURE_TENANT_ID,
// AZURE_FEDERATED_TOKEN_FILE, AZURE_AUTHORITY_HOST) and trusting the
// authority through SSL_CERT_FILE. Instance discovery is disabled, as every
// non-Entra authority requires.
//
//	wiclient [-scope SCOPE] [-out FILE]
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
	azclient.Main("wiclient", func(*flag.FlagSet) func() (azcore.TokenCredential, error) {
		return func() (azcore.TokenCredential, error) {
			for _, k := range []string{"AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_FEDERATED_TOKEN_FILE", "AZURE_AUTHORITY_HOST", "SSL_CERT_FILE"} {
				fmt.Printf("wiclient: %s=%s\n", k, os.Getenv(k)) // paths and ids, no secrets
			}
			cred, err := azidentity.NewWorkloadIdentityCredential(&azidentity.WorkloadIdentityCredentialOptions{
				DisableInstanceDiscovery: true,
			})
			if err != nil {
				return nil, fmt.Errorf("NewWorkloadIdentityCredential: %w", err)
			}
			return cred, nil
		}
	})
}
