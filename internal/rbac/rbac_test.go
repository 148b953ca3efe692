package rbac_test

import (
	"errors"
	"testing"

	"github.com/podid/podid/internal/rbac"
)

const sub = "0b1f6471-1bf0-4dda-aec3-cb9272f09590"

func TestMatch(t *testing.T) {
	for _, tt := range []struct {
		pattern, action string
		want            bool
	}{
		{"*", "Microsoft.Authorization/roleAssignments/write", true},
		{"*/read", "Microsoft.ManagedIdentity/userAssignedIdentities/read", true},
		{"*/read", "Microsoft.ManagedIdentity/userAssignedIdentities/write", false},
		{"Microsoft.KeyVault/vaults/secrets/*", "Microsoft.KeyVault/vaults/secrets/getSecret/action", true},
		{"Microsoft.KeyVault/vaults/secrets/*", "Microsoft.KeyVault/vaults/keys/sign/action", false},
		{"Microsoft.KeyVault/vaults/*/read", "Microsoft.KeyVault/vaults/secrets/read", true},
		{"Microsoft.KeyVault/vaults/*/read", "Microsoft.KeyVault/vaults/secrets/readMetadata/action", false},
		{"microsoft.authorization/*/write", "Microsoft.Authorization/roleAssignments/write", true}, // case-insensitive
		{"Microsoft.Authorization/*", "Microsoft.Authorization", false},
		{"a*b*c", "aXbYbZc", true},
		{"a*b*c", "aXbYbZ", false},
		{"", "x", false},
	} {
		if got := rbac.Match(tt.pattern, tt.action); got != tt.want {
			t.Errorf("Match(%q, %q) = %v, want %v", tt.pattern, tt.action, got, tt.want)
		}
	}
}

func TestParseScope(t *testing.T) {
	for _, tt := range []struct {
		in, want string // want "" = invalid
	}{
		{"/", "/"},
		{"/subscriptions/" + sub, "/subscriptions/" + sub},
		{"/SUBSCRIPTIONS/0B1F6471-1BF0-4DDA-AEC3-CB9272F09590/resourcegroups/Demo", "/subscriptions/" + sub + "/resourceGroups/Demo"},
		{"/subscriptions/" + sub + "/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv", "/subscriptions/" + sub + "/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv"},
		{"/subscriptions/" + sub + "/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv/secrets/s1", "/subscriptions/" + sub + "/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv/secrets/s1"},
		{"https://storage.azure.com", ""},
		{"/subscriptions/not-a-guid", ""},
		{"/subscriptions/" + sub + "/", ""},
		{"/subscriptions/" + sub + "//resourceGroups/rg", ""},
		{"/subscriptions/" + sub + "/resourceGroups", ""},
		{"/subscriptions/" + sub + "/resourceGroups/rg/providers/Microsoft.KeyVault/vaults", ""},
		{"/subscriptions/" + sub + "/resourceGroups/rg/providers/vaults/kv", ""},
		{"/subscriptions/" + sub + "/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv/providers/Microsoft.Authorization/x/y", ""},
		{"/providers/Microsoft.Management/managementGroups/mg", ""},
		{"/subscriptions/" + sub + "/resourceGroups/r g", ""},
		{"subscriptions/" + sub, ""},
		{"", ""},
	} {
		sc, err := rbac.ParseScope(tt.in)
		switch {
		case tt.want == "" && !errors.Is(err, rbac.ErrInvalidScope):
			t.Errorf("ParseScope(%q) = %q, %v; want ErrInvalidScope", tt.in, sc, err)
		case tt.want != "" && (err != nil || sc.String() != tt.want):
			t.Errorf("ParseScope(%q) = %q, %v; want %q", tt.in, sc, err, tt.want)
		}
	}
}

func TestContains(t *testing.T) {
	s := rbac.MustParseScope
	root, subS := s("/"), s("/subscriptions/"+sub)
	rg := s("/subscriptions/" + sub + "/resourceGroups/RG")
	rg2 := s("/subscriptions/" + sub + "/resourceGroups/rg2")
	rgPrefix := s("/subscriptions/" + sub + "/resourceGroups/rg-other") // shares a prefix with "rg"
	kv := s("/subscriptions/" + sub + "/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv")
	for _, tt := range []struct {
		a, b rbac.Scope
		want bool
	}{
		{root, kv, true}, {subS, kv, true}, {rg, kv, true}, {kv, kv, true},
		{kv, rg, false}, {rg2, kv, false}, {rg, rgPrefix, false}, {subS, root, false}, {root, root, true},
	} {
		if got := tt.a.Contains(tt.b); got != tt.want {
			t.Errorf("%s contains %s = %v, want %v", tt.a, tt.b, got, tt.want)
		}
	}
}

