package cli

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	authenticationv1 "k8s.io/api/authentication/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// exchangeTokenSeconds is the lifetime of the service-account token doctor
// mints, as the agent does.
const exchangeTokenSeconds = 600

// exchange does what the pod's SDK (or the agent) does: a service-account
// token for the pod's ServiceAccount, bound to the pod, audience
// api://AzureADTokenExchange, sent as client_assertion to the authority.
// Neither token is printed or kept.
func (d *doc) exchange(ctx context.Context, saName, authority, tenant, clientID string) {
	if d.o.noExchange {
		d.rep.add("exchange", Skip, "token exchange skipped (--no-exchange)", "")
		return
	}
	exp := int64(exchangeTokenSeconds)
	tr, err := d.k.cs.CoreV1().ServiceAccounts(d.pod.Namespace).CreateToken(ctx, saName, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{
			Audiences:         []string{ExchangeAudience},
			ExpirationSeconds: &exp,
			BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: d.pod.Name, UID: d.pod.UID},
		},
	}, metav1.CreateOptions{})
	if apierrors.IsForbidden(err) {
		d.rep.add("exchange", Warn, fmt.Sprintf("token exchange not tried: you may not create serviceaccounts/token in %s (needed for this check)", d.pod.Namespace), "")
		return
	}
	if err != nil {
		d.rep.add("exchange", Fail, "service-account token request failed: "+oneLine(err.Error()), "")
		return
	}
	assertion := tr.Status.Token
	hc, err := d.httpClient()
	if err != nil {
		d.rep.add("exchange", Fail, err.Error(), "")
		return
	}
	opts := azcore.ClientOptions{
		Cloud:     cloud.Configuration{ActiveDirectoryAuthorityHost: strings.TrimRight(authority, "/") + "/"},
		Transport: hc,
		Retry:     policy.RetryOptions{MaxRetries: -1},
	}
	cred, err := azidentity.NewClientAssertionCredential(tenant, clientID,
		func(context.Context) (string, error) { return assertion, nil },
		&azidentity.ClientAssertionCredentialOptions{ClientOptions: opts, DisableInstanceDiscovery: true})
	if err != nil {
		d.rep.add("exchange", Fail, "build the exchange: "+oneLine(err.Error()), "")
		return
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_, err = cred.GetToken(cctx, policy.TokenRequestOptions{Scopes: []string{strings.TrimRight(d.o.resource, "/") + "/.default"}})
	if err != nil {
		msg := "the identity provider refused the exchange: "
		if e := aadstsOf(err); e != nil {
			msg += e.Error()
		} else {
			msg += oneLine(err.Error())
		}
		d.rep.add("exchange", Fail, msg, fmt.Sprintf("check the federated credential of client %s: issuer = the cluster's, subject %s, audience %s",
			clientID, Subject(d.pod.Namespace, saName), ExchangeAudience))
		return
	}
	d.rep.add("exchange", Pass, fmt.Sprintf("the identity provider issued a token for client %s, resource %s (not shown)", clientID, d.o.resource), "")
}
