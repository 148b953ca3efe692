package sts_test

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"

	"github.com/podid/podid/internal/sts"
	"github.com/podid/podid/internal/sts/ststest"
)

// The local cloud (docs/local-cloud.md): the sts answers Azure's public
// names, its v2 issuer is Entra's public one.
const (
	loginHost = "login.microsoftonline.com"
	armHost   = "management.azure.com"
)

func startLocalCloud(t *testing.T, b *sts.Bootstrap) *ststest.Server {
	t.Helper()
	return ststest.Start(t, ststest.Options{Bootstrap: b, Configure: func(c *sts.Config) {
		c.Hosts = append(c.Hosts, loginHost, armHost)
		c.PublicURL = "https://" + loginHost
	}})
}

// publicNameClient reaches srv for every https name, as the local cluster's
// DNS makes it; TLS still verifies the name against the sts CA.
func publicNameClient(srv *ststest.Server) *http.Client {
	tr := srv.Transport()
	addr := strings.TrimPrefix(srv.URL, "https://")
	d := &net.Dialer{Timeout: 5 * time.Second}
	tr.DialContext = func(ctx context.Context, network, _ string) (net.Conn, error) {
		return d.DialContext(ctx, network, addr)
	}
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

func getDoc(t *testing.T, c *http.Client, u string, wantStatus int) map[string]any {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != wantStatus {
		t.Fatalf("GET %s: %d %s, want %d", u, resp.StatusCode, b, wantStatus)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("GET %s: not JSON: %s", u, b)
	}
	return m
}

// MSAL's instance discovery, in Entra's shape, for authorities on our names
// only.
func TestInstanceDiscoveryShape(t *testing.T) {
	srv := startLocalCloud(t, nil)
	c := publicNameClient(srv)
	tid := srv.TenantID
	ae := func(s string) string { return url.QueryEscape(s) }
	cases := []struct {
		name       string
		query      string
		status     int
		tenantDisc string // want tenant_discovery_endpoint
		alias      string // want the one alias
		wantErr    string
	}{
		{"tenant authority (MSAL Go, Python)", "api-version=1.1&authorization_endpoint=" + ae("https://"+loginHost+"/"+tid+"/oauth2/v2.0/authorize"),
			200, "https://" + loginHost + "/" + tid + "/v2.0/.well-known/openid-configuration", loginHost, ""},
		{"common authority (MSAL's alias lookup)", "api-version=1.1&authorization_endpoint=" + ae("https://"+loginHost+"/common/oauth2/authorize"),
			200, "https://" + loginHost + "/common/v2.0/.well-known/openid-configuration", loginHost, ""},
		{"no authority: the host asked", "api-version=1.1",
			200, "https://" + loginHost + "/common/v2.0/.well-known/openid-configuration", loginHost, ""},
		{"authority elsewhere", "api-version=1.1&authorization_endpoint=" + ae("https://login.example.com/"+tid+"/oauth2/v2.0/authorize"),
			400, "", "", "invalid_instance"},
		{"plain http authority", "api-version=1.1&authorization_endpoint=" + ae("http://"+loginHost+"/"+tid+"/oauth2/v2.0/authorize"),
			400, "", "", "invalid_instance"},
		{"no api-version", "authorization_endpoint=" + ae("https://"+loginHost+"/common/oauth2/authorize"), 400, "", "", "invalid_request"},
		{"repeated authority", "api-version=1.1&authorization_endpoint=a&authorization_endpoint=b", 400, "", "", "invalid_request"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			doc := getDoc(t, c, "https://"+loginHost+"/common/discovery/instance?"+tc.query, tc.status)
			if tc.wantErr != "" {
				if doc["error"] != tc.wantErr || doc["error_codes"] == nil {
					t.Errorf("error = %v, want %s with error_codes", doc, tc.wantErr)
				}
				if strings.Contains(doc["error_description"].(string), "login.example.com") && tc.tenantDisc != "" {
					t.Errorf("error echoes the foreign host as valid: %v", doc)
				}
				return
			}
			if doc["tenant_discovery_endpoint"] != tc.tenantDisc || doc["api-version"] != "1.1" {
				t.Errorf("doc = %v, want tenant_discovery_endpoint %s", doc, tc.tenantDisc)
			}
			md, _ := doc["metadata"].([]any)
			if len(md) != 1 {
				t.Fatalf("metadata = %v, want one entry", doc["metadata"])
			}
			m := md[0].(map[string]any)
			al, _ := m["aliases"].([]any)
			if m["preferred_network"] != tc.alias || m["preferred_cache"] != tc.alias || len(al) != 1 || al[0] != tc.alias {
				t.Errorf("metadata = %v, want %s", m, tc.alias)
			}
		})
	}
}

