package cli_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/podid/podid/internal/sts/keyvault"
	"github.com/podid/podid/internal/sts/ststest"
)

// TestKeyVault runs seed 003's vault steps with the podid binary against
// a real sts: create an RBAC vault, grant the admin a Key Vault role at
// the vault, set, show, list and delete a secret. The binary reaches
// https://kv-cli.vault.azure.net/ by dialing the local sts (its transport
// does that for the local cloud), with the unmodified azsecrets client.
func TestKeyVault(t *testing.T) {
	c := newCLI(t, "", nil)
	var v struct {
		Name     string `json:"name"`
		VaultURI string `json:"vaultUri"`
		ID       string `json:"id"`
		RBAC     bool   `json:"enableRbacAuthorization"`
	}
	if err := json.Unmarshal([]byte(c.ok("keyvault", "create", "kv-cli", "-o", "json")), &v); err != nil {
		t.Fatal(err)
	}
	if v.VaultURI != "https://kv-cli.vault.azure.net/" || !v.RBAC || !strings.HasSuffix(v.ID, "/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv-cli") {
		t.Fatalf("created %+v", v)
	}
	if out := c.ok("keyvault", "show", "kv-cli"); !strings.Contains(out, "https://kv-cli.vault.azure.net/") {
		t.Errorf("show: %s", out)
	}
	if out := c.ok("keyvault", "create", "kv-tagged", "--tag", "team=a", "--retention-days", "7", "-o", "yaml"); !strings.Contains(out, "team: a") || !strings.Contains(out, "softDeleteRetentionInDays: 7") {
		t.Errorf("create with a tag and retention: %s", out)
	}
	if out := c.ok("keyvault", "delete", "kv-tagged"); !strings.Contains(out, "vault kv-tagged deleted") {
		t.Errorf("delete: %s", out)
	}

	// No Key Vault role yet: the data plane refuses, in one line.
	r := c.podid("keyvault", "secret", "set", "--vault-name", "kv-cli", "--name", "demosecret", "--value", "demovalue")
	if r.code == 0 || !strings.Contains(r.stderr, "Forbidden") || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
		t.Fatalf("set without a role: exit %d, stderr %q", r.code, r.stderr)
	}

	admin, err := c.sts.Principal(ststest.AdminClientID)
	if err != nil {
		t.Fatal(err)
	}
	// Seed 003: az role assignment create --role "Key Vault Administrator" --scope <vault>.
	c.ok("role-assignment", "create", "--assignee-object-id", admin.ObjectID, "--role", "Key Vault Administrator", "--scope", v.ID)
	c.ok("keyvault", "secret", "set", "--vault-name", "kv-cli", "--name", "demosecret", "--value", "demovalue")
	file := ststest.WriteFile(t, "value", []byte("from-a-file"))
	c.ok("keyvault", "secret", "set", "--vault-name", "kv-cli", "--name", "filesecret", "--file", file, "--content-type", "text/plain")

	if out := c.ok("keyvault", "secret", "show", "--vault-name", "kv-cli", "--name", "demosecret"); strings.Contains(out, "demovalue") || !strings.Contains(out, "demosecret") {
		t.Errorf("show without --show-value printed the value or not the secret: %s", out)
	}
	if out := c.ok("keyvault", "secret", "show", "--vault-name", "kv-cli", "--name", "demosecret", "-o", "json"); strings.Contains(out, "demovalue") {
		t.Errorf("show -o json without --show-value printed the value: %s", out)
	}
	var shown struct {
		Value string `json:"value"`
	}
	if err := json.Unmarshal([]byte(c.ok("keyvault", "secret", "show", "--vault-name", "kv-cli", "--name", "filesecret", "--show-value", "-o", "json")), &shown); err != nil || shown.Value != "from-a-file" {
		t.Errorf("show --show-value: %+v %v", shown, err)
	}
	if out := c.ok("keyvault", "secret", "show", "--vault-name", "kv-cli", "--name", "demosecret", "--show-value"); !strings.Contains(out, "demovalue") {
		t.Errorf("table with --show-value: %s", out)
	}
	var list []struct {
		Name  string  `json:"name"`
		Value *string `json:"value"`
	}
	if err := json.Unmarshal([]byte(c.ok("keyvault", "secret", "list", "--vault-name", "kv-cli", "-o", "json")), &list); err != nil || len(list) != 2 || list[0].Value != nil {
		t.Errorf("list: %+v %v", list, err)
	}
	if out := c.ok("keyvault", "secret", "delete", "--vault-name", "kv-cli", "--name", "demosecret"); !strings.Contains(out, "deleted (recoverable until") {
		t.Errorf("delete: %s", out)
	}
	r = c.podid("keyvault", "secret", "show", "--vault-name", "kv-cli", "--name", "demosecret")
	if r.code == 0 || !strings.Contains(r.stderr, "not found") {
		t.Errorf("show after delete: exit %d %q", r.code, r.stderr)
	}

	big := ststest.WriteFile(t, "big", []byte(strings.Repeat("x", keyvault.MaxValueBytes+1)))
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"bad vault name", []string{"keyvault", "create", "kv--x"}, "vault name"},
		{"access policy vault", []string{"keyvault", "create", "kv-ap", "--enable-rbac-authorization=false"}, "RBAC only"},
		{"bad secret name", []string{"keyvault", "secret", "set", "--vault-name", "kv-cli", "--name", "bad_name", "--value", "x"}, "secret name"},
		{"value and file", []string{"keyvault", "secret", "set", "--vault-name", "kv-cli", "--name", "s", "--value", "x", "--file", file}, "exclude each other"},
		{"no value", []string{"keyvault", "secret", "set", "--vault-name", "kv-cli", "--name", "s"}, "--value or --file"},
		{"oversized file", []string{"keyvault", "secret", "set", "--vault-name", "kv-cli", "--name", "s", "--file", big}, "larger than"},
		{"no vault", []string{"keyvault", "secret", "list"}, "--vault-name is required"},
		{"unknown vault", []string{"keyvault", "secret", "list", "--vault-name", "kv-nope"}, "not found"},
		{"bad tag", []string{"keyvault", "create", "kv-tag", "--tag", "novalue"}, "--tag"},
		{"bad output", []string{"keyvault", "secret", "list", "--vault-name", "kv-cli", "-o", "xml"}, "--output"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := c.podid(tc.args...)
			if r.code == 0 || !strings.Contains(r.stderr, tc.want) {
				t.Fatalf("exit %d, stderr %q; want non-zero and %q", r.code, r.stderr, tc.want)
			}
		})
	}
}
