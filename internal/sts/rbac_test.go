package sts_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/authorization/armauthorization/v2"

	"github.com/podid/podid/internal/rbac"
	"github.com/podid/podid/internal/sts"
	"github.com/podid/podid/internal/sts/store"
	"github.com/podid/podid/internal/sts/ststest"
)

// Principals of the RBAC tests: an operator that is User Access
// Administrator on resource group rg-a only, a reader that is Reader on
// the subscription, and a workload identity that receives roles.
const (
	operatorClient = "72f988bf-0000-4000-8000-0000000000c1"
	operatorSecret = "operator-secret-0123456789abcdef"
	readerClient   = "72f988bf-0000-4000-8000-0000000000c2"
	readerSecret   = "reader-secret-0123456789abcdefgh"
	webClient      = "72f988bf-0000-4000-8000-0000000000c3"
	webPrincipal   = "72f988bf-0000-4000-8000-0000000000d3"
)

func rbacServer(t *testing.T, statePath string) *ststest.Server {
	t.Helper()
	sub := "/subscriptions/" + ststest.SubscriptionID
	b := &sts.Bootstrap{Tenants: []sts.BootstrapTenant{
		{
			ID: ststest.TenantID,
			Applications: []sts.BootstrapApplication{
				{ClientID: operatorClient, Secrets: []sts.BootstrapSecret{{Value: operatorSecret}}},
				{ClientID: readerClient, Secrets: []sts.BootstrapSecret{{Value: readerSecret}}},
			},
			Identities: []sts.BootstrapIdentity{{Subscription: ststest.SubscriptionID, ResourceGroup: "rg-a", Name: "id-web", Location: "westeurope", ClientID: webClient, PrincipalID: webPrincipal}},
			RoleAssignments: []sts.BootstrapRoleAssignment{
				{Principal: operatorClient, Scope: sub + "/resourceGroups/rg-a", Role: rbac.UserAccessAdministrator},
				{Principal: readerClient, Scope: sub, Role: rbac.Reader},
			},
		},
		{
			ID:           tenantB,
			Applications: []sts.BootstrapApplication{{ClientID: bAdminClient, Secrets: []sts.BootstrapSecret{{Value: bAdminSecret}}}},
			// B's administrator is Owner at B's root: everything in B, nothing in A.
			RoleAssignments: []sts.BootstrapRoleAssignment{{Principal: bAdminClient, Resource: sts.ARMResource, Role: rbac.Owner}},
		},
	}}
	return ststest.Start(t, ststest.Options{Bootstrap: b, StatePath: statePath})
}

// authzClients are the real armauthorization clients for one caller.
func authzClients(t *testing.T, srv *ststest.Server, tenant, client, secret string) (*armauthorization.RoleAssignmentsClient, *armauthorization.RoleDefinitionsClient) {
	t.Helper()
	_, opts := armOptions(srv)
	cred, err := azidentity.NewClientSecretCredential(tenant, client, secret,
		&azidentity.ClientSecretCredentialOptions{ClientOptions: opts.ClientOptions, DisableInstanceDiscovery: true})
	if err != nil {
		t.Fatal(err)
	}
	ras, err := armauthorization.NewRoleAssignmentsClient(ststest.SubscriptionID, cred, opts)
	if err != nil {
		t.Fatal(err)
	}
	defs, err := armauthorization.NewRoleDefinitionsClient(cred, opts)
	if err != nil {
		t.Fatal(err)
	}
	return ras, defs
}

func createParams(roleGUID, principal string) armauthorization.RoleAssignmentCreateParameters {
	return armauthorization.RoleAssignmentCreateParameters{Properties: &armauthorization.RoleAssignmentProperties{
		RoleDefinitionID: to.Ptr("/subscriptions/" + ststest.SubscriptionID + "/providers/Microsoft.Authorization/roleDefinitions/" + roleGUID),
		PrincipalID:      to.Ptr(principal),
		PrincipalType:    to.Ptr(armauthorization.PrincipalTypeServicePrincipal),
	}}
}

func roleID(t *testing.T, name string) string {
	t.Helper()
	r, ok := rbac.ByName(name)
	if !ok {
		t.Fatalf("no built-in role %q", name)
	}
	return r.ID
}

