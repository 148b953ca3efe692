package cli

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/arm"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"

	"github.com/podid/podid/internal/claimsexpr"
)

// ficAPIVersion is the Microsoft.ManagedIdentity api-version that carries
// claimsMatchingExpression (flexible federated credentials).
const ficAPIVersion = "2025-01-31-preview"

// NamespaceExpression is the claims matching expression that trusts every
// ServiceAccount of namespace ns.
func NamespaceExpression(ns string) string {
	return "claims['sub'] matches '" + Subject(ns, "*") + "'"
}

// armFIC is a federatedIdentityCredentials resource as ARM answers it.
type armFIC struct {
	Name       string `json:"name"`
	Properties struct {
		Issuer                   string   `json:"issuer"`
		Subject                  *string  `json:"subject"`
		Audiences                []string `json:"audiences"`
		ClaimsMatchingExpression *struct {
			Value           string `json:"value"`
			LanguageVersion int    `json:"languageVersion"`
		} `json:"claimsMatchingExpression"`
	} `json:"properties"`
}

func (x armFIC) credential(identity string) FederatedCredential {
	f := FederatedCredential{Name: x.Name, Identity: identity, Issuer: x.Properties.Issuer, Audiences: x.Properties.Audiences}
	if x.Properties.Subject != nil {
		f.Subject = *x.Properties.Subject
	}
	if e := x.Properties.ClaimsMatchingExpression; e != nil {
		f.ClaimsMatchingExpression = e.Value
	}
	return f
}

// ficURL is the URL of an identity's federated credentials (name "": the
// collection).
func (a *azure) ficURL(identity, name string) string {
	endpoint := strings.TrimSuffix(a.armOpts.Cloud.Services[cloud.ResourceManager].Endpoint, "/")
	u := endpoint + "/subscriptions/" + url.PathEscape(a.sub) + "/resourceGroups/" + url.PathEscape(a.rg) +
		"/providers/Microsoft.ManagedIdentity/userAssignedIdentities/" + url.PathEscape(identity) + "/federatedIdentityCredentials"
	if name != "" {
		u += "/" + url.PathEscape(name)
	}
	return u + "?api-version=" + ficAPIVersion
}

// armDo sends one ARM request through the SDK's ARM pipeline (the same
// credential, retries and transport as armmsi's) and decodes the answer.
func (a *azure) armDo(ctx context.Context, method, u string, body, out any) error {
	c, err := arm.NewClient("podid", "v1.0.0", a.cred, a.armOpts)
	if err != nil {
		return err
	}
	req, err := runtime.NewRequest(ctx, method, u)
	if err != nil {
		return err
	}
	if body != nil {
		if err := runtime.MarshalAsJSON(req, body); err != nil {
			return err
		}
	}
	resp, err := c.Pipeline().Do(req)
	if err != nil {
		return err
	}
	if !runtime.HasStatusCode(resp, http.StatusOK, http.StatusCreated) {
		return runtime.NewResponseError(resp)
	}
	return runtime.UnmarshalAsJSON(resp, out)
}

// putFlexibleFIC creates or replaces a flexible federated credential.
func (a *azure) putFlexibleFIC(ctx context.Context, identity string, f FederatedCredential) (FederatedCredential, error) {
	body := map[string]any{"properties": map[string]any{
		"issuer": f.Issuer, "audiences": f.Audiences,
		"claimsMatchingExpression": map[string]any{"value": f.ClaimsMatchingExpression, "languageVersion": claimsexpr.LanguageVersion},
	}}
	var got armFIC
	if err := a.armDo(ctx, http.MethodPut, a.ficURL(identity, f.Name), body, &got); err != nil {
		return f, cloudError(fmt.Sprintf("create federated credential %s of identity %s", f.Name, identity), err)
	}
	return got.credential(identity), nil
}
