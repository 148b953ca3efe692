package sts_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/arm"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/msi/armmsi"

	"github.com/podid/podid/internal/sts"
	"github.com/podid/podid/internal/sts/ststest"
)

// TestFlexibleFederatedCredential: a federatedIdentityCredentials resource
// with Entra's claimsMatchingExpression (languageVersion 1) instead of a
// subject, through ARM with the SDK's pipeline (armmsi has no field for
// it), trusts every ServiceAccount of one namespace and nothing else; bad
// expressions are refused with 400.
func TestFlexibleFederatedCredential(t *testing.T) {
	is := ststest.NewIssuer(t)
	srv := startWithIssuer(t, is, ststest.Options{})
	ctx := context.Background()
	cred, opts := armOptions(srv)
	ids, err := armmsi.NewUserAssignedIdentitiesClient(ststest.SubscriptionID, cred, opts)
	if err != nil {
		t.Fatal(err)
	}
	id, err := ids.CreateOrUpdate(ctx, "rg-ns", "id-shop", armmsi.Identity{Location: to.Ptr("westeurope")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	clientID := *id.Properties.ClientID
	pl, err := arm.NewClient("podid-test", "v0.0.0", cred, opts)
	if err != nil {
		t.Fatal(err)
	}
	put := func(name string, props map[string]any) (int, map[string]any) {
		t.Helper()
		req, err := runtime.NewRequest(ctx, http.MethodPut, srv.URL+*id.ID+"/federatedIdentityCredentials/"+name+"?api-version=2025-01-31-preview")
		if err != nil {
			t.Fatal(err)
		}
		if err := runtime.MarshalAsJSON(req, map[string]any{"properties": props}); err != nil {
			t.Fatal(err)
		}
		resp, err := pl.Pipeline().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var body map[string]any
		b, _ := runtime.Payload(resp)
		_ = json.Unmarshal(b, &body)
		return resp.StatusCode, body
	}
	expr := func(v string, lv int) map[string]any {
		return map[string]any{"issuer": is.URL, "audiences": []string{sts.DefaultFICAudience}, "claimsMatchingExpression": map[string]any{"value": v, "languageVersion": lv}}
	}
	st, body := put("ns-shop", expr("claims['sub'] matches 'system:serviceaccount:shop:*'", 1))
	if st != http.StatusCreated {
		t.Fatalf("PUT: %d %v", st, body)
	}
	props, _ := body["properties"].(map[string]any)
	if cme, _ := props["claimsMatchingExpression"].(map[string]any); cme["value"] != "claims['sub'] matches 'system:serviceaccount:shop:*'" || cme["languageVersion"] != float64(1) || props["subject"] != nil {
		t.Errorf("answer properties %v", props)
	}
	// The same expression under another name is refused, as a duplicate subject is.
	if st, body := put("ns-shop-2", expr("claims['sub'] matches 'system:serviceaccount:shop:*'", 1)); st != http.StatusBadRequest {
		t.Errorf("duplicate expression: %d %v", st, body)
	}
	// armmsi reads it back (the subject is null).
	fics, err := armmsi.NewFederatedIdentityCredentialsClient(ststest.SubscriptionID, cred, opts)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := fics.Get(ctx, "rg-ns", "id-shop", "ns-shop", nil); err != nil || got.Properties.Subject != nil {
		t.Errorf("Get: %v %+v", err, got)
	}

	exchange := func(subject string) error {
		t.Helper()
		tok := is.Token(t, subject, sts.DefaultFICAudience, time.Now(), time.Hour, nil)
		c, err := azidentity.NewClientAssertionCredential(srv.TenantID, clientID, func(context.Context) (string, error) { return tok, nil },
			&azidentity.ClientAssertionCredentialOptions{ClientOptions: clientOptions(srv), DisableInstanceDiscovery: true})
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{storage + "/.default"}})
		return err
	}
	for _, sub := range []string{"system:serviceaccount:shop:web", "system:serviceaccount:shop:worker"} {
		if err := exchange(sub); err != nil {
			t.Errorf("%s: %v", sub, err)
		}
	}
	// The adversaries: a namespace sharing the prefix, another namespace,
	// another issuer's shape of subject.
	for _, sub := range []string{"system:serviceaccount:shop-evil:web", "system:serviceaccount:other:web", "System:serviceaccount:shop:web", "repo:shop/x:ref:refs/heads/main"} {
		if err := exchange(sub); err == nil || !strings.Contains(err.Error(), "AADSTS700213") {
			t.Errorf("%s: %v, want AADSTS700213", sub, err)
		}
	}

	// Strict: both subject and expression, another language version,
	// operators Entra does not define, other claims.
	for _, tt := range []struct {
		props map[string]any
		want  string
	}{
		{func() map[string]any { p := expr("claims['sub'] eq 'x'", 1); p["subject"] = "x"; return p }(), "mutually exclusive"},
		{expr("claims['sub'] matches 'x'", 2), "languageVersion 2"},
		{expr("claims['sub'] like 'x'", 1), "operator"},
		{expr("claims['sub'] matches 'a' or claims['sub'] matches 'b'", 1), "and another term"},
		{expr("claims['namespace'] eq 'shop'", 1), "not supported"},
		{expr("", 1), "empty"},
	} {
		st, body := put("bad", tt.props)
		msg, _ := json.Marshal(body)
		if st != http.StatusBadRequest || !strings.Contains(string(msg), tt.want) {
			t.Errorf("%v: %d %s, want 400 with %q", tt.props, st, msg, tt.want)
		}
	}
}
