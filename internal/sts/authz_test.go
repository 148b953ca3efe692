package sts_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/podid/podid/internal/sts"
	"github.com/podid/podid/internal/sts/store"
	"github.com/podid/podid/internal/sts/ststest"
)

// A second tenant whose administrator plays the adversary, and the victim's
// records it goes after.
const (
	tenantB       = "5a0b1c2d-0000-4000-8000-00000000000b"
	bAdminClient  = "5a0b1c2d-0000-4000-8000-0000000000b1"
	bAdminSecret  = "tenant-b-admin-secret-0123456789"
	bReaderClient = "5a0b1c2d-0000-4000-8000-0000000000b2"
	bReaderSecret = "tenant-b-reader-secret-012345678"
	aOwnerClient  = "72f988bf-0000-4000-8000-0000000000a2"
	aOwnerSecret  = "tenant-a-second-owner-0123456789"
	victimApp     = "72f988bf-0000-4000-8000-0000000000a9"
	victimRG      = "rg-victim"
	victimID      = "id-victim"
	newTenant     = "0c0c0c0c-0000-4000-8000-00000000000c"
	newTenant2    = "0d0d0d0d-0000-4000-8000-00000000000d"
)

// twoTenants starts an sts with the default (system) tenant A, which also
// holds a victim app and identity and a second Owner app, and a tenant B with
// an Owner and a principal without any role.
func twoTenants(t *testing.T) *ststest.Server {
	t.Helper()
	b := &sts.Bootstrap{Tenants: []sts.BootstrapTenant{
		{
			ID:           ststest.TenantID,
			Applications: []sts.BootstrapApplication{{ClientID: victimApp, DisplayName: "victim"}, {ClientID: aOwnerClient, Secrets: []sts.BootstrapSecret{{Value: aOwnerSecret}}}},
			Identities:   []sts.BootstrapIdentity{{Subscription: ststest.SubscriptionID, ResourceGroup: victimRG, Name: victimID, Location: "westeurope"}},
			RoleAssignments: []sts.BootstrapRoleAssignment{
				{Principal: aOwnerClient, Resource: sts.ARMResource, Role: "Owner"},
			},
		},
		{
			ID:      tenantB,
			Domains: []string{"tenant-b.test"},
			Applications: []sts.BootstrapApplication{
				{ClientID: bAdminClient, DisplayName: "b-admin", Secrets: []sts.BootstrapSecret{{Value: bAdminSecret}}},
				{ClientID: bReaderClient, DisplayName: "b-reader", Secrets: []sts.BootstrapSecret{{Value: bReaderSecret}}},
			},
			RoleAssignments: []sts.BootstrapRoleAssignment{{Principal: bAdminClient, Resource: sts.ARMResource, Role: "Owner"}},
		},
	}}
	return ststest.Start(t, ststest.Options{Bootstrap: b})
}

// armToken gets a management token for a client with the client-credentials grant.
func armToken(t *testing.T, srv *ststest.Server, tenant, client, secret string) string {
	t.Helper()
	r := postForm(t, srv, "/"+tenant+"/oauth2/v2.0/token", "application/x-www-form-urlencoded",
		url.Values{"grant_type": {"client_credentials"}, "client_id": {client}, "client_secret": {secret}, "scope": {sts.ARMResource + "/.default"}}.Encode())
	if r.status != 200 {
		t.Fatalf("token for %s: %d %v", client, r.status, r.body)
	}
	return r.body["access_token"].(string)
}

func call(t *testing.T, srv *ststest.Server, token, method, path, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(raw)
}