// TestPermitted is the data-action and action decision table: role ×
// scope of the assignment × action × scope asked → granted.
func TestPermitted(t *testing.T) {
	const p = "6d7a8300-0000-4000-8000-000000000001"
	rg := "/subscriptions/" + sub + "/resourceGroups/rg"
	kv := rg + "/providers/Microsoft.KeyVault/vaults/kv"
	role := func(name string) string {
		r, ok := rbac.ByName(name)
		if !ok {
			t.Fatalf("no role %q", name)
		}
		return r.ID
	}
	for _, tt := range []struct {
		name        string
		role, at    string
		action, on  string
		data, want  bool
		principalID string // default p
	}{
		{"secrets user reads a secret of its vault", "Key Vault Secrets User", kv, "Microsoft.KeyVault/vaults/secrets/getSecret/action", kv + "/secrets/s1", true, true, ""},
		{"secrets user cannot set a secret", "Key Vault Secrets User", kv, "Microsoft.KeyVault/vaults/secrets/setSecret/action", kv, true, false, ""},
		{"secrets officer: wildcard dataAction", "Key Vault Secrets Officer", kv, "Microsoft.KeyVault/vaults/secrets/delete", kv, true, true, ""},
		{"secrets officer: no keys", "Key Vault Secrets Officer", kv, "Microsoft.KeyVault/vaults/keys/sign/action", kv, true, false, ""},
		{"administrator at the resource group: inherited", "Key Vault Administrator", rg, "Microsoft.KeyVault/vaults/keys/sign/action", kv, true, true, ""},
		{"administrator at the subscription: inherited", "Key Vault Administrator", "/subscriptions/" + sub, "Microsoft.KeyVault/vaults/secrets/getSecret/action", kv, true, true, ""},
		{"administrator at the root: inherited", "Key Vault Administrator", "/", "Microsoft.KeyVault/vaults/secrets/getSecret/action", kv, true, true, ""},
		{"assignment on another vault", "Key Vault Administrator", rg + "/providers/Microsoft.KeyVault/vaults/kv2", "Microsoft.KeyVault/vaults/secrets/getSecret/action", kv, true, false, ""},
		{"assignment below the scope asked", "Key Vault Administrator", kv, "Microsoft.KeyVault/vaults/secrets/getSecret/action", rg, true, false, ""},
		{"owner has no data actions", "Owner", "/", "Microsoft.KeyVault/vaults/secrets/getSecret/action", kv, true, false, ""},
		{"owner has every action", "Owner", "/", "Microsoft.Authorization/roleAssignments/write", kv, false, true, ""},
		{"contributor cannot assign roles", "Contributor", rg, "Microsoft.Authorization/roleAssignments/write", kv, false, false, ""},
		{"contributor writes identities", "Contributor", rg, "Microsoft.ManagedIdentity/userAssignedIdentities/write", rg, false, true, ""},
		{"user access administrator assigns", "User Access Administrator", rg, "Microsoft.Authorization/roleAssignments/write", kv, false, true, ""},
		{"reader reads", "Reader", "/subscriptions/" + sub, "Microsoft.Authorization/roleAssignments/read", rg, false, true, ""},
		{"reader cannot write", "Reader", "/subscriptions/" + sub, "Microsoft.Authorization/roleAssignments/write", rg, false, false, ""},
		{"data action is not an action", "Key Vault Secrets User", kv, "Microsoft.KeyVault/vaults/secrets/getSecret/action", kv, false, false, ""},
		{"queue contributor", "Storage Queue Data Contributor", rg, "Microsoft.Storage/storageAccounts/queueServices/queues/messages/read", rg + "/providers/Microsoft.Storage/storageAccounts/sa", true, true, ""},
		{"queue sender cannot read", "Storage Queue Data Message Sender", rg, "Microsoft.Storage/storageAccounts/queueServices/queues/messages/read", rg, true, false, ""},
		{"another principal", "Key Vault Administrator", kv, "Microsoft.KeyVault/vaults/secrets/getSecret/action", kv, true, false, "6d7a8300-0000-4000-8000-000000000002"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			as := []rbac.Assignment{{PrincipalID: p, RoleID: role(tt.role), Scope: rbac.MustParseScope(tt.at)}}
			who := p
			if tt.principalID != "" {
				who = tt.principalID
			}
			if got := rbac.Permitted(as, who, tt.action, rbac.MustParseScope(tt.on), tt.data); got != tt.want {
				t.Errorf("Permitted = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestBuiltInTable(t *testing.T) {
	seen := map[string]bool{}
	for _, r := range rbac.BuiltIn {
		if !rbac.GUID(r.ID) || r.Name == "" || seen[r.ID] || seen[r.Name] {
			t.Errorf("role %+v: bad or duplicate id/name", r)
		}
		seen[r.ID], seen[r.Name] = true, true
		if len(r.Actions)+len(r.DataActions) == 0 {
			t.Errorf("role %s grants nothing", r.Name)
		}
	}
	for _, ref := range []string{
		"00482a5a-887f-4fb3-b363-3b7fe8e74483",
		"/subscriptions/" + sub + "/providers/Microsoft.Authorization/roleDefinitions/00482a5a-887f-4fb3-b363-3b7fe8e74483",
		"/providers/Microsoft.Authorization/roleDefinitions/00482A5A-887F-4FB3-B363-3B7FE8E74483",
	} {
		if g := rbac.DefinitionGUID(ref); g != "00482a5a-887f-4fb3-b363-3b7fe8e74483" {
			t.Errorf("DefinitionGUID(%q) = %q", ref, g)
		}
	}
	for _, ref := range []string{"Key Vault Administrator", "/subscriptions/x/providers/Microsoft.Authorization/roleDefinitions/00482a5a-887f-4fb3-b363-3b7fe8e74483", ""} {
		if g := rbac.DefinitionGUID(ref); g != "" {
			t.Errorf("DefinitionGUID(%q) = %q, want none", ref, g)
		}
	}
}
