package sts_test

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/arm"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/msi/armmsi"
	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/podid/podid/internal/sts"
	"github.com/podid/podid/internal/sts/store"
	"github.com/podid/podid/internal/sts/ststest"
)

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

func storeRA(principal, resource, role string) store.RoleAssignment {
	return store.RoleAssignment{Principal: principal, Resource: resource, Role: role}
}

// signHS256 forges the classic key-confusion token: HMAC keyed with the
// issuer's public key.
func signHS256(t *testing.T, key []byte, claims map[string]any, kid string) string {
	t.Helper()
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: key}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", kid))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Signed(sig).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func armOptions(srv *ststest.Server) (*azidentity.ClientSecretCredential, *arm.ClientOptions) {
	opts := azcore.ClientOptions{
		Cloud: cloud.Configuration{
			ActiveDirectoryAuthorityHost: srv.URL + "/",
			Services: map[cloud.ServiceName]cloud.ServiceConfiguration{
				cloud.ResourceManager: {Endpoint: srv.URL, Audience: sts.ARMResource},
			},
		},
		Transport: srv.Client(),
		Retry:     policy.RetryOptions{MaxRetries: -1},
	}
	cred, err := azidentity.NewClientSecretCredential(srv.TenantID, ststest.AdminClientID, ststest.AdminSecret,
		&azidentity.ClientSecretCredentialOptions{ClientOptions: opts, DisableInstanceDiscovery: true})
	if err != nil {
		panic(err)
	}
	return cred, &arm.ClientOptions{ClientOptions: opts}
}

func respCode(err error) (int, string) {
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		return re.StatusCode, re.ErrorCode
	}
	return 0, ""
}