// TestAuthorizationMatrix plays a second tenant's administrator (and a
// principal without a role, and no token at all) against every management
// route that names another tenant's records, and the token route with
// another tenant's client. Each row is (caller, route, target) → status;
// after the table, the victim's state is checked unchanged.
func TestAuthorizationMatrix(t *testing.T) {
	srv := twoTenants(t)
	a := ststest.TenantID
	tok := map[string]string{
		"A-system-owner": armToken(t, srv, a, ststest.AdminClientID, ststest.AdminSecret),
		"B-owner":        armToken(t, srv, tenantB, bAdminClient, bAdminSecret),
		"B-no-role":      armToken(t, srv, tenantB, bReaderClient, bReaderSecret),
		"none":           "",
	}
	const av = "?api-version=2023-01-31"
	armID := "/subscriptions/" + ststest.SubscriptionID + "/resourceGroups/" + victimRG + "/providers/Microsoft.ManagedIdentity/userAssignedIdentities/" + victimID
	armSub := "/subscriptions/" + ststest.SubscriptionID + "/providers/Microsoft.ManagedIdentity/userAssignedIdentities"
	armOther := "/subscriptions/" + ststest.SubscriptionID + "/resourceGroups/rg-new/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-new"
	const subB = "5a0b1c2d-0000-4000-8000-0000000000cc"
	armB := "/subscriptions/" + subB + "/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-b"
	armBOther := "/subscriptions/" + subB + "/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-a"
	const rav, raPath, raName = "?api-version=2022-04-01", "/providers/Microsoft.Authorization/roleAssignments/", "3f1e9a52-0000-4000-8000-000000000001"
	oid := func(client string) string {
		p, err := srv.Principal(client)
		if err != nil {
			t.Fatal(err)
		}
		return p.ObjectID
	}
	bAdminOID, bReaderOID, victimOID := oid(bAdminClient), oid(bReaderClient), oid(victimApp)
	raBody := func(principal string) string {
		return `{"properties":{"roleDefinitionId":"/subscriptions/` + subB + `/providers/Microsoft.Authorization/roleDefinitions/8e3af657-a8ff-443c-a75c-2fe8c4bcb635","principalId":"` + principal + `"}}`
	}
	fic := `{"issuer":"https://attacker.example","subject":"x"}`
	armFIC := `{"properties":{"issuer":"https://attacker.example","subject":"x","audiences":["api://AzureADTokenExchange"]}}`
	for _, tt := range []struct {
		caller, method, path, body string
		want                       int
	}{
		// Tenants: only the system tenant's Owner creates; others touch only their own.
		{"B-owner", "PUT", "/podid/v1/tenants/" + a, `{"domains":["evil.test"]}`, 403},
		{"B-owner", "PUT", "/podid/v1/tenants/" + strings.ToUpper(a), `{"domains":["evil.test"]}`, 403},
		{"B-owner", "PUT", "/podid/v1/tenants/" + newTenant, `{"domains":["new.test"]}`, 403},
		{"B-no-role", "PUT", "/podid/v1/tenants/" + tenantB, `{"domains":["b2.test"]}`, 403},
		{"none", "PUT", "/podid/v1/tenants/" + newTenant, `{}`, 401},
		{"B-owner", "PUT", "/podid/v1/tenants/" + tenantB, `{"domains":["b2.test"]}`, 200},
		{"A-system-owner", "PUT", "/podid/v1/tenants/" + newTenant2, `{"domains":["new2.test"]}`, 200},
		// Another tenant's applications, credentials and role assignments.
		{"B-owner", "GET", "/podid/v1/tenants/" + a + "/applications", "", 403},
		{"B-owner", "POST", "/podid/v1/tenants/" + a + "/applications", `{"displayName":"x"}`, 403},
		{"B-owner", "GET", "/podid/v1/tenants/" + a + "/applications/" + victimApp, "", 403},
		{"B-owner", "PUT", "/podid/v1/tenants/" + a + "/applications/" + victimApp, `{"displayName":"pwned"}`, 403},
		{"B-owner", "DELETE", "/podid/v1/tenants/" + a + "/applications/" + victimApp, "", 403},
		{"B-owner", "POST", "/podid/v1/tenants/" + a + "/applications/" + victimApp + "/secrets", `{}`, 403},
		{"B-owner", "PUT", "/podid/v1/tenants/" + a + "/applications/" + victimApp + "/federatedIdentityCredentials/x", fic, 403},
		{"B-owner", "POST", "/podid/v1/tenants/" + a + "/roleAssignments", `{"principal":"` + bAdminClient + `","resource":"https://storage.azure.com","role":"r"}`, 403},
		{"B-owner", "GET", "/podid/v1/tenants/" + a + "/roleAssignments", "", 403},
		// B's Owner names A's principal from inside its own tenant: not found.
		{"B-owner", "GET", "/podid/v1/tenants/" + tenantB + "/applications/" + victimApp, "", 404},
		{"B-owner", "POST", "/podid/v1/tenants/" + tenantB + "/applications/" + victimApp + "/secrets", `{}`, 404},
		{"B-owner", "POST", "/podid/v1/tenants/" + tenantB + "/roleAssignments", `{"principal":"` + victimApp + `","resource":"https://storage.azure.com","role":"r"}`, 400},
		{"B-no-role", "GET", "/podid/v1/tenants/" + tenantB + "/applications", "", 403},
		{"none", "GET", "/podid/v1/tenants/" + a + "/applications", "", 401},
		{"B-owner", "GET", "/podid/v1/tenants/" + tenantB + "/applications", "", 200},
		// Authorization comes before routing: another tenant's unknown route is 403.
		{"B-owner", "PATCH", "/podid/v1/tenants/" + a + "/applications", `{}`, 403},
		{"B-owner", "GET", "/podid/v1/tenants/" + a + "/nope", "", 403},
		{"B-owner", "PATCH", "/podid/v1/tenants/" + tenantB + "/applications", `{}`, 405},
		{"B-owner", "GET", "/podid/v1/tenants/" + tenantB + "/nope", "", 404},
		{"B-owner", "GET", "/podid/v1/other", "", 404},
		{"none", "GET", "/podid/v1/other", "", 401},
		// The system Owner administers every tenant through /podid/v1.
		{"A-system-owner", "GET", "/podid/v1/tenants/" + tenantB + "/applications", "", 200},
		// ARM: a subscription belongs to the tenant that first put an
		// identity in it; to any other tenant it does not exist, so another
		// tenant's identities are invisible and their names cannot be squatted.
		{"B-owner", "GET", armID + av, "", 404},
		{"B-owner", "PUT", armID + av, `{"location":"westeurope"}`, 404},
		{"B-owner", "PATCH", armID + av, `{"tags":{"a":"b"}}`, 404},
		{"B-owner", "DELETE", armID + av, "", 404},
		{"B-owner", "PUT", armOther + av, `{"location":"westeurope"}`, 404},
		{"B-owner", "GET", armSub + av, "", 404},
		{"B-owner", "GET", armID + "/federatedIdentityCredentials" + av, "", 404},
		{"B-owner", "PUT", armID + "/federatedIdentityCredentials/x" + av, armFIC, 404},
		{"B-owner", "DELETE", armID + "/federatedIdentityCredentials/x" + av, "", 404},
		{"B-owner", "PUT", armB + av, `{"location":"westeurope"}`, 201},
		{"A-system-owner", "PUT", armBOther + av, `{"location":"westeurope"}`, 404},
		{"A-system-owner", "GET", armB + av, "", 404},
		{"B-no-role", "GET", armID + av, "", 404},
		{"B-no-role", "GET", armB + av, "", 403},
		{"B-no-role", "PUT", armB + "x" + av, `{"location":"westeurope"}`, 403},
		{"none", "GET", armID + av, "", 401},
		// Azure RBAC: B's Owner cannot grant in A's subscription, nor read
		// its assignments; B's principal without a role cannot grant in B's.
		{"B-owner", "PUT", "/subscriptions/" + ststest.SubscriptionID + raPath + raName + rav, raBody(bAdminOID), 404},
		{"B-owner", "PUT", "/subscriptions/" + ststest.SubscriptionID + "/resourceGroups/" + victimRG + raPath + raName + rav, raBody(bAdminOID), 404},
		{"B-owner", "GET", "/subscriptions/" + ststest.SubscriptionID + raPath + rav, "", 404},
		{"B-owner", "GET", "/subscriptions/" + ststest.SubscriptionID + "/providers/Microsoft.Authorization/roleDefinitions" + rav, "", 404},
		{"B-no-role", "PUT", "/subscriptions/" + subB + raPath + raName + rav, raBody(bReaderOID), 403},
		{"B-no-role", "GET", "/subscriptions/" + subB + raPath + rav, "", 403},
		{"B-no-role", "PUT", raPath + raName + rav, raBody(bReaderOID), 403},
		// B's Owner grants in its own subscription, but only to its own principals.
		{"B-owner", "PUT", "/subscriptions/" + subB + raPath + raName + rav, raBody(victimOID), 400},
		{"B-owner", "PUT", "/subscriptions/" + subB + raPath + raName + rav, raBody(bReaderOID), 201},
		{"A-system-owner", "GET", "/subscriptions/" + subB + raPath + raName + rav, "", 404},
		{"A-system-owner", "DELETE", "/subscriptions/" + subB + raPath + raName + rav, "", 404},
		{"none", "GET", raPath + rav, "", 401},
		{"A-system-owner", "GET", armID + av, "", 200},
	} {
		t.Run(tt.caller+" "+tt.method+" "+tt.path, func(t *testing.T) {
			got, body := call(t, srv, tok[tt.caller], tt.method, tt.path, tt.body)
			if got != tt.want {
				t.Errorf("%d, want %d: %s", got, tt.want, body)
			}
		})
	}

	// The token route: a client is found only in its own tenant, whatever
	// path segment (id or domain) names the other one.
	for _, tt := range []struct {
		name, tenant, client, secret string
		status, code                 int
	}{
		{"B client at A by id", a, bAdminClient, bAdminSecret, 400, sts.CodeAppNotFound},
		{"B client at A by domain", "podid.test", bAdminClient, bAdminSecret, 400, sts.CodeAppNotFound},
		{"A client at B", tenantB, ststest.AdminClientID, ststest.AdminSecret, 400, sts.CodeAppNotFound},
		{"A client at A", a, ststest.AdminClientID, ststest.AdminSecret, 200, 0},
		{"B client at B by domain", "tenant-b.test", bAdminClient, bAdminSecret, 200, 0},
	} {
		t.Run("token "+tt.name, func(t *testing.T) {
			r := postForm(t, srv, "/"+tt.tenant+"/oauth2/v2.0/token", "application/x-www-form-urlencoded",
				url.Values{"grant_type": {"client_credentials"}, "client_id": {tt.client}, "client_secret": {tt.secret}, "scope": {storage + "/.default"}}.Encode())
			if tt.status == 200 {
				if r.status != 200 {
					t.Fatalf("%d %v", r.status, r.body)
				}
				return
			}
			assertAADSTS(t, r, tt.status, tt.code, "")
		})
	}

	// Nothing the adversary tried left a trace on tenant A.
	if _, ok := srv.Tenant("evil.test"); ok {
		t.Errorf("B's Owner added a domain to tenant A")
	}
	if _, ok := srv.Tenant(newTenant); ok {
		t.Errorf("B's Owner created a tenant")
	}
	if _, ok := srv.Tenant(newTenant2); !ok {
		t.Errorf("the system Owner could not create a tenant")
	}
	if p, err := srv.Principal(victimApp); err != nil || p.DisplayName != "victim" || len(p.Secrets) != 0 || len(p.FederatedCreds) != 0 {
		t.Errorf("victim app changed: %+v %v", p, err)
	}
	if got, _ := call(t, srv, tok["A-system-owner"], "GET", armID+av, ""); got != 200 {
		t.Errorf("victim identity gone: %d", got)
	}
}

