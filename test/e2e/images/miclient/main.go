// Command miclient is the workload of the agent end-to-end test
// (test/e2e/agent_test.go). It does what an application using the Azure SDK
// for Go on a VM does, and nothing more: the unmodified
// azidentity.ManagedIdentityCredential with no endpoint override, so its
// requests go to http://169.254.169.254/metadata/identity/oauth2/token and
// reach podid agent only through the node's interception rule.
//
//	miclient [-scope SCOPE] [-client-id ID] [-max-retries N] [-out FILE]
//
// The loop, output and "cat" are azclient's. -max-retries sets the SDK's
// own retry count (azcore semantics: 0 = the SDK default, -1 = no retries).
package main

import (
	"flag"
	"fmt"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"

	"github.com/podid/podid/test/e2e/images/azclient"
)

func main() {
	azclient.Main("miclient", func(fs *flag.FlagSet) func() (azcore.TokenCredential, error) {
		clientID := fs.String("client-id", "", "user-assigned identity to ask for (empty: let the metadata service choose)")
		maxRetries := fs.Int("max-retries", 0, "the SDK's retry count (0: SDK default, -1: none)")
		return func() (azcore.TokenCredential, error) {
			opts := &azidentity.ManagedIdentityCredentialOptions{
				ClientOptions: azcore.ClientOptions{Retry: policy.RetryOptions{MaxRetries: int32(*maxRetries)}},
			}
			if *clientID != "" {
				opts.ID = azidentity.ClientID(*clientID)
			}
			cred, err := azidentity.NewManagedIdentityCredential(opts)
			if err != nil {
				return nil, fmt.Errorf("NewManagedIdentityCredential: %w", err)
			}
			return cred, nil
		}
	})
}
