package csiprovider

import (
	"context"
	"fmt"
	"slices"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"

	"github.com/podid/podid/internal/workloadidentity"
)

// PodIdentities obtains the identity a pod's v1 binding (AzureIdentityBinding)
// gives it, for usePodIdentity.
type PodIdentities interface {
	Credential(ctx context.Context, m *Mount, c Cloud) (azcore.TokenCredential, error)
}

// PodCredentials decides whose identity a mount uses, always the mounting
// pod's:
//
//   - clientID and useVMManagedIdentity + userAssignedIdentityID: the pod's
//     own ServiceAccount token, which the driver requested from the kubelet
//     bound to the pod (CSIDriver tokenRequests, audience
//     api://AzureADTokenExchange), is exchanged at the identity provider for
//     that identity. The identity provider, not the node, decides: the
//     identity must have a federated credential naming the pod's
//     ServiceAccount. For useVMManagedIdentity that federated credential is
//     the administrator's grant; without it the mount fails naming the grant
//     that is missing.
//   - usePodIdentity: PodIdentities (the node agent's rules for the pod).
//
// The provider holds no credential of its own for any identity.
type PodCredentials struct {
	// Transport reaches the identity provider (carry its CA); nil: azcore's default.
	Transport policy.Transporter
	// PodIdentity serves usePodIdentity; nil refuses it.
	PodIdentity PodIdentities
}

var _ Credentials = (*PodCredentials)(nil)

// Credential implements Credentials.
func (p *PodCredentials) Credential(ctx context.Context, m *Mount, c Cloud) (azcore.TokenCredential, error) {
	switch m.Mode {
	case ModePodIdentity:
		if p.PodIdentity == nil {
			return nil, &IdentityError{Mode: m.Mode, Pod: m.Pod, Code: "PodIdentityDisabled", Denied: true,
				Msg: "usePodIdentity is not enabled on this provider (--pod-identity-socket): use clientID or useVMManagedIdentity"}
		}
		return p.PodIdentity.Credential(ctx, m, c)
	case ModeWorkloadIdentity, ModeVMManagedIdentity:
	default:
		return nil, &IdentityError{Mode: m.Mode, Pod: m.Pod, Code: "NoIdentity", Denied: true, Msg: "no identity mode"}
	}
	if m.SAToken == "" {
		return nil, &IdentityError{Mode: m.Mode, ClientID: m.IdentityClientID, Pod: m.Pod, Code: "NoServiceAccountToken", Denied: true,
			Msg: "the driver passed no ServiceAccount token for audience " + workloadidentity.TokenAudience +
				": the secrets-store.csi.k8s.io CSIDriver object needs tokenRequests with that audience"}
	}
	tok := m.SAToken
	cred, err := azidentity.NewClientAssertionCredential(m.TenantID, m.IdentityClientID,
		func(context.Context) (string, error) { return tok, nil },
		&azidentity.ClientAssertionCredentialOptions{
			ClientOptions: azcore.ClientOptions{
				Cloud:     cloud.Configuration{ActiveDirectoryAuthorityHost: c.Authority},
				Transport: p.Transport,
				Retry:     policy.RetryOptions{MaxRetries: 1},
			},
			// Instance discovery would ask the public cloud about the authority.
			DisableInstanceDiscovery: true,
		})
	if err != nil {
		return nil, &IdentityError{Mode: m.Mode, ClientID: m.IdentityClientID, Pod: m.Pod, Code: "InvalidIdentity", Denied: true, Err: err}
	}
	return &grantHint{cred: cred, m: m}, nil
}

// missingFICCodes are the identity provider's answers when no federated
// credential of the identity names the assertion's issuer and subject.
var missingFICCodes = []string{"AADSTS70021", "AADSTS700211", "AADSTS700212", "AADSTS700213", "AADSTS7002138"}

// grantHint says which grant is missing when the identity provider finds
// no federated credential for the pod's ServiceAccount.
type grantHint struct {
	cred azcore.TokenCredential
	m    *Mount
}

func (g *grantHint) GetToken(ctx context.Context, o policy.TokenRequestOptions) (azcore.AccessToken, error) {
	t, err := (&identityCheck{cred: g.cred, m: g.m}).GetToken(ctx, o)
	if err == nil {
		return t, nil
	}
	ie, ok := err.(*IdentityError)
	if !ok || !slices.Contains(missingFICCodes, ie.Code) {
		return t, err
	}
	sa := g.m.Pod.Namespace + "/" + g.m.Pod.ServiceAccount
	answer := ie.Code + ": " + ie.Msg
	switch g.m.Mode {
	case ModeVMManagedIdentity:
		ie.Code = "NoSecretMountGrant"
		ie.Msg = fmt.Sprintf("no grant lets ServiceAccount %s mount secrets with this identity (an administrator grants it with a federated credential for %s on identity %s: podid fic create --identity <its name> --service-account %s, or --namespace %s for every ServiceAccount of the namespace); the identity provider answered %s",
			sa, subject(g.m.Pod), g.m.IdentityClientID, sa, g.m.Pod.Namespace, answer)
	case ModeWorkloadIdentity:
		ie.Msg = fmt.Sprintf("ServiceAccount %s is not allowed this identity (no federated credential for %s: podid fic create --identity <its name> --service-account %s); the identity provider answered %s",
			sa, subject(g.m.Pod), sa, answer)
	}
	return t, ie
}

// subject is the pod's ServiceAccount as a federated credential names it.
func subject(p Pod) string { return "system:serviceaccount:" + p.Namespace + ":" + p.ServiceAccount }
