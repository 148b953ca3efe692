package sts_test

import (
	"fmt"

	"github.com/podid/podid/internal/sts"
)

func ExampleParseBootstrap() {
	b, err := sts.ParseBootstrap([]byte(`
tenants:
- id: 72f988bf-86f1-41af-91ab-2d7cd011db47
  identities:
  - subscription: 0b1f6471-1bf0-4dda-aec3-cb9272f09590
    resourceGroup: rg
    name: web
    federatedIdentityCredentials:
    - name: k8s-web
      issuer: https://kubernetes.default.svc
      subject: system:serviceaccount:default:web
`))
	if err != nil {
		fmt.Println(err)
		return
	}
	id := b.Tenants[0].Identities[0]
	fmt.Println(sts.IdentityResourceID(id.Subscription, id.ResourceGroup, id.Name))
	fmt.Println(id.FederatedCreds[0].Subject)
	// Output:
	// /subscriptions/0b1f6471-1bf0-4dda-aec3-cb9272f09590/resourcegroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/web
	// system:serviceaccount:default:web
}