// TestARMManagedIdentity drives the management API with the official armmsi
// client, unchanged, then uses the identity it created.
func TestARMManagedIdentity(t *testing.T) {
	is := ststest.NewIssuer(t)
	srv := startWithIssuer(t, is, ststest.Options{})
	ctx := context.Background()
	cred, opts := armOptions(srv)
	ids, err := armmsi.NewUserAssignedIdentitiesClient(ststest.SubscriptionID, cred, opts)
	if err != nil {
		t.Fatal(err)
	}
	fics, err := armmsi.NewFederatedIdentityCredentialsClient(ststest.SubscriptionID, cred, opts)
	if err != nil {
		t.Fatal(err)
	}
	created, err := ids.CreateOrUpdate(ctx, "rg-app", "id-app", armmsi.Identity{Location: to.Ptr("westeurope"), Tags: map[string]*string{"team": to.Ptr("a")}}, nil)
	if err != nil {
		t.Fatalf("CreateOrUpdate: %v", err)
	}
	clientID := *created.Properties.ClientID
	if *created.Properties.TenantID != srv.TenantID || *created.Name != "id-app" || *created.Type != "Microsoft.ManagedIdentity/userAssignedIdentities" ||
		!strings.EqualFold(*created.ID, "/subscriptions/"+ststest.SubscriptionID+"/resourceGroups/rg-app/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-app") {
		t.Errorf("created = %+v", created.Identity)
	}
	// PUT again is an update: ids stay.
	again, err := ids.CreateOrUpdate(ctx, "rg-app", "id-app", armmsi.Identity{Location: to.Ptr("westeurope")}, nil)
	if err != nil || *again.Properties.ClientID != clientID {
		t.Fatalf("re-PUT changed client id or failed: %v", err)
	}
	got, err := ids.Get(ctx, "rg-app", "id-app", nil)
	if err != nil || *got.Properties.PrincipalID != *created.Properties.PrincipalID {
		t.Fatalf("Get: %v", err)
	}
	if _, err := ids.Update(ctx, "rg-app", "id-app", armmsi.IdentityUpdate{Tags: map[string]*string{"x": to.Ptr("y")}}, nil); err != nil {
		t.Fatalf("Update: %v", err)
	}
	if _, err := ids.CreateOrUpdate(ctx, "rg-app", "id-two", armmsi.Identity{Location: to.Ptr("westeurope")}, nil); err != nil {
		t.Fatal(err)
	}
	var names []string
	for pg := ids.NewListByResourceGroupPager("rg-app", nil); pg.More(); {
		page, err := pg.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range page.Value {
			names = append(names, *v.Name)
		}
	}
	slices.Sort(names)
	if !slices.Equal(names, []string{"id-app", "id-two"}) {
		t.Errorf("list by rg = %v", names)
	}
	n := 0
	for pg := ids.NewListBySubscriptionPager(nil); pg.More(); {
		page, err := pg.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		n += len(page.Value)
	}
	if n != 2 {
		t.Errorf("list by subscription: %d identities", n)
	}

	// Federated credentials: create, paginate, conflict, limit.
	const subject = "system:serviceaccount:default:app"
	fic := func(s string) armmsi.FederatedIdentityCredential {
		return armmsi.FederatedIdentityCredential{Properties: &armmsi.FederatedIdentityCredentialProperties{
			Issuer: to.Ptr(is.URL), Subject: to.Ptr(s), Audiences: []*string{to.Ptr(sts.DefaultFICAudience)}}}
	}
	if _, err := fics.CreateOrUpdate(ctx, "rg-app", "id-app", "fic-0", fic(subject), nil); err != nil {
		t.Fatalf("FIC create: %v", err)
	}
	// Entra answers a duplicate issuer+subject with 400, not 409.
	_, err = fics.CreateOrUpdate(ctx, "rg-app", "id-app", "fic-dup", fic(subject), nil)
	if code, ec := respCode(err); code != http.StatusBadRequest || ec != "BadRequest" || !strings.Contains(err.Error(), "Issuer and subject combination already exists for this Managed Identity.") {
		t.Errorf("duplicate issuer+subject: err = %v, want 400 BadRequest with Entra's message", err)
	}
	for i := 1; i < sts.MaxFICsPerPrincipal; i++ {
		if _, err := fics.CreateOrUpdate(ctx, "rg-app", "id-app", fmt.Sprintf("fic-%d", i), fic(fmt.Sprintf("%s-%d", subject, i)), nil); err != nil {
			t.Fatalf("FIC %d: %v", i, err)
		}
	}
	_, err = fics.CreateOrUpdate(ctx, "rg-app", "id-app", "fic-21", fic(subject+"-21"), nil)
	if code, _ := respCode(err); code != http.StatusBadRequest {
		t.Errorf("21st FIC: err = %v, want 400", err)
	}
	long := fic(strings.Repeat("s", sts.MaxFICFieldLen+1))
	if _, err = fics.CreateOrUpdate(ctx, "rg-app", "id-two", "toolong", long, nil); err == nil {
		t.Errorf("601-char subject accepted")
	}
	two := fic(subject)
	two.Properties.Audiences = append(two.Properties.Audiences, to.Ptr("api://second"))
	if _, err = fics.CreateOrUpdate(ctx, "rg-app", "id-two", "twoaud", two, nil); err == nil {
		t.Errorf("two audiences accepted")
	}
	count, pages := 0, 0
	for pg := fics.NewListPager("rg-app", "id-app", &armmsi.FederatedIdentityCredentialsClientListOptions{Top: to.Ptr[int32](7)}); pg.More(); {
		page, err := pg.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		count += len(page.Value)
		pages++
	}
	if count != sts.MaxFICsPerPrincipal || pages != 3 {
		t.Errorf("FIC list: %d items in %d pages, want 20 in 3", count, pages)
	}
	gf, err := fics.Get(ctx, "rg-app", "id-app", "fic-0", nil)
	if err != nil || *gf.Properties.Subject != subject || *gf.Properties.Issuer != is.URL {
		t.Fatalf("FIC get: %v", err)
	}
	if _, err := fics.Delete(ctx, "rg-app", "id-app", "fic-1", nil); err != nil {
		t.Fatal(err)
	}
	_, err = fics.Get(ctx, "rg-app", "id-app", "fic-1", nil)
	if code, _ := respCode(err); code != 404 {
		t.Errorf("deleted FIC: err = %v", err)
	}

	// The identity created through ARM gets a token with its federated credential.
	tokenFile := ststest.WriteFile(t, "token", []byte(is.Token(t, subject, sts.DefaultFICAudience, time.Now(), time.Hour, nil)))
	wcred, _ := azidentity.NewWorkloadIdentityCredential(&azidentity.WorkloadIdentityCredentialOptions{
		ClientOptions: clientOptions(srv), ClientID: clientID, TenantID: srv.TenantID, TokenFilePath: tokenFile, DisableInstanceDiscovery: true})
	c := verify(t, srv, getToken(t, wcred, storage+"/.default"), storage, nil)
	if c.AppID != clientID {
		t.Errorf("appid = %s", c.AppID)
	}

	if _, err := ids.Delete(ctx, "rg-app", "id-app", nil); err != nil {
		t.Fatal(err)
	}
	_, err = ids.Get(ctx, "rg-app", "id-app", nil)
	if code, ec := respCode(err); code != 404 || ec != "ResourceNotFound" {
		t.Errorf("deleted identity: %d %s", code, ec)
	}
}