// TestDomainTakeover: a tenant's Owner tries to claim names that resolve to
// another tenant (its domain, its id) or Entra's reserved names, and
// malformed names. None is accepted; the victim's paths keep resolving to
// the victim.
func TestDomainTakeover(t *testing.T) {
	srv := twoTenants(t)
	tokB := armToken(t, srv, tenantB, bAdminClient, bAdminSecret)
	for _, tt := range []struct {
		domain string
		want   int
	}{
		{"podid.test", 409},     // A's domain
		{"PODID.TEST", 409},     // … in other case
		{ststest.TenantID, 400}, // A's id
		{strings.ToUpper(ststest.TenantID), 400},
		{"11111111-2222-3333-4444-555555555555", 400}, // any GUID
		{"common", 400},
		{"organizations", 400},
		{"Consumers", 400},
		{"bad_name.test", 400},
		{"-lead.test", 400},
		{"nodot", 400},
		{"a..b", 400},
		{"has space.test", 400},
		{strings.Repeat("a", 64) + ".test", 400},
		{"1.2.3.4", 400},
		{"", 400},
		{"b-own.test", 200},
	} {
		t.Run(tt.domain, func(t *testing.T) {
			got, body := call(t, srv, tokB, "PUT", "/podid/v1/tenants/"+tenantB, `{"domains":["`+tt.domain+`"]}`)
			if got != tt.want {
				t.Errorf("%d, want %d: %s", got, tt.want, body)
			}
		})
	}
	// A's paths still resolve to A: its discovery names A's issuer, its admin
	// still gets tokens by domain, and B's client is still unknown there.
	resp, err := srv.Client().Get(srv.URL + "/podid.test/.well-known/openid-configuration")
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(raw), `"issuer":"https://sts.windows.net/`+ststest.TenantID+`/"`) {
		t.Errorf("victim's discovery: %s", raw)
	}
	armToken(t, srv, "podid.test", ststest.AdminClientID, ststest.AdminSecret)
	r := postForm(t, srv, "/podid.test/oauth2/v2.0/token", "application/x-www-form-urlencoded",
		url.Values{"grant_type": {"client_credentials"}, "client_id": {bAdminClient}, "client_secret": {bAdminSecret}, "scope": {storage + "/.default"}}.Encode())
	assertAADSTS(t, r, 400, sts.CodeAppNotFound, "unauthorized_client")
}