// TestARMRoleDefinitions reads the built-in roles through the real client,
// as az role definition list --name does.
func TestARMRoleDefinitions(t *testing.T) {
	srv := rbacServer(t, "")
	ctx := context.Background()
	_, defs := authzClients(t, srv, ststest.TenantID, ststest.AdminClientID, ststest.AdminSecret)
	sub := "/subscriptions/" + ststest.SubscriptionID
	var got []*armauthorization.RoleDefinition
	for pg := defs.NewListPager(sub, &armauthorization.RoleDefinitionsClientListOptions{Filter: to.Ptr("roleName eq 'Key Vault Administrator'")}); pg.More(); {
		page, err := pg.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, page.Value...)
	}
	if len(got) != 1 || *got[0].Name != "00482a5a-887f-4fb3-b363-3b7fe8e74483" || *got[0].Properties.RoleName != "Key Vault Administrator" ||
		*got[0].ID != sub+"/providers/Microsoft.Authorization/roleDefinitions/00482a5a-887f-4fb3-b363-3b7fe8e74483" ||
		*got[0].Properties.RoleType != "BuiltInRole" || len(got[0].Properties.Permissions) != 1 ||
		*got[0].Properties.Permissions[0].DataActions[0] != "Microsoft.KeyVault/vaults/*" {
		t.Fatalf("roleName filter = %+v", got)
	}
	n := 0
	for pg := defs.NewListPager(sub+"/resourceGroups/rg-a", nil); pg.More(); {
		page, err := pg.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		n += len(page.Value)
	}
	if n != len(rbac.BuiltIn) {
		t.Errorf("list = %d definitions, want %d", n, len(rbac.BuiltIn))
	}
	d, err := defs.GetByID(ctx, sub+"/providers/Microsoft.Authorization/roleDefinitions/"+roleID(t, "Storage Queue Data Contributor"), nil)
	if err != nil || *d.Properties.RoleName != "Storage Queue Data Contributor" {
		t.Fatalf("GetByID = %v, %v", d, err)
	}
	for _, tt := range []struct {
		name, id, filter string
		status           int
		code             string
	}{
		{"unknown definition", "0b1f6471-0000-4000-8000-000000000000", "", 404, "RoleDefinitionDoesNotExist"},
		{"not a GUID", "Owner", "", 404, "RoleDefinitionDoesNotExist"},
		{"unsupported filter", "", "roleName ne 'x'", 400, "InvalidFilterInQueryString"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var err error
			if tt.id != "" {
				_, err = defs.Get(ctx, sub, tt.id, nil)
			} else {
				_, err = defs.NewListPager(sub, &armauthorization.RoleDefinitionsClientListOptions{Filter: to.Ptr(tt.filter)}).NextPage(ctx)
			}
			if st, code := respCode(err); st != tt.status || code != tt.code {
				t.Errorf("= %d %s (%v), want %d %s", st, code, err, tt.status, tt.code)
			}
		})
	}
}