func TestManagementAPIAuth(t *testing.T) {
	srv := ststest.Start(t, ststest.Options{})
	ctx := context.Background()
	path := srv.URL + "/subscriptions/" + ststest.SubscriptionID + "/providers/Microsoft.ManagedIdentity/userAssignedIdentities?api-version=2024-11-30"
	do := func(token string) int {
		req, _ := http.NewRequest(http.MethodGet, path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := do(""); got != 401 {
		t.Errorf("no token: %d", got)
	}
	if got := do("a.b.c"); got != 401 {
		t.Errorf("garbage token: %d", got)
	}
	// A valid token without the Owner role is forbidden.
	app, _, _ := srv.PutApplication(ctx, srv.TenantID, sts.Application{DisplayName: "reader"})
	_, secret, err := srv.GenerateSecret(ctx, app.ClientID, "t", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	cred, _ := azidentity.NewClientSecretCredential(srv.TenantID, app.ClientID, secret,
		&azidentity.ClientSecretCredentialOptions{ClientOptions: clientOptions(srv), DisableInstanceDiscovery: true})
	if got := do(getToken(t, cred, sts.ARMResource+"/.default")); got != 403 {
		t.Errorf("no role: %d", got)
	}
	// A token for another audience is refused.
	admin, _ := azidentity.NewClientSecretCredential(srv.TenantID, ststest.AdminClientID, ststest.AdminSecret,
		&azidentity.ClientSecretCredentialOptions{ClientOptions: clientOptions(srv), DisableInstanceDiscovery: true})
	if got := do(getToken(t, admin, storage+"/.default")); got != 401 {
		t.Errorf("wrong audience: %d", got)
	}
	if got := do(getToken(t, admin, sts.ARMResource+"/.default")); got != 200 {
		t.Errorf("admin: %d", got)
	}
}

// TestAdminAPI exercises podid's own REST API for app registrations.
func TestAdminAPI(t *testing.T) {
	srv := ststest.Start(t, ststest.Options{})
	admin, _ := azidentity.NewClientSecretCredential(srv.TenantID, ststest.AdminClientID, ststest.AdminSecret,
		&azidentity.ClientSecretCredentialOptions{ClientOptions: clientOptions(srv), DisableInstanceDiscovery: true})
	tok := getToken(t, admin, sts.ARMResource+"/.default")
	call := func(method, path, body string, want int) map[string]any {
		t.Helper()
		req, _ := http.NewRequest(method, srv.URL+"/podid/v1/tenants/"+srv.TenantID+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Content-Type", "application/json")
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		_ = jsonDecode(resp, &m)
		if resp.StatusCode != want {
			t.Fatalf("%s %s: %d, want %d: %v", method, path, resp.StatusCode, want, m)
		}
		return m
	}
	app := call("POST", "/applications", `{"displayName":"svc"}`, 201)
	cid := app["clientId"].(string)
	sec := call("POST", "/applications/"+cid+"/secrets", `{"displayName":"ci"}`, 201)
	secret := sec["secretText"].(string)
	got := call("GET", "/applications/"+cid, "", 200)
	if strings.Contains(fmt.Sprint(got), secret) {
		t.Fatalf("secret value returned by GET")
	}
	// App roles exist on applications registered in the tenant; Storage has none (Azure RBAC grants there).
	call("POST", "/roleAssignments", `{"principal":"`+cid+`","resource":"https://storage.azure.com","role":"Storage.Reader"}`, 400)
	call("PUT", "/applications/5e7a1c2d-0000-4000-8000-0000000000e1", `{"displayName":"svc-api","identifierUris":["api://svc-api"]}`, 201)
	call("POST", "/roleAssignments", `{"principal":"`+cid+`","resource":"api://svc-api","role":"Data.Read"}`, 201)
	call("PUT", "/applications/"+cid+"/federatedIdentityCredentials/github", `{"issuer":"https://token.actions.githubusercontent.com","subject":"repo:o/r:ref:refs/heads/main"}`, 201)
	call("PUT", "/applications/"+cid+"/federatedIdentityCredentials/github2", `{"issuer":"https://token.actions.githubusercontent.com","subject":"repo:o/r:ref:refs/heads/main"}`, 400)
	cred, _ := azidentity.NewClientSecretCredential(srv.TenantID, cid, secret,
		&azidentity.ClientSecretCredentialOptions{ClientOptions: clientOptions(srv), DisableInstanceDiscovery: true})
	c := verify(t, srv, getToken(t, cred, "api://svc-api/.default"), "api://svc-api", nil)
	if len(c.Roles) != 1 || c.Roles[0] != "Data.Read" {
		t.Errorf("roles = %v", c.Roles)
	}
	if c := verify(t, srv, getToken(t, cred, storage+"/.default"), storage, nil); len(c.Roles) != 0 {
		t.Errorf("storage token roles = %v, want none", c.Roles)
	}
	call("DELETE", "/applications/"+cid+"/secrets/"+sec["id"].(string), "", 200)
	r := postForm(t, srv, "/"+srv.TenantID+"/oauth2/v2.0/token", "application/x-www-form-urlencoded",
		"grant_type=client_credentials&client_id="+cid+"&scope=https%3A%2F%2Fstorage.azure.com%2F.default&client_secret="+secret)
	assertAADSTS(t, r, 401, sts.CodeInvalidSecret, "invalid_client")
}

// TestRestartKeepsState restarts on the same state file: identities, FICs,
// secrets, signing keys and the CA survive.
func TestRestartKeepsState(t *testing.T) {
	is := ststest.NewIssuer(t)
	state := filepath.Join(t.TempDir(), "state.db")
	srv := startWithIssuer(t, is, ststest.Options{StatePath: state})
	const subject = "system:serviceaccount:a:b"
	clientID := srv.AddIdentity(t, "persist", is.URL, subject)
	kid := srv.PublicKeys().Keys[0].KeyID
	ca := string(srv.CAPEM)
	srv.Stop()

	srv2 := startWithIssuer(t, is, ststest.Options{StatePath: state})
	if string(srv2.CAPEM) != ca {
		t.Errorf("CA changed across restart")
	}
	if got := srv2.PublicKeys().Keys[0].KeyID; got != kid {
		t.Errorf("signing key changed across restart")
	}
	tokenFile := ststest.WriteFile(t, "token", []byte(is.Token(t, subject, sts.DefaultFICAudience, time.Now(), time.Hour, nil)))
	cred, _ := azidentity.NewWorkloadIdentityCredential(&azidentity.WorkloadIdentityCredentialOptions{
		ClientOptions: clientOptions(srv2), ClientID: clientID, TenantID: srv2.TenantID, TokenFilePath: tokenFile, DisableInstanceDiscovery: true})
	verify(t, srv2, getToken(t, cred, storage+"/.default"), storage, nil)
	raw, err := os.ReadFile(state)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(raw), ststest.AdminSecret) {
		t.Errorf("client secret stored in clear")
	}
}

func TestBootstrapYAML(t *testing.T) {
	certFile := ststest.WriteFile(t, "cert.pem", nil)
	cert, _ := selfSignedCert(t)
	if err := os.WriteFile(certFile, pemCert(cert), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PODID_TEST_SECRET", "secret-from-env-0123456789")
	yml := `
tenants:
- id: 8d2a3b1c-0000-4000-8000-000000000001
  domains: [contoso.test]
  applications:
  - clientId: 8d2a3b1c-0000-4000-8000-0000000000a1
    displayName: web
    identifierUris: [api://web]
    accessTokenVersion: 2
    secrets:
    - valueEnv: PODID_TEST_SECRET
    certificates:
    - file: ` + certFile + `
  identities:
  - subscription: 8d2a3b1c-0000-4000-8000-0000000000c1
    resourceGroup: rg
    name: id-boot
    location: westeurope
    clientId: 8d2a3b1c-0000-4000-8000-0000000000b1
    federatedIdentityCredentials:
    - name: k8s
      issuer: https://kubernetes.default.svc
      subject: system:serviceaccount:default:web
  roleAssignments:
  - principal: 8d2a3b1c-0000-4000-8000-0000000000b1
    resource: api://web
    role: Web.Call
`
	b, err := sts.ParseBootstrap([]byte(yml))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sts.ParseBootstrap([]byte("tenants:\n- id: x\n  typo: 1\n")); err == nil {
		t.Errorf("unknown field accepted")
	}
	state := filepath.Join(t.TempDir(), "state.db")
	srv := ststest.Start(t, ststest.Options{Bootstrap: b, StatePath: state})
	// Applying again (and restarting with it) duplicates nothing.
	if err := srv.Apply(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	srv = ststest.Start(t, ststest.Options{Bootstrap: b, StatePath: state})
	app, err := srv.Principal("8d2a3b1c-0000-4000-8000-0000000000a1")
	if err != nil {
		t.Fatal(err)
	}
	if len(app.Secrets) != 1 || len(app.Certificates) != 1 || app.AccessTokenVersion != 2 {
		t.Errorf("app after 3 applies: %d secrets, %d certs", len(app.Secrets), len(app.Certificates))
	}
	id, err := srv.Principal("8d2a3b1c-0000-4000-8000-0000000000b1")
	if err != nil || len(id.FederatedCreds) != 1 || id.FederatedCreds[0].Audiences[0] != sts.DefaultFICAudience {
		t.Fatalf("identity: %+v %v", id, err)
	}
	r := postForm(t, srv, "/contoso.test/oauth2/v2.0/token", "application/x-www-form-urlencoded",
		"grant_type=client_credentials&client_id=8d2a3b1c-0000-4000-8000-0000000000a1&scope=api%3A%2F%2Fweb%2F.default&client_secret=secret-from-env-0123456789")
	if r.status != 200 {
		t.Fatalf("token: %v", r.body)
	}
}

func jsonDecode(resp *http.Response, v any) error { return json.NewDecoder(resp.Body).Decode(v) }

func pemCert(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}