// Tenant discovery by the public name: Entra's endpoints on that name, the
// v2 issuer Entra's public one, the v1 issuer sts.windows.net.
func TestTenantDiscoveryByPublicName(t *testing.T) {
	srv := startLocalCloud(t, nil)
	c := publicNameClient(srv)
	tid := srv.TenantID
	base := "https://" + loginHost
	cases := []struct {
		path, issuer, token, jwks string
	}{
		{"/" + tid + "/v2.0/.well-known/openid-configuration", base + "/" + tid + "/v2.0", base + "/" + tid + "/oauth2/v2.0/token", base + "/" + tid + "/discovery/v2.0/keys"},
		{"/podid.test/v2.0/.well-known/openid-configuration", base + "/" + tid + "/v2.0", base + "/" + tid + "/oauth2/v2.0/token", base + "/" + tid + "/discovery/v2.0/keys"},
		{"/" + tid + "/.well-known/openid-configuration", "https://sts.windows.net/" + tid + "/", base + "/" + tid + "/oauth2/token", base + "/common/discovery/keys"},
		{"/common/v2.0/.well-known/openid-configuration", base + "/{tenantid}/v2.0", base + "/{tenantid}/oauth2/v2.0/token", base + "/{tenantid}/discovery/v2.0/keys"},
	}
	for _, tc := range cases {
		doc := getDoc(t, c, base+tc.path, 200)
		if doc["issuer"] != tc.issuer || doc["token_endpoint"] != tc.token || doc["jwks_uri"] != tc.jwks || doc["cloud_instance_name"] != loginHost {
			t.Errorf("%s: issuer %v token_endpoint %v jwks_uri %v cloud_instance_name %v; want %s %s %s %s",
				tc.path, doc["issuer"], doc["token_endpoint"], doc["jwks_uri"], doc["cloud_instance_name"], tc.issuer, tc.token, tc.jwks, loginHost)
		}
	}
}