// TestARMRoleAssignments drives role assignments with the real
// armauthorization client: create, get, the list views, errors as ARM
// gives them, who may write, and deletion; then the data-action query sees
// what was assigned, and a restart keeps it.
func TestARMRoleAssignments(t *testing.T) {
	statePath := t.TempDir() + "/state.db"
	srv := rbacServer(t, statePath)
	ctx := context.Background()
	admin, _ := authzClients(t, srv, ststest.TenantID, ststest.AdminClientID, ststest.AdminSecret)
	operator, _ := authzClients(t, srv, ststest.TenantID, operatorClient, operatorSecret)
	reader, _ := authzClients(t, srv, ststest.TenantID, readerClient, readerSecret)
	other, _ := authzClients(t, srv, tenantB, bAdminClient, bAdminSecret)

	sub := "/subscriptions/" + ststest.SubscriptionID
	rgA, rgB := sub+"/resourceGroups/rg-a", sub+"/resourceGroups/rg-b"
	vault := rgA + "/providers/Microsoft.KeyVault/vaults/kv1"
	kvAdmin, secretsUser, queue := roleID(t, "Key Vault Administrator"), roleID(t, "Key Vault Secrets User"), roleID(t, "Storage Queue Data Contributor")
	const (
		raVault = "11111111-0000-4000-8000-000000000001"
		raRG    = "11111111-0000-4000-8000-000000000002"
		raDup   = "11111111-0000-4000-8000-000000000003"
		raX     = "11111111-0000-4000-8000-000000000004"
	)

	// Seed 003: Key Vault Administrator on a vault, by the subscription's Owner.
	created, err := admin.Create(ctx, vault, raVault, createParams(kvAdmin, webPrincipal), nil)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	if *created.Name != raVault || *created.ID != vault+"/providers/Microsoft.Authorization/roleAssignments/"+raVault ||
		*created.Type != "Microsoft.Authorization/roleAssignments" || *created.Properties.Scope != vault ||
		*created.Properties.PrincipalID != webPrincipal || *created.Properties.PrincipalType != armauthorization.PrincipalTypeServicePrincipal ||
		*created.Properties.RoleDefinitionID != sub+"/providers/Microsoft.Authorization/roleDefinitions/"+kvAdmin {
		t.Errorf("created = %+v", created.RoleAssignment.Properties)
	}
	// The same PUT again is the same assignment.
	if again, err := admin.Create(ctx, vault, raVault, createParams(kvAdmin, webPrincipal), nil); err != nil || *again.Name != raVault {
		t.Errorf("re-Create = %v", err)
	}
	// The operator (User Access Administrator on rg-a) grants inside rg-a.
	if _, err := operator.Create(ctx, rgA, raRG, createParams(queue, webPrincipal), nil); err != nil {
		t.Fatalf("operator Create on its resource group: %v", err)
	}
	got, err := admin.GetByID(ctx, rgA+"/providers/Microsoft.Authorization/roleAssignments/"+raRG, nil)
	if err != nil || *got.Properties.RoleDefinitionID != sub+"/providers/Microsoft.Authorization/roleDefinitions/"+queue {
		t.Fatalf("GetByID = %v", err)
	}

	for _, tt := range []struct {
		name   string
		client *armauthorization.RoleAssignmentsClient
		scope  string
		ra     string
		params armauthorization.RoleAssignmentCreateParameters
		status int
		code   string
	}{
		{"duplicate under another name", admin, vault, raDup, createParams(kvAdmin, webPrincipal), 409, "RoleAssignmentExists"},
		{"a name cannot change role", admin, vault, raVault, createParams(secretsUser, webPrincipal), 400, "RoleAssignmentUpdateNotPermitted"},
		{"unknown principal", admin, vault, raX, createParams(secretsUser, "0b1f6471-0000-4000-8000-00000000dead"), 400, "PrincipalNotFound"},
		{"another tenant's principal", admin, vault, raX, createParams(secretsUser, oidOf(t, srv, bAdminClient)), 400, "PrincipalNotFound"},
		{"unknown role", admin, vault, raX, createParams("0b1f6471-0000-4000-8000-00000000beef", webPrincipal), 400, "RoleDefinitionDoesNotExist"},
		{"not a GUID name", admin, vault, "kv-admin", createParams(secretsUser, webPrincipal), 400, "InvalidRoleAssignmentId"},
		{"wrong principal type", admin, vault, raX, armauthorization.RoleAssignmentCreateParameters{Properties: &armauthorization.RoleAssignmentProperties{
			RoleDefinitionID: to.Ptr(secretsUser), PrincipalID: to.Ptr(webPrincipal), PrincipalType: to.Ptr(armauthorization.PrincipalTypeUser)}}, 400, "UnmatchedPrincipalType"},
		{"conditions are refused", admin, vault, raX, armauthorization.RoleAssignmentCreateParameters{Properties: &armauthorization.RoleAssignmentProperties{
			RoleDefinitionID: to.Ptr(secretsUser), PrincipalID: to.Ptr(webPrincipal), Condition: to.Ptr("@Resource[x] StringEquals 'y'"), ConditionVersion: to.Ptr("2.0")}}, 400, "InvalidCondition"},
		{"a Reader cannot assign", reader, vault, raX, createParams(secretsUser, webPrincipal), 403, "AuthorizationFailed"},
		{"operator outside its resource group", operator, rgB, raX, createParams(secretsUser, webPrincipal), 403, "AuthorizationFailed"},
		{"operator above its resource group", operator, sub, raX, createParams(secretsUser, webPrincipal), 403, "AuthorizationFailed"},
		{"operator at the tenant root", operator, "/", raX, createParams(secretsUser, webPrincipal), 403, "AuthorizationFailed"},
		{"another tenant's Owner", other, vault, raX, createParams(secretsUser, oidOf(t, srv, bAdminClient)), 404, "SubscriptionNotFound"},
		{"a URL is no scope", admin, "https://storage.azure.com", raX, createParams(secretsUser, webPrincipal), 400, "InvalidScope"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.client.Create(ctx, tt.scope, tt.ra, tt.params, nil)
			if st, code := respCode(err); st != tt.status || code != tt.code {
				t.Errorf("Create = %d %s (%v), want %d %s", st, code, err, tt.status, tt.code)
			}
		})
	}

	list := func(c *armauthorization.RoleAssignmentsClient, scope, filter string) []string {
		t.Helper()
		var opts *armauthorization.RoleAssignmentsClientListForScopeOptions
		if filter != "" {
			opts = &armauthorization.RoleAssignmentsClientListForScopeOptions{Filter: to.Ptr(filter)}
		}
		var names []string
		for pg := c.NewListForScopePager(scope, opts); pg.More(); {
			page, err := pg.NextPage(ctx)
			if err != nil {
				t.Fatalf("list %s %q: %v", scope, filter, err)
			}
			for _, v := range page.Value {
				names = append(names, *v.Properties.PrincipalID+"@"+*v.Properties.Scope)
			}
		}
		slices.Sort(names)
		return names
	}
	adminOID, operatorOID, readerOID := oidOf(t, srv, ststest.AdminClientID), oidOf(t, srv, operatorClient), oidOf(t, srv, readerClient)
	want := func(s ...string) []string { slices.Sort(s); return s }
	for _, tt := range []struct {
		name, scope, filter string
		want                []string
	}{
		{"at, above and below rg-a", rgA, "", want(adminOID+"@/", readerOID+"@"+sub, operatorOID+"@"+rgA, webPrincipal+"@"+rgA, webPrincipal+"@"+vault)},
		{"atScope(): at and above rg-a (inherited)", rgA, "atScope()", want(adminOID+"@/", readerOID+"@"+sub, operatorOID+"@"+rgA, webPrincipal+"@"+rgA)},
		{"atScope() at the vault", vault, "atScope()", want(adminOID+"@/", readerOID+"@"+sub, operatorOID+"@"+rgA, webPrincipal+"@"+rgA, webPrincipal+"@"+vault)},
		{"one principal", sub, "principalId eq '" + webPrincipal + "'", want(webPrincipal+"@"+rgA, webPrincipal+"@"+vault)},
		{"az's form", vault, "atScope() and assignedTo('" + webPrincipal + "')", want(webPrincipal+"@"+rgA, webPrincipal+"@"+vault)},
		{"another resource group", rgB, "atScope()", want(adminOID+"@/", readerOID+"@"+sub)},
	} {
		t.Run("list "+tt.name, func(t *testing.T) {
			if got := list(admin, tt.scope, tt.filter); !slices.Equal(got, tt.want) {
				t.Errorf("got  %v\nwant %v", got, tt.want)
			}
		})
	}
	// A Reader reads assignments; the subscription-wide pager works too.
	if got := list(reader, vault, "atScope()"); len(got) != 5 {
		t.Errorf("reader's view = %v", got)
	}
	if _, err := reader.NewListForSubscriptionPager(nil).NextPage(ctx); err != nil {
		t.Errorf("ListForSubscription: %v", err)
	}
	if _, err := other.NewListForScopePager(sub, nil).NextPage(ctx); !hasCode(err, 404, "SubscriptionNotFound") {
		t.Errorf("another tenant lists A's subscription: %v", err)
	}
	if _, err := admin.NewListForScopePager(sub, &armauthorization.RoleAssignmentsClientListForScopeOptions{Filter: to.Ptr("principalName eq 'x'")}).NextPage(ctx); !hasCode(err, 400, "InvalidFilterInQueryString") {
		t.Errorf("bad filter: %v", err)
	}

	// The data-action query sees the assignments, with inheritance and wildcards.
	for _, tt := range []struct {
		action, scope string
		want          bool
	}{
		{"Microsoft.KeyVault/vaults/secrets/getSecret/action", vault, true},
		{"Microsoft.KeyVault/vaults/secrets/getSecret/action", vault + "/secrets/db-password", true},
		{"Microsoft.KeyVault/vaults/secrets/getSecret/action", rgA + "/providers/Microsoft.KeyVault/vaults/kv2", false},
		{"Microsoft.Storage/storageAccounts/queueServices/queues/messages/read", rgA + "/providers/Microsoft.Storage/storageAccounts/sa", true},
		{"Microsoft.Storage/storageAccounts/queueServices/queues/messages/read", rgB + "/providers/Microsoft.Storage/storageAccounts/sa", false},
	} {
		if got, err := srv.HasDataAction(ststest.TenantID, webPrincipal, tt.action, tt.scope); err != nil || got != tt.want {
			t.Errorf("HasDataAction(%s, %s) = %v, %v; want %v", tt.action, tt.scope, got, err, tt.want)
		}
	}
	if got, _ := srv.HasDataAction(tenantB, webPrincipal, "Microsoft.KeyVault/vaults/secrets/getSecret/action", vault); got {
		t.Error("HasDataAction granted in another tenant")
	}

	// Delete: 200 with the assignment, then gone, then 204.
	if _, err := operator.Delete(ctx, rgA, raRG, nil); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, err := admin.Get(ctx, rgA, raRG, nil); !hasCode(err, 404, "RoleAssignmentNotFound") {
		t.Errorf("Get after Delete: %v", err)
	}
	if _, err := admin.Delete(ctx, rgA, raRG, nil); err != nil {
		t.Errorf("second Delete: %v", err)
	}
	if _, err := reader.Delete(ctx, vault, raVault, nil); !hasCode(err, 403, "AuthorizationFailed") {
		t.Errorf("Reader deletes: %v", err)
	}
	if ok, _ := srv.HasDataAction(ststest.TenantID, webPrincipal, "Microsoft.Storage/storageAccounts/queueServices/queues/messages/read", rgA); ok {
		t.Error("deleted assignment still grants")
	}

	// A tenant-root assignment reaches every subscription of the tenant,
	// never one no tenant owns (nor, above, another tenant's).
	if _, err := admin.Create(ctx, "/", raX, createParams(secretsUser, webPrincipal), nil); err != nil {
		t.Fatalf("Create at /: %v", err)
	}
	for scope, want := range map[string]bool{
		rgB + "/providers/Microsoft.KeyVault/vaults/kv9":                                                               true,
		"/subscriptions/0b1f6471-0000-4000-8000-0000000000ff/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv": false,
	} {
		if got, err := srv.HasDataAction(ststest.TenantID, webPrincipal, "Microsoft.KeyVault/vaults/secrets/getSecret/action", scope); got != want || err != nil {
			t.Errorf("root grant at %s = %v, %v; want %v", scope, got, err, want)
		}
	}
	if _, err := srv.HasDataAction(ststest.TenantID, webPrincipal, "x", "https://vault.azure.net"); err == nil {
		t.Error("HasDataAction accepted a URL as a scope")
	}

	// Durable: a restart on the same state keeps the vault assignment.
	srv.Stop()
	srv2 := rbacServer(t, statePath)
	if ok, err := srv2.HasDataAction(ststest.TenantID, webPrincipal, "Microsoft.KeyVault/vaults/secrets/getSecret/action", vault); !ok || err != nil {
		t.Errorf("after restart: %v, %v", ok, err)
	}
	// Deleting the identity deletes its assignments with it.
	if err := srv2.DeletePrincipal(ctx, webClient); err != nil {
		t.Fatal(err)
	}
	if ras, _ := srv2.AzureRoleAssignments(ststest.TenantID); slices.ContainsFunc(ras, func(a store.RBACAssignment) bool { return a.PrincipalID == webPrincipal }) {
		t.Error("the deleted identity's assignments outlive it")
	}
}