// TestFICIssuerValidation: issuer URLs that can never be fetched (user-info,
// query, fragment, not https) are refused on both management APIs.
func TestFICIssuerValidation(t *testing.T) {
	srv := twoTenants(t)
	tok := armToken(t, srv, ststest.TenantID, ststest.AdminClientID, ststest.AdminSecret)
	armFIC := "/subscriptions/" + ststest.SubscriptionID + "/resourceGroups/" + victimRG + "/providers/Microsoft.ManagedIdentity/userAssignedIdentities/" + victimID + "/federatedIdentityCredentials/fic-1?api-version=2023-01-31"
	appFIC := "/podid/v1/tenants/" + ststest.TenantID + "/applications/" + victimApp + "/federatedIdentityCredentials/fic-1"
	for _, tt := range []struct {
		issuer string
		want   int
	}{
		{"https://user:pw@issuer.example", 400},
		{"https://user@issuer.example", 400},
		{"https://issuer.example/?a=b", 400},
		{"https://issuer.example/?", 400},
		{"https://issuer.example/#frag", 400},
		{"https://issuer.example/#", 400},
		{"http://issuer.example", 400},
		{"https://", 400},
		{"https:opaque", 400},
		{"issuer.example", 400},
		{"https://issuer.example/a b", 400},
		{"https://issuer.example/a\\tb", 400},
		{"https://issuer.example/path", 201},
	} {
		t.Run(tt.issuer, func(t *testing.T) {
			body := `{"issuer":"` + tt.issuer + `","subject":"s"}`
			if got, b := call(t, srv, tok, "PUT", appFIC, body); got != tt.want && !(tt.want == 201 && got == 200) {
				t.Errorf("app: %d, want %d: %s", got, tt.want, b)
			}
			body = `{"properties":{"issuer":"` + tt.issuer + `","subject":"s2","audiences":["api://AzureADTokenExchange"]}}`
			if got, b := call(t, srv, tok, "PUT", armFIC, body); got != tt.want && !(tt.want == 201 && got == 200) {
				t.Errorf("ARM: %d, want %d: %s", got, tt.want, b)
			}
		})
	}
}