// The unmodified Azure SDK with default options — no authority, no
// DisableInstanceDiscovery: it validates login.microsoftonline.com, finds
// the tenant and gets an ARM token; ARM then lists the subscription as `az
// login` reads it.
func TestSDKDefaultOptionsByPublicName(t *testing.T) {
	srv := startLocalCloud(t, nil)
	srv.AddIdentity(t, "in-subscription", "", "") // binds the subscription to the tenant
	c := publicNameClient(srv)
	cred, err := azidentity.NewClientSecretCredential(srv.TenantID, ststest.AdminClientID, ststest.AdminSecret,
		&azidentity.ClientSecretCredentialOptions{ClientOptions: azcore.ClientOptions{Transport: c}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tok, err := cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{"https://management.core.windows.net//.default"}})
	if err != nil {
		t.Fatalf("GetToken with default options: %v", err)
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+armHost+"/subscriptions?api-version=2022-12-01", nil)
	req.Header.Set("Authorization", "Bearer "+tok.Token)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var list struct {
		Value []struct {
			ID, SubscriptionID, TenantID, State, DisplayName string
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /subscriptions: %d %v", resp.StatusCode, err)
	}
	if len(list.Value) != 1 || list.Value[0].SubscriptionID != ststest.SubscriptionID || list.Value[0].ID != "/subscriptions/"+ststest.SubscriptionID ||
		list.Value[0].TenantID != srv.TenantID || list.Value[0].State != "Enabled" || list.Value[0].DisplayName == "" {
		t.Errorf("subscriptions = %+v, want %s of tenant %s", list.Value, ststest.SubscriptionID, srv.TenantID)
	}
}

// GET /subscriptions and /tenants: who sees what (Azure RBAC: a role
// assignment at the subscription, below it or at the root), and what is
// refused.
func TestARMAccountLists(t *testing.T) {
	const (
		otherTenant = "8a9d1c2e-3f4b-4c5d-9e6f-7a8b9c0d1e2f"
		otherSub    = "1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f"
		secondSub   = "5e6f7a8b-9c0d-4e1f-8a2b-4c5d6e7f8a9b"
		readerID    = "2b3c4d5e-6f7a-4b8c-9d0e-1f2a3b4c5d6e" // Reader at the subscription
		rgReaderID  = "6f7a8b9c-0d1e-4f2a-9b3c-5d6e7f8a9b0c" // Reader at a resource group of the second
		rootID      = "7a8b9c0d-1e2f-4a3b-8c4d-6e7f8a9b0c1d" // Reader at the tenant root "/"
		noRoleID    = "3c4d5e6f-7a8b-4c9d-8e0f-2a3b4c5d6e7f"
		otherID     = "4d5e6f7a-8b9c-4d0e-9f1a-3b4c5d6e7f8a"
		secret      = "local-cloud-test-secret-0123456789"
	)
	b := &sts.Bootstrap{Tenants: []sts.BootstrapTenant{{
		ID: otherTenant, Domains: []string{"other.test"},
		Applications:    []sts.BootstrapApplication{{ClientID: otherID, DisplayName: "other", Secrets: []sts.BootstrapSecret{{Value: secret}}}},
		Identities:      []sts.BootstrapIdentity{{Subscription: otherSub, ResourceGroup: "rg", Name: "theirs", Location: "westeurope"}},
		RoleAssignments: []sts.BootstrapRoleAssignment{{Principal: otherID, Scope: "/subscriptions/" + otherSub, Role: "Reader"}},
	}}}
	srv := startLocalCloud(t, b)
	srv.AddIdentity(t, "ours", "", "")
	ctx := context.Background()
	scopes := map[string]string{
		readerID:   "/subscriptions/" + ststest.SubscriptionID,
		rgReaderID: "/subscriptions/" + secondSub + "/resourceGroups/rg2", // binds the second subscription to our tenant
		rootID:     "/",
	}
	for _, id := range []string{readerID, rgReaderID, rootID, noRoleID} {
		p, _, err := srv.PutApplication(ctx, srv.TenantID, sts.Application{ClientID: id, DisplayName: id[:8]})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := srv.AddSecret(ctx, id, "test", secret, time.Now().Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		if sc, ok := scopes[id]; ok {
			if _, _, err := srv.PutAzureRoleAssignment(ctx, sts.AzureRoleAssignment{TenantID: srv.TenantID, Scope: sc, Role: "Reader", PrincipalID: p.ObjectID}); err != nil {
				t.Fatal(err)
			}
		}
	}
	c := publicNameClient(srv)
	token := func(tenant, client, scope string) string {
		t.Helper()
		resp, err := c.PostForm("https://"+loginHost+"/"+tenant+"/oauth2/v2.0/token", url.Values{
			"grant_type": {"client_credentials"}, "client_id": {client}, "client_secret": {secret}, "scope": {scope}})
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out struct {
			AccessToken string `json:"access_token"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || out.AccessToken == "" {
			t.Fatalf("token for %s: %d %v", client, resp.StatusCode, err)
		}
		return out.AccessToken
	}
	arm := "https://management.core.windows.net//.default"
	reader := token(srv.TenantID, readerID, arm)
	rgReader := token(srv.TenantID, rgReaderID, arm)
	root := token(srv.TenantID, rootID, arm)
	noRole := token(srv.TenantID, noRoleID, arm)
	other := token(otherTenant, otherID, arm)
	storage := token(srv.TenantID, readerID, "https://storage.azure.com/.default")

	type row struct {
		name, method, path, bearer string
		status                     int
		want                       []string // ids listed
		errCode                    string
	}
	cases := []row{
		{"reader at a subscription sees it alone", "GET", "/subscriptions?api-version=2022-12-01", reader, 200, []string{"/subscriptions/" + ststest.SubscriptionID}, ""},
		{"api-version az 2.45 sends", "GET", "/subscriptions?api-version=2021-01-01", reader, 200, []string{"/subscriptions/" + ststest.SubscriptionID}, ""},
		{"reader at a resource group sees its subscription", "GET", "/subscriptions?api-version=2022-12-01", rgReader, 200, []string{"/subscriptions/" + secondSub}, ""},
		{"reader at the root sees every subscription of its tenant", "GET", "/subscriptions?api-version=2022-12-01", root, 200, []string{"/subscriptions/" + ststest.SubscriptionID, "/subscriptions/" + secondSub}, ""},
		{"no role assignment: none", "GET", "/subscriptions?api-version=2022-12-01", noRole, 200, nil, ""},
		{"another tenant's reader: only its own", "GET", "/subscriptions?api-version=2022-12-01", other, 200, []string{"/subscriptions/" + otherSub}, ""},
		{"tenants: the caller's", "GET", "/tenants?api-version=2022-12-01", noRole, 200, []string{"/tenants/" + srv.TenantID}, ""},
		{"tenants of the other tenant", "GET", "/tenants?api-version=2022-12-01", other, 200, []string{"/tenants/" + otherTenant}, ""},
		{"no token", "GET", "/subscriptions?api-version=2022-12-01", "", 401, nil, "AuthenticationFailed"},
		{"token for storage", "GET", "/subscriptions?api-version=2022-12-01", storage, 401, nil, "InvalidAuthenticationTokenAudience"},
		{"forged token", "GET", "/tenants?api-version=2022-12-01", reader[:len(reader)-4] + "AAAA", 401, nil, "InvalidAuthenticationToken"},
		{"no api-version", "GET", "/subscriptions", reader, 400, nil, "MissingApiVersionParameter"},
		{"unknown api-version", "GET", "/tenants?api-version=2099-01-01", reader, 400, nil, "InvalidApiVersionParameter"},
		{"write", "POST", "/subscriptions?api-version=2022-12-01", reader, 405, nil, "MethodNotAllowed"},
		{"seeing a subscription is not reading another", "GET", "/subscriptions/" + ststest.SubscriptionID + "/providers/Microsoft.ManagedIdentity/userAssignedIdentities?api-version=2023-01-31", rgReader, 403, nil, "AuthorizationFailed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, "https://"+armHost+tc.path, nil)
			if tc.bearer != "" {
				req.Header.Set("Authorization", "Bearer "+tc.bearer)
			}
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var body struct {
				Value []struct {
					ID string `json:"id"`
				} `json:"value"`
				Error struct {
					Code string `json:"code"`
				} `json:"error"`
			}
			if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
				t.Fatalf("not JSON: %v", err)
			}
			if resp.StatusCode != tc.status || body.Error.Code != tc.errCode {
				t.Fatalf("%s %s: %d %q, want %d %q", tc.method, tc.path, resp.StatusCode, body.Error.Code, tc.status, tc.errCode)
			}
			var got []string
			for _, v := range body.Value {
				got = append(got, v.ID)
			}
			if strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Errorf("listed %v, want %v", got, tc.want)
			}
		})
	}
}