func oidOf(t *testing.T, srv *ststest.Server, client string) string {
	t.Helper()
	p, err := srv.Principal(client)
	if err != nil {
		t.Fatal(err)
	}
	return p.ObjectID
}

func hasCode(err error, status int, code string) bool {
	st, c := respCode(err)
	return st == status && strings.EqualFold(c, code)
}

// TestARMAppRoleMigration: state written when ARM was authorized by an
// app role on https://management.azure.com becomes the Azure role
// assignment it meant, at the tenant root, at the next start; the app
// role (and the roles claim in ARM tokens) is gone, and so is an app role
// on a resource that is not an application (Storage has no app roles).
func TestARMAppRoleMigration(t *testing.T) {
	statePath := t.TempDir() + "/state.db"
	srv := rbacServer(t, statePath)
	operatorOID := oidOf(t, srv, operatorClient)
	srv.Stop()
	st, err := store.Open(statePath)
	if err != nil {
		t.Fatal(err)
	}
	for _, ra := range []store.RoleAssignment{
		{ID: "legacy-contributor", TenantID: ststest.TenantID, Principal: operatorClient, Resource: "https://management.core.windows.net/", Role: "Contributor"},
		{ID: "legacy-custom", TenantID: ststest.TenantID, Principal: operatorClient, Resource: sts.ARMResource, Role: "SuperUser"},
		{ID: "app-role", TenantID: ststest.TenantID, Principal: operatorClient, Resource: readerClient, Role: "Orders.Read"},
		{ID: "storage-app-role", TenantID: ststest.TenantID, Principal: operatorClient, Resource: "https://storage.azure.com", Role: "Storage Queue Data Contributor"},
	} {
		if err := st.PutRoleAssignment(ra); err != nil {
			t.Fatal(err)
		}
	}
	st.Close()

	srv = rbacServer(t, statePath)
	legacy, _ := srv.RoleAssignments(ststest.TenantID)
	if len(legacy) != 1 || legacy[0].ID != "app-role" {
		t.Errorf("app-role assignments after migration = %+v, want only the one on a registered application", legacy)
	}
	az, _ := srv.AzureRoleAssignments(ststest.TenantID)
	if !slices.ContainsFunc(az, func(a store.RBACAssignment) bool {
		return a.PrincipalID == operatorOID && a.Scope == "/" && a.RoleID == roleID(t, rbac.Contributor)
	}) {
		t.Errorf("no Contributor at / for the operator: %+v", az)
	}
	for _, tt := range []struct {
		action string
		want   bool
	}{
		{"Microsoft.ManagedIdentity/userAssignedIdentities/write", true},
		{"Microsoft.Authorization/roleAssignments/write", false}, // Contributor, at the root too
	} {
		if got, err := srv.HasAction(ststest.TenantID, operatorOID, tt.action, "/subscriptions/"+ststest.SubscriptionID+"/resourceGroups/rg-z"); got != tt.want || err != nil {
			t.Errorf("HasAction(%s) = %v, %v; want %v", tt.action, got, err, tt.want)
		}
	}
}