// TestTenantIndexNeverPrefers: state written before names were checked
// (two tenants claiming one domain, a domain equal to another tenant's id,
// a reserved name) must not make a path resolve to either claimant.
func TestTenantIndexNeverPrefers(t *testing.T) {
	state := filepath.Join(t.TempDir(), "state.db")
	db, err := bolt.Open(state, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists([]byte("tenants"))
		if err != nil {
			return err
		}
		for _, tn := range []store.Tenant{
			{ID: ststest.TenantID, Domains: []string{"podid.test", "shared.test"}},
			{ID: tenantB, Domains: []string{"shared.test", ststest.TenantID, "common"}},
		} {
			raw, _ := json.Marshal(tn)
			if err := b.Put([]byte(tn.ID), raw); err != nil {
				return err
			}
		}
		return nil
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	srv := ststest.Start(t, ststest.Options{StatePath: state})
	for _, tt := range []struct {
		seg, want string
	}{
		{"shared.test", ""},
		{"common", ""},
		{ststest.TenantID, ststest.TenantID},
		{"podid.test", ststest.TenantID},
		{tenantB, tenantB},
	} {
		got, ok := srv.Tenant(tt.seg)
		if (tt.want == "") == ok || got.ID != tt.want {
			t.Errorf("Tenant(%q) = %q %v, want %q", tt.seg, got.ID, ok, tt.want)
		}
	}
}

// TestCancelledContextWritesNothing: a directory write whose request is
// gone does not commit.
func TestCancelledContextWritesNothing(t *testing.T) {
	srv := ststest.Start(t, ststest.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	const cid = "72f988bf-0000-4000-8000-0000000000ce"
	if _, _, err := srv.PutApplication(ctx, srv.TenantID, sts.Application{ClientID: cid}); !errors.Is(err, context.Canceled) {
		t.Errorf("PutApplication: %v, want context.Canceled", err)
	}
	if _, err := srv.Principal(cid); !errors.Is(err, sts.ErrNotFound) {
		t.Errorf("application written despite cancellation: %v", err)
	}
	if err := srv.PutTenant(ctx, newTenant, []string{"cancel.test"}); !errors.Is(err, context.Canceled) {
		t.Errorf("PutTenant: %v", err)
	}
	if _, ok := srv.Tenant(newTenant); ok {
		t.Errorf("tenant written despite cancellation")
	}
	if err := srv.DeletePrincipal(ctx, ststest.AdminClientID); !errors.Is(err, context.Canceled) {
		t.Errorf("DeletePrincipal: %v", err)
	}
	if _, err := srv.Principal(ststest.AdminClientID); err != nil {
		t.Errorf("admin deleted despite cancellation: %v", err)
	}
}
