package sts_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/keyvault/armkeyvault"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"
	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/podid/podid/internal/sts"
	"github.com/podid/podid/internal/sts/keyvault"
	"github.com/podid/podid/internal/sts/ststest"
)

// vaultEnv is an sts with one RBAC vault, made through ARM with the real
// armkeyvault client, and principals to call it.
type vaultEnv struct {
	srv   *ststest.Server
	vault armkeyvault.Vault
	uri   string
}

type principal struct {
	clientID, objectID, secret string
	cred                       *azidentity.ClientSecretCredential
}

func startVault(t testing.TB, opts ststest.Options) *vaultEnv {
	t.Helper()
	srv := ststest.Start(t, opts)
	cred, armOpts := armOptions(srv)
	vaults, err := armkeyvault.NewVaultsClient(ststest.SubscriptionID, cred, armOpts)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	poller, err := vaults.BeginCreateOrUpdate(ctx, "rg-kv", "kv-test", armkeyvault.VaultCreateOrUpdateParameters{
		Location: to.Ptr("westeurope"),
		Properties: &armkeyvault.VaultProperties{
			TenantID:                to.Ptr(srv.TenantID),
			SKU:                     &armkeyvault.SKU{Family: to.Ptr(armkeyvault.SKUFamilyA), Name: to.Ptr(armkeyvault.SKUNameStandard)},
			EnableRbacAuthorization: to.Ptr(true),
		},
	}, nil)
	if err != nil {
		t.Fatalf("BeginCreateOrUpdate: %v", err)
	}
	res, err := poller.PollUntilDone(ctx, nil)
	if err != nil {
		t.Fatalf("PollUntilDone: %v", err)
	}
	return &vaultEnv{srv: srv, vault: res.Vault, uri: *res.Properties.VaultURI}
}