// TestBootstrapRoleAssignments: a bootstrap role assignment names exactly
// one of resource (an app role) and scope (an Azure role), and an ARM
// "app role" must be a built-in role.
func TestBootstrapRoleAssignments(t *testing.T) {
	for _, tt := range []struct {
		name string
		ra   sts.BootstrapRoleAssignment
		want string
	}{
		{"both", sts.BootstrapRoleAssignment{Principal: ststest.AdminClientID, Resource: "api://x", Scope: "/", Role: "Owner"}, "exactly one of resource"},
		{"neither", sts.BootstrapRoleAssignment{Principal: ststest.AdminClientID, Role: "Owner"}, "exactly one of resource"},
		{"ARM role not built in", sts.BootstrapRoleAssignment{Principal: ststest.AdminClientID, Resource: sts.ARMResource, Role: "Admin"}, "not an Azure built-in role"},
		{"URL scope", sts.BootstrapRoleAssignment{Principal: ststest.AdminClientID, Scope: "https://storage.azure.com", Role: "Reader"}, "invalid scope"},
		{"unknown role", sts.BootstrapRoleAssignment{Principal: ststest.AdminClientID, Scope: "/", Role: "Janitor"}, "role definition does not exist"},
		{"valid", sts.BootstrapRoleAssignment{Principal: ststest.AdminClientID, Scope: "/subscriptions/" + ststest.SubscriptionID, Role: "Reader"}, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b := ststest.DefaultBootstrap()
			// An app role on Storage (which has none) is skipped, not fatal: files written before keep starting.
			b.Tenants[0].RoleAssignments = append(b.Tenants[0].RoleAssignments,
				sts.BootstrapRoleAssignment{Principal: ststest.AdminClientID, Resource: "https://storage.azure.com", Role: "Storage Queue Data Contributor"}, tt.ra)
			s, err := sts.New(sts.Config{StatePath: t.TempDir() + "/state.db", Bootstrap: b})
			if err != nil {
				t.Fatal(err)
			}
			err = s.Open(context.Background())
			defer s.Close()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Open = %v", err)
				}
				if ras, _ := s.RoleAssignments(ststest.TenantID); len(ras) != 0 {
					t.Errorf("app-role assignments = %+v, want none (Storage has no app roles)", ras)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Open = %v, want %q", err, tt.want)
			}
		})
	}
}

// BenchmarkHasDataAction measures the data planes' authorization query
// (500 assignments in the tenant, the answer inherited from the resource
// group, with a wildcard) against a baseline in the same run: reading one
// principal from the store, which every token request does. Run:
//
//	go test ./internal/sts -run '^$' -bench BenchmarkHasDataAction
func BenchmarkHasDataAction(b *testing.B) {
	srv := ststest.Start(b, ststest.Options{})
	ctx := context.Background()
	sub := "/subscriptions/" + ststest.SubscriptionID
	var oids []string
	for i := range 50 {
		p, _, err := srv.PutIdentity(ctx, sts.Identity{TenantID: ststest.TenantID, Subscription: ststest.SubscriptionID, ResourceGroup: "rg", Name: fmt.Sprintf("id-%03d", i)})
		if err != nil {
			b.Fatal(err)
		}
		oids = append(oids, p.ObjectID)
		for j := range 10 {
			scope := fmt.Sprintf("%s/resourceGroups/rg-%d/providers/Microsoft.KeyVault/vaults/kv%d", sub, j, i)
			if j == 9 {
				scope = fmt.Sprintf("%s/resourceGroups/rg-%d", sub, i)
			}
			if _, _, err := srv.PutAzureRoleAssignment(ctx, sts.AzureRoleAssignment{TenantID: ststest.TenantID, Scope: scope, Role: "Key Vault Secrets Officer", PrincipalID: p.ObjectID}); err != nil {
				b.Fatal(err)
			}
		}
	}
	target := fmt.Sprintf("%s/resourceGroups/rg-%d/providers/Microsoft.KeyVault/vaults/kv/secrets/db", sub, 25)
	var base float64
	b.Run("baseline-principal-read", func(b *testing.B) {
		start := time.Now()
		for b.Loop() {
			if _, err := srv.Principal(ststest.AdminClientID); err != nil {
				b.Fatal(err)
			}
		}
		base = float64(time.Since(start).Nanoseconds()) / float64(b.N)
	})
	b.Run("has-data-action", func(b *testing.B) {
		start := time.Now()
		for b.Loop() {
			ok, err := srv.HasDataAction(ststest.TenantID, oids[25], "Microsoft.KeyVault/vaults/secrets/getSecret/action", target)
			if err != nil || !ok {
				b.Fatalf("HasDataAction = %v, %v", ok, err)
			}
		}
		ns := float64(time.Since(start).Nanoseconds()) / float64(b.N)
		if base > 0 {
			b.ReportMetric(ns/base, "x-principal-read")
		}
	})
}