func (e *vaultEnv) principal(t testing.TB, name string) principal {
	t.Helper()
	ctx := context.Background()
	p, _, err := e.srv.PutApplication(ctx, e.srv.TenantID, sts.Application{DisplayName: name})
	if err != nil {
		t.Fatal(err)
	}
	_, secret, err := e.srv.GenerateSecret(ctx, p.ClientID, "test", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	cred, err := azidentity.NewClientSecretCredential(e.srv.TenantID, p.ClientID, secret,
		&azidentity.ClientSecretCredentialOptions{ClientOptions: clientOptions(e.srv), DisableInstanceDiscovery: true})
	if err != nil {
		t.Fatal(err)
	}
	return principal{clientID: p.ClientID, objectID: p.ObjectID, secret: secret, cred: cred}
}

// secrets is the real azsecrets client with default options, apart from
// the transport that dials *.vault.azure.net at the test sts (a
// transport setting, not an SDK modification: the challenge's resource
// is still checked against the vault's host).
func (e *vaultEnv) secrets(t testing.TB, p principal) *azsecrets.Client {
	t.Helper()
	c, err := azsecrets.NewClient(e.uri, p.cred, &azsecrets.ClientOptions{ClientOptions: azcore.ClientOptions{Transport: e.srv.VaultClient()}})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (e *vaultEnv) scope() string { return *e.vault.ID }

// assign gives p a built-in role (by its Azure role definition id) at
// scope, through the sts's Azure RBAC.
func (e *vaultEnv) assign(t testing.TB, p principal, role, scope string) {
	t.Helper()
	if _, _, err := e.srv.PutAzureRoleAssignment(context.Background(), sts.AzureRoleAssignment{TenantID: e.srv.TenantID, Scope: scope, Role: role, PrincipalID: p.objectID}); err != nil {
		t.Fatalf("role assignment %s at %s: %v", role, scope, err)
	}
}

func kvCode(err error) (int, string, string) {
	var re *azcore.ResponseError
	if !errors.As(err, &re) {
		return 0, "", ""
	}
	var body struct {
		Error struct {
			Code       string `json:"code"`
			InnerError struct {
				Code string `json:"code"`
			} `json:"innererror"`
		} `json:"error"`
	}
	if b, err := runtime.Payload(re.RawResponse); err == nil {
		_ = json.Unmarshal(b, &body)
	}
	return re.StatusCode, body.Error.Code, body.Error.InnerError.Code
}

func TestKeyVaultARM(t *testing.T) {
	e := startVault(t, ststest.Options{})
	if e.uri != "https://kv-test.vault.azure.net/" {
		t.Errorf("vaultUri = %q", e.uri)
	}
	p := e.vault.Properties
	if *e.vault.Type != "Microsoft.KeyVault/vaults" || *p.TenantID != e.srv.TenantID || !*p.EnableRbacAuthorization || !*p.EnableSoftDelete || *p.SoftDeleteRetentionInDays != 90 {
		t.Errorf("vault = %+v", e.vault)
	}
	cred, armOpts := armOptions(e.srv)
	vaults, _ := armkeyvault.NewVaultsClient(ststest.SubscriptionID, cred, armOpts)
	ctx := context.Background()
	if got, err := vaults.Get(ctx, "rg-kv", "kv-test", nil); err != nil || *got.ID != *e.vault.ID {
		t.Fatalf("Get: %v", err)
	}
	create := func(rg, name string, props *armkeyvault.VaultProperties) error {
		if props == nil {
			props = &armkeyvault.VaultProperties{TenantID: to.Ptr(e.srv.TenantID), SKU: &armkeyvault.SKU{Family: to.Ptr(armkeyvault.SKUFamilyA), Name: to.Ptr(armkeyvault.SKUNameStandard)}}
		}
		poller, err := vaults.BeginCreateOrUpdate(ctx, rg, name, armkeyvault.VaultCreateOrUpdateParameters{Location: to.Ptr("westeurope"), Properties: props}, nil)
		if err != nil {
			return err
		}
		_, err = poller.PollUntilDone(ctx, nil)
		return err
	}
	std := &armkeyvault.SKU{Family: to.Ptr(armkeyvault.SKUFamilyA), Name: to.Ptr(armkeyvault.SKUNameStandard)}
	for _, tc := range []struct {
		name, rg, vault string
		props           *armkeyvault.VaultProperties
		status          int
		code            string
	}{
		{"default is rbac", "rg-kv", "kv-two", nil, 0, ""},
		{"same name elsewhere", "rg-other", "kv-test", nil, 409, "VaultAlreadyExists"},
		{"access policy vault", "rg-kv", "kv-ap", &armkeyvault.VaultProperties{TenantID: to.Ptr(e.srv.TenantID), SKU: std, EnableRbacAuthorization: to.Ptr(false)}, 400, "AccessPolicyVaultNotSupported"},
		{"access policies", "rg-kv", "kv-ap2", &armkeyvault.VaultProperties{TenantID: to.Ptr(e.srv.TenantID), SKU: std, AccessPolicies: []*armkeyvault.AccessPolicyEntry{{TenantID: to.Ptr(e.srv.TenantID), ObjectID: to.Ptr("x")}}}, 400, "AccessPolicyVaultNotSupported"},
		{"other tenant", "rg-kv", "kv-tenant", &armkeyvault.VaultProperties{TenantID: to.Ptr("11111111-1111-1111-1111-111111111111"), SKU: std}, 400, "BadRequest"},
		{"short name", "rg-kv", "kv", nil, 400, "VaultNameNotValid"},
		{"double dash", "rg-kv", "kv--x", nil, 400, "VaultNameNotValid"},
		{"starts with digit", "rg-kv", "1kv", nil, 400, "VaultNameNotValid"},
		{"too long", "rg-kv", strings.Repeat("k", 25), nil, 400, "VaultNameNotValid"},
		{"no sku", "rg-kv", "kv-nosku", &armkeyvault.VaultProperties{TenantID: to.Ptr(e.srv.TenantID)}, 400, "BadRequest"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := create(tc.rg, tc.vault, tc.props)
			if tc.status == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if st, code := respCode(err); st != tc.status || code != tc.code {
				t.Fatalf("got %d %s (%v), want %d %s", st, code, err, tc.status, tc.code)
			}
		})
	}
	var names []string
	for pg := vaults.NewListByResourceGroupPager("rg-kv", nil); pg.More(); {
		page, err := pg.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range page.Value {
			names = append(names, *v.Name)
		}
	}
	if strings.Join(names, ",") != "kv-test,kv-two" {
		t.Errorf("list = %v", names)
	}
	n := 0
	for pg := vaults.NewListBySubscriptionPager(nil); pg.More(); {
		page, err := pg.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		n += len(page.Value)
	}
	if n != 2 {
		t.Errorf("subscription list has %d vaults, want 2", n)
	}
	// PATCH: tags and purge protection, which cannot be turned off again.
	upd, err := vaults.Update(ctx, "rg-kv", "kv-two", armkeyvault.VaultPatchParameters{Tags: map[string]*string{"team": to.Ptr("a")},
		Properties: &armkeyvault.VaultPatchProperties{EnablePurgeProtection: to.Ptr(true)}}, nil)
	if err != nil || *upd.Tags["team"] != "a" || !*upd.Properties.EnablePurgeProtection || *upd.Properties.VaultURI != "https://kv-two.vault.azure.net/" {
		t.Fatalf("Update: %+v %v", upd, err)
	}
	// Purge protection holds on the data plane.
	officer := e.principal(t, "officer")
	e.assign(t, officer, keyvault.RoleSecretsOfficer, *upd.ID)
	two, err := azsecrets.NewClient(*upd.Properties.VaultURI, officer.cred, &azsecrets.ClientOptions{ClientOptions: azcore.ClientOptions{Transport: e.srv.VaultClient()}})
	if err != nil {
		t.Fatal(err)
	}
	set, err := two.SetSecret(ctx, "s", azsecrets.SetSecretParameters{Value: to.Ptr("v")}, nil)
	if err != nil || *set.Attributes.RecoveryLevel != "Recoverable" {
		t.Fatalf("set in a purge-protected vault: %v", err)
	}
	if _, err := two.DeleteSecret(ctx, "s", nil); err != nil {
		t.Fatal(err)
	}
	_, err = two.PurgeDeletedSecret(ctx, "s", nil)
	if st, _, inner := kvCode(err); st != 403 || inner != "PurgeProtectionEnabled" {
		t.Errorf("purge under purge protection: %v", err)
	}
	_, err = vaults.Update(ctx, "rg-kv", "kv-two", armkeyvault.VaultPatchParameters{Properties: &armkeyvault.VaultPatchProperties{EnablePurgeProtection: to.Ptr(false)}}, nil)
	if st, _ := respCode(err); st != 400 {
		t.Errorf("turning purge protection off: %v", err)
	}
	_, err = vaults.Update(ctx, "rg-kv", "kv-nope", armkeyvault.VaultPatchParameters{Tags: map[string]*string{}}, nil)
	if st, _ := respCode(err); st != 404 {
		t.Errorf("PATCH of a missing vault: %v", err)
	}
	avail, err := vaults.CheckNameAvailability(ctx, armkeyvault.VaultCheckNameAvailabilityParameters{Name: to.Ptr("kv-test"), Type: to.Ptr("Microsoft.KeyVault/vaults")}, nil)
	if err != nil || *avail.NameAvailable {
		t.Errorf("CheckNameAvailability(kv-test) = %v, %v", avail, err)
	}
	if _, err := vaults.Delete(ctx, "rg-kv", "kv-two", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := vaults.Get(ctx, "rg-kv", "kv-two", nil); func() int { s, _ := respCode(err); return s }() != 404 {
		t.Errorf("Get after delete: %v", err)
	}
}

func TestKeyVaultSecrets(t *testing.T) {
	e := startVault(t, ststest.Options{})
	ctx := context.Background()
	officer, reader, user, nobody := e.principal(t, "officer"), e.principal(t, "reader"), e.principal(t, "user"), e.principal(t, "nobody")
	admin, other := e.principal(t, "rg-admin"), e.principal(t, "user-other")
	e.assign(t, officer, keyvault.RoleSecretsOfficer, e.scope())
	e.assign(t, reader, keyvault.RoleReader, e.scope())
	e.assign(t, user, keyvault.RoleSecretsUser, e.scope()+"/secrets/db") // one secret only
	e.assign(t, admin, keyvault.RoleAdministrator, "/subscriptions/"+ststest.SubscriptionID+"/resourceGroups/rg-kv")
	e.assign(t, other, keyvault.RoleSecretsUser, e.scope()+"/secrets/other")
	oc, rc, uc, nc := e.secrets(t, officer), e.secrets(t, reader), e.secrets(t, user), e.secrets(t, nobody)
	ac, xc := e.secrets(t, admin), e.secrets(t, other)

	set, err := oc.SetSecret(ctx, "db", azsecrets.SetSecretParameters{Value: to.Ptr("v1"), ContentType: to.Ptr("text/plain"), Tags: map[string]*string{"env": to.Ptr("test")}}, nil)
	if err != nil {
		t.Fatalf("SetSecret: %v", err)
	}
	v1 := set.ID.Version()
	if *set.Value != "v1" || set.ID.Name() != "db" || len(v1) != 32 || !strings.HasPrefix(string(*set.ID), "https://kv-test.vault.azure.net/secrets/db/") ||
		!*set.Attributes.Enabled || *set.Attributes.RecoveryLevel != "Recoverable+Purgeable" || *set.ContentType != "text/plain" || *set.Tags["env"] != "test" {
		t.Errorf("set = %+v", set.Secret)
	}
	set2, err := oc.SetSecret(ctx, "db", azsecrets.SetSecretParameters{Value: to.Ptr("v2")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	v2 := set2.ID.Version()

	for _, tc := range []struct {
		name    string
		client  *azsecrets.Client
		secret  string
		version string
		want    string
		status  int
		code    string
		inner   string
	}{
		{"officer latest", oc, "db", "", "v2", 200, "", ""},
		{"officer by version", oc, "db", v1, "v1", 200, "", ""},
		{"secret name is case-insensitive", oc, "DB", v1, "v1", 200, "", ""},
		{"user on its secret", uc, "db", "", "v2", 200, "", ""},
		{"administrator at the resource group", ac, "db", v1, "v1", 200, "", ""},
		{"user of another secret", xc, "db", "", "", 403, "Forbidden", "ForbiddenByRbac"},
		{"reader gets no value", rc, "db", "", "", 403, "Forbidden", "ForbiddenByRbac"},
		{"nobody", nc, "db", "", "", 403, "Forbidden", "ForbiddenByRbac"},
		{"unknown secret", oc, "nope", "", "", 404, "SecretNotFound", ""},
		{"unknown version", oc, "db", strings.Repeat("0", 32), "", 404, "SecretNotFound", ""},
		{"bad version", oc, "db", "xyz", "", 400, "BadParameter", ""},
		{"bad name", oc, "bad_name", "", "", 400, "BadParameter", ""},
		{"name too long", oc, strings.Repeat("a", 128), "", "", 400, "BadParameter", ""},
	} {
		t.Run("get/"+tc.name, func(t *testing.T) {
			got, err := tc.client.GetSecret(ctx, tc.secret, tc.version, nil)
			if tc.status == 200 {
				if err != nil || *got.Value != tc.want {
					t.Fatalf("GetSecret = %v, %v; want %q", got.Value, err, tc.want)
				}
				return
			}
			if st, code, inner := kvCode(err); st != tc.status || code != tc.code || inner != tc.inner {
				t.Fatalf("got %d %s/%s (%v), want %d %s/%s", st, code, inner, err, tc.status, tc.code, tc.inner)
			}
		})
	}

	t.Run("versions", func(t *testing.T) {
		var got []string
		for pg := rc.NewListSecretPropertiesVersionsPager("db", nil); pg.More(); {
			page, err := pg.NextPage(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range page.Value {
				got = append(got, s.ID.Version())
			}
		}
		if strings.Join(got, ",") != v1+","+v2 {
			t.Errorf("versions = %v, want %s,%s", got, v1, v2)
		}
	})

	t.Run("list pages", func(t *testing.T) {
		for i := range 30 {
			if _, err := oc.SetSecret(ctx, fmt.Sprintf("s-%02d", i), azsecrets.SetSecretParameters{Value: to.Ptr("x")}, nil); err != nil {
				t.Fatal(err)
			}
		}
		pages, n := 0, 0
		for pg := rc.NewListSecretPropertiesPager(nil); pg.More(); {
			page, err := pg.NextPage(ctx)
			if err != nil {
				t.Fatal(err)
			}
			pages++
			for _, s := range page.Value {
				n++
				if s.ID.Version() != "" {
					t.Errorf("list item id %s names a version", *s.ID)
				}
			}
		}
		if n != 31 || pages != 2 {
			t.Errorf("listed %d secrets in %d pages, want 31 in 2", n, pages)
		}
		_, err := nc.NewListSecretPropertiesPager(nil).NextPage(ctx)
		if st, _, inner := kvCode(err); st != 403 || inner != "ForbiddenByRbac" {
			t.Errorf("list without a role: %v", err)
		}
	})

	t.Run("update", func(t *testing.T) {
		exp := time.Now().Add(48 * time.Hour).Truncate(time.Second)
		u, err := oc.UpdateSecretProperties(ctx, "db", v1, azsecrets.UpdateSecretPropertiesParameters{
			ContentType: to.Ptr("application/json"), Tags: map[string]*string{"a": to.Ptr("b")},
			SecretAttributes: &azsecrets.SecretAttributes{Enabled: to.Ptr(false), Expires: &exp},
		}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if u.Value != nil || *u.ContentType != "application/json" || *u.Tags["a"] != "b" || *u.Attributes.Enabled || !u.Attributes.Expires.Equal(exp) {
			t.Errorf("update = %+v", u.Secret)
		}
		_, err = oc.GetSecret(ctx, "db", v1, nil)
		if st, _, inner := kvCode(err); st != 403 || inner != "SecretDisabled" {
			t.Errorf("get disabled version: %v", err)
		}
		if _, err := uc.UpdateSecretProperties(ctx, "db", "", azsecrets.UpdateSecretPropertiesParameters{ContentType: to.Ptr("x")}, nil); func() string { _, _, i := kvCode(err); return i }() != "ForbiddenByRbac" {
			t.Errorf("update by secrets user: %v", err)
		}
	})

	t.Run("bounds", func(t *testing.T) {
		_, err := oc.SetSecret(ctx, "big", azsecrets.SetSecretParameters{Value: to.Ptr(strings.Repeat("x", keyvault.MaxValueBytes+1))}, nil)
		if st, code, _ := kvCode(err); st != 400 || code != "BadParameter" {
			t.Errorf("oversized value: %v", err)
		}
		if _, err := oc.SetSecret(ctx, "big", azsecrets.SetSecretParameters{Value: to.Ptr(strings.Repeat("x", keyvault.MaxValueBytes))}, nil); err != nil {
			t.Errorf("value at the limit: %v", err)
		}
		tags := map[string]*string{}
		for i := range keyvault.MaxTags + 1 {
			tags[fmt.Sprint(i)] = to.Ptr("v")
		}
		_, err = oc.SetSecret(ctx, "tags", azsecrets.SetSecretParameters{Value: to.Ptr("x"), Tags: tags}, nil)
		if st, _, _ := kvCode(err); st != 400 {
			t.Errorf("16 tags: %v", err)
		}
	})

	t.Run("delete recover purge", func(t *testing.T) {
		d, err := oc.DeleteSecret(ctx, "db", nil)
		if err != nil {
			t.Fatal(err)
		}
		if *d.RecoveryID != "https://kv-test.vault.azure.net/deletedsecrets/db" || d.DeletedDate == nil || d.ScheduledPurgeDate.Sub(*d.DeletedDate) != 90*24*time.Hour {
			t.Errorf("deleted = %+v", d.DeletedSecret)
		}
		if _, err := oc.GetSecret(ctx, "db", "", nil); func() string { _, c, _ := kvCode(err); return c }() != "SecretNotFound" {
			t.Errorf("get after delete: %v", err)
		}
		_, err = oc.SetSecret(ctx, "db", azsecrets.SetSecretParameters{Value: to.Ptr("v3")}, nil)
		if st, _, inner := kvCode(err); st != 409 || inner != "ObjectIsDeletedButRecoverable" {
			t.Errorf("set over a deleted secret: %v", err)
		}
		if _, err := oc.GetDeletedSecret(ctx, "db", nil); err != nil {
			t.Errorf("GetDeletedSecret: %v", err)
		}
		if _, err := oc.RecoverDeletedSecret(ctx, "db", nil); err != nil {
			t.Fatalf("Recover: %v", err)
		}
		if got, err := uc.GetSecret(ctx, "db", "", nil); err != nil || *got.Value != "v2" {
			t.Fatalf("get after recover: %v", err)
		}
		if _, err := oc.DeleteSecret(ctx, "db", nil); err != nil {
			t.Fatal(err)
		}
		if _, err := oc.PurgeDeletedSecret(ctx, "db", nil); err != nil {
			t.Fatalf("Purge: %v", err)
		}
		if _, err := oc.SetSecret(ctx, "db", azsecrets.SetSecretParameters{Value: to.Ptr("fresh")}, nil); err != nil {
			t.Fatalf("set after purge: %v", err)
		}
		vs, err := oc.NewListSecretPropertiesVersionsPager("db", nil).NextPage(ctx)
		if err != nil || len(vs.Value) != 1 {
			t.Errorf("versions after purge and set: %v %v", vs.Value, err)
		}
	})

	t.Run("durable", func(t *testing.T) {
		e.srv.Stop()
		e2 := &vaultEnv{srv: ststest.Start(t, ststest.Options{StatePath: e.srv.Config.StatePath}), uri: e.uri}
		got, err := e2.secrets(t, officer).GetSecret(ctx, "s-07", "", nil)
		if err != nil || *got.Value != "x" {
			t.Fatalf("after restart: %v", err)
		}
	})
}

// TestKeyVaultAuthentication plays the adversary against the data plane's
// token check; every request names a real vault and secret.
func TestKeyVaultAuthentication(t *testing.T) {
	other := "33333333-3333-3333-3333-333333333333"
	otherApp := "44444444-4444-4444-4444-444444444444"
	otherSecret := "other-tenant-secret-0123456789"
	clock := ststest.NewClock(time.Now())
	e := startVault(t, ststest.Options{
		Bootstrap: &sts.Bootstrap{Tenants: []sts.BootstrapTenant{{ID: other, Applications: []sts.BootstrapApplication{{ClientID: otherApp, Secrets: []sts.BootstrapSecret{{Value: otherSecret}}}}}}},
		Configure: func(c *sts.Config) { c.Now = clock.Now },
	})
	ctx := context.Background()
	officer := e.principal(t, "officer")
	e.assign(t, officer, keyvault.RoleSecretsOfficer, e.scope())
	if _, err := e.secrets(t, officer).SetSecret(ctx, "s", azsecrets.SetSecretParameters{Value: to.Ptr("v")}, nil); err != nil {
		t.Fatal(err)
	}
	hc := e.srv.VaultClient()
	do := func(token string) (*http.Response, string) {
		req, _ := http.NewRequest(http.MethodGet, e.uri+"secrets/s?api-version=7.6", nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		res, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res, string(b)
	}

	// The challenge: exactly what the SDKs parse.
	res, body := do("")
	want := fmt.Sprintf(`Bearer authorization="%s/%s", resource="https://vault.azure.net"`, e.srv.URL, e.srv.TenantID)
	if res.StatusCode != 401 || res.Header.Get("WWW-Authenticate") != want || !strings.Contains(body, `"Unauthorized"`) {
		t.Fatalf("challenge: %d %q %s", res.StatusCode, res.Header.Get("WWW-Authenticate"), body)
	}

	good := getToken(t, officer.cred, "https://vault.azure.net/.default")
	if res, body := do(good); res.StatusCode != 200 || !strings.Contains(body, `"value":"v"`) {
		t.Fatalf("good token: %d %s", res.StatusCode, body)
	}
	armTok := getToken(t, officer.cred, "https://management.azure.com/.default")
	otherCred, err := azidentity.NewClientSecretCredential(other, otherApp, otherSecret,
		&azidentity.ClientSecretCredentialOptions{ClientOptions: clientOptions(e.srv), DisableInstanceDiscovery: true})
	if err != nil {
		t.Fatal(err)
	}
	otherTok := getToken(t, otherCred, "https://vault.azure.net/.default")

	// Forged: the right claims and kid, signed by a key the sts never had.
	parsed, err := jwt.ParseSigned(good, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		t.Fatal(err)
	}
	var claims map[string]any
	_ = parsed.UnsafeClaimsWithoutVerification(&claims)
	forgeKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	signer, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: forgeKey}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", parsed.Headers[0].KeyID))
	forged, _ := jwt.Signed(signer).Claims(claims).Serialize()
	pub, _ := e.srv.PublicKeys().Keys[0].Key.(*rsa.PublicKey)
	hs := signHS256(t, pub.N.Bytes(), claims, parsed.Headers[0].KeyID)

	for _, tc := range []struct{ name, token string }{
		{"wrong audience", armTok},
		{"other tenant", otherTok},
		{"forged", forged},
		{"hs256 key confusion", hs},
		{"garbage", "not.a.jwt"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, body := do(tc.token)
			if res.StatusCode != 401 || res.Header.Get("WWW-Authenticate") != want || !strings.Contains(body, `"Unauthorized"`) {
				t.Fatalf("%d %s", res.StatusCode, body)
			}
			if strings.Contains(body, `"value"`) {
				t.Fatal("a value leaked")
			}
		})
	}
	t.Run("api-version", func(t *testing.T) {
		for _, q := range []string{"", "?api-version=1999-01-01", "?api-version=7.6&api-version=7.5"} {
			req, _ := http.NewRequest(http.MethodGet, e.uri+"secrets/s"+q, nil)
			req.Header.Set("Authorization", "Bearer "+good)
			res, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode != 400 || !strings.Contains(string(b), "BadParameter") {
				t.Errorf("%q: %d %s", q, res.StatusCode, b)
			}
		}
	})
	t.Run("expired", func(t *testing.T) {
		clock.Advance(2 * time.Hour) // app tokens live 1 h
		if res, body := do(good); res.StatusCode != 401 {
			t.Fatalf("%d %s", res.StatusCode, body)
		}
	})
}

// TestKeyVaultUnknownVault: a vault host nobody created is Key Vault's
// 404, before any token is asked for.
func TestKeyVaultUnknownVault(t *testing.T) {
	e := startVault(t, ststest.Options{})
	p := e.principal(t, "p")
	c, err := azsecrets.NewClient("https://kv-missing.vault.azure.net/", p.cred, &azsecrets.ClientOptions{ClientOptions: azcore.ClientOptions{Transport: e.srv.VaultClient(), Retry: policy.RetryOptions{MaxRetries: -1}}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.GetSecret(context.Background(), "s", "", nil)
	if st, code, _ := kvCode(err); st != 404 || code != "VaultNotFound" {
		t.Fatalf("unknown vault: %v", err)
	}
}

// TestKeyVaultCustomSuffix: with --vault-dns-suffix the vaults live under
// that name, the challenge names https://{suffix} and the unmodified SDK's
// resource check passes against it; a client that addresses the vault
// under another suffix is refused by the SDK itself.
func TestKeyVaultCustomSuffix(t *testing.T) {
	e := startVault(t, ststest.Options{Configure: func(c *sts.Config) { c.VaultDNSSuffix = "vault.podid.test" }})
	if e.uri != "https://kv-test.vault.podid.test/" {
		t.Fatalf("vaultUri = %q", e.uri)
	}
	p := e.principal(t, "p")
	e.assign(t, p, keyvault.RoleSecretsOfficer, e.scope())
	ctx := context.Background()
	c := e.secrets(t, p)
	if _, err := c.SetSecret(ctx, "s", azsecrets.SetSecretParameters{Value: to.Ptr("v")}, nil); err != nil {
		t.Fatalf("SetSecret: %v", err)
	}
	if got, err := c.GetSecret(ctx, "s", "", nil); err != nil || *got.Value != "v" || !strings.HasPrefix(string(*got.ID), e.uri) {
		t.Fatalf("GetSecret: %v", err)
	}
	tok := getToken(t, p.cred, "https://vault.podid.test/.default")
	if c := verify(t, e.srv, tok, "https://vault.podid.test", time.Now); c.ObjectID != p.objectID {
		t.Errorf("token oid %s", c.ObjectID)
	}
	// The default suffix is not served here, so nothing answers for it.
	other, _ := azsecrets.NewClient("https://kv-test.vault.azure.net/", p.cred, &azsecrets.ClientOptions{ClientOptions: azcore.ClientOptions{Transport: e.srv.VaultClient(), Retry: policy.RetryOptions{MaxRetries: -1}}})
	if _, err := other.GetSecret(ctx, "s", "", nil); err == nil {
		t.Fatal("a vault under the default suffix answered")
	}
}

// TestKeyVaultNoValueInLogs: the sts's log at debug level, across set,
// get, update, list, delete and refusals, never contains a value.
func TestKeyVaultNoValueInLogs(t *testing.T) {
	var buf syncBuffer
	reg := prometheus.NewRegistry()
	e := startVault(t, ststest.Options{Configure: func(c *sts.Config) {
		c.Logger = slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
		c.Metrics = reg
	}})
	const value = "s3cr3t-value-that-must-never-be-logged"
	p, reader := e.principal(t, "p"), e.principal(t, "reader")
	e.assign(t, p, keyvault.RoleSecretsOfficer, e.scope())
	e.assign(t, reader, keyvault.RoleReader, e.scope())
	ctx := context.Background()
	c, rc := e.secrets(t, p), e.secrets(t, reader)
	if _, err := c.SetSecret(ctx, "s", azsecrets.SetSecretParameters{Value: to.Ptr(value)}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetSecret(ctx, "s", "", nil); err != nil {
		t.Fatal(err)
	}
	_, _ = rc.GetSecret(ctx, "s", "", nil) // refused
	_, _ = c.SetSecret(ctx, "bad_name", azsecrets.SetSecretParameters{Value: to.Ptr(value)}, nil)
	_, _ = c.SetSecret(ctx, "big", azsecrets.SetSecretParameters{Value: to.Ptr(value + strings.Repeat("x", keyvault.MaxValueBytes))}, nil)
	if _, err := c.UpdateSecretProperties(ctx, "s", "", azsecrets.UpdateSecretPropertiesParameters{ContentType: to.Ptr("x")}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := c.DeleteSecret(ctx, "s", nil); err != nil {
		t.Fatal(err)
	}
	logs := buf.String()
	if !strings.Contains(logs, "secret set") {
		t.Fatalf("the test logged nothing of interest: %s", logs)
	}
	if strings.Contains(logs, value) {
		t.Fatal("a secret value is in the sts log")
	}
	// The metrics count by operation and Key Vault's result code only.
	vaultReqs := func(op, result string) float64 {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() != "podid_sts_keyvault_requests_total" {
				continue
			}
			for _, m := range mf.GetMetric() {
				labels := map[string]string{}
				for _, l := range m.GetLabel() {
					labels[l.GetName()] = l.GetValue()
				}
				if labels["operation"] == op && labels["result"] == result {
					return m.GetCounter().GetValue()
				}
			}
		}
		return 0
	}
	for _, tc := range []struct{ op, result string }{{"get", "ok"}, {"get", "Forbidden"}, {"set", "ok"}, {"set", "BadParameter"}, {"delete", "ok"}, {"other", "Unauthorized"}} {
		if vaultReqs(tc.op, tc.result) < 1 {
			t.Errorf("no podid_sts_keyvault_requests_total{operation=%q,result=%q}", tc.op, tc.result)
		}
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestKeyVaultARMAuthorization: vault management is Azure RBAC's control
// plane: a principal without a role cannot create, read or delete vaults;
// a Key Vault data role gives no control-plane write.
func TestKeyVaultARMAuthorization(t *testing.T) {
	e := startVault(t, ststest.Options{})
	p := e.principal(t, "p")
	e.assign(t, p, keyvault.RoleSecretsOfficer, e.scope())
	opts := clientOptions(e.srv)
	cred, _ := azidentity.NewClientSecretCredential(e.srv.TenantID, p.clientID, p.secret, &azidentity.ClientSecretCredentialOptions{ClientOptions: opts, DisableInstanceDiscovery: true})
	_, armOpts := armOptions(e.srv)
	vaults, err := armkeyvault.NewVaultsClient(ststest.SubscriptionID, cred, armOpts)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	_, err = vaults.BeginCreateOrUpdate(ctx, "rg-kv", "kv-mine", armkeyvault.VaultCreateOrUpdateParameters{Location: to.Ptr("westeurope"), Properties: &armkeyvault.VaultProperties{
		TenantID: to.Ptr(e.srv.TenantID), SKU: &armkeyvault.SKU{Family: to.Ptr(armkeyvault.SKUFamilyA), Name: to.Ptr(armkeyvault.SKUNameStandard)},
	}}, nil)
	if st, code := respCode(err); st != 403 || code != "AuthorizationFailed" {
		t.Errorf("create without a role: %v", err)
	}
	if _, err := vaults.Delete(ctx, "rg-kv", "kv-test", nil); func() int { s, _ := respCode(err); return s }() != 403 {
		t.Errorf("delete by a secrets officer: %v", err)
	}
}
