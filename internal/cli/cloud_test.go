package cli_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/podid/podid/internal/cli"
	"github.com/podid/podid/internal/sts"
	"github.com/podid/podid/internal/sts/ststest"
)

func TestConfig(t *testing.T) {
	c := newCLI(t, "", nil)
	path := filepath.Join(c.xdg, "podid", "config.yaml")
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("config mode %#o, want 0600", st.Mode().Perm())
	}
	out := c.ok("config", "view", "-o", "json")
	var got cli.Config
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("config view -o json: %v\n%s", err, out)
	}
	if got.Cloud != "local" || got.Authority != c.sts.URL || got.TenantID != c.sts.TenantID {
		t.Errorf("config view = %+v", got)
	}
	if strings.Contains(out, ststest.AdminSecret) {
		t.Error("config view prints the secret")
	}

	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"unknown cloud", []string{"config", "set-cloud", "aws"}, `cloud "aws" is unknown`},
		{"http authority", []string{"config", "set-cloud", "local", "--authority", "http://127.0.0.1:1", "--tenant-id", ststest.TenantID, "--client-id", ststest.AdminClientID}, "must be an https URL"},
		{"tenant not a GUID", []string{"config", "set-cloud", "local", "--authority", "https://127.0.0.1:1", "--tenant-id", "contoso", "--client-id", ststest.AdminClientID}, `tenantId "contoso" is not a GUID`},
		{"local without client", []string{"config", "set-cloud", "local", "--authority", "https://127.0.0.1:1"}, "cloud local needs authority, tenantId and clientId"},
		{"azure with local flags", []string{"config", "set-cloud", "azure", "--client-id", ststest.AdminClientID}, "are for local"},
		{"bad output", []string{"config", "view", "-o", "xml"}, `--output "xml"`},
		{"no args", []string{"config", "set-cloud"}, "accepts 1 arg"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := c.podid(tc.args...)
			if r.code == 0 || !strings.Contains(r.stderr, tc.want) {
				t.Fatalf("exit %d, stderr %q; want non-zero and %q", r.code, r.stderr, tc.want)
			}
			if strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 || strings.Contains(r.stderr, "goroutine") {
				t.Errorf("stderr is not one line: %q", r.stderr)
			}
		})
	}
	// The failed set-cloud calls left the recorded config alone.
	if out := c.ok("config", "view"); !strings.Contains(out, c.sts.URL) {
		t.Errorf("config changed by failed calls:\n%s", out)
	}

	// A config file is read strictly and must be private.
	good, _ := os.ReadFile(path)
	for _, tc := range []struct {
		name string
		data string
		mode os.FileMode
		want string
	}{
		{"unknown field", string(good) + "extra: 1\n", 0o600, `unknown field "extra"`},
		{"readable by others", string(good), 0o644, "permissions 0644 are too open"},
		{"not yaml", "cloud: [local\n", 0o600, "config " + path},
		{"bad value", strings.Replace(string(good), "cloud: local", "cloud: moon", 1), 0o600, `cloud "moon" is unknown`},
		{"too large", string(good) + "#" + strings.Repeat("x", 70<<10) + "\n", 0o600, "larger than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := os.WriteFile(path, []byte(tc.data), tc.mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, tc.mode); err != nil {
				t.Fatal(err)
			}
			r := c.podid("identity", "list")
			if r.code != 1 || !strings.Contains(r.stderr, tc.want) {
				t.Fatalf("exit %d, stderr %q; want 1 and %q", r.code, r.stderr, tc.want)
			}
		})
	}
}

func TestIdentity(t *testing.T) {
	c := newCLI(t, "", nil)
	out := c.ok("identity", "create", "web", "--tag", "team=shop")
	if !strings.Contains(out, "web") || !strings.Contains(out, "CLIENT-ID") {
		t.Fatalf("identity create:\n%s", out)
	}
	var id cli.Identity
	if err := json.Unmarshal([]byte(c.ok("identity", "show", "web", "-o", "json")), &id); err != nil {
		t.Fatal(err)
	}
	if id.Name != "web" || id.ResourceGroup != "rg" || id.Location != "westeurope" || id.TenantID != c.sts.TenantID || id.Tags["team"] != "shop" {
		t.Errorf("identity show = %+v", id)
	}
	// The identity exists at the sts, with the client id the CLI printed.
	if p, err := c.sts.Principal(id.ClientID); err != nil || !strings.EqualFold(p.ResourceID, id.ID) {
		t.Errorf("sts has %+v, %v; want resource id %s", p, err, id.ID)
	}
	// create is idempotent: same ids.
	var again cli.Identity
	_ = json.Unmarshal([]byte(c.ok("identity", "create", "web", "-o", "json")), &again)
	if again.ClientID != id.ClientID {
		t.Errorf("re-create changed the client id: %s → %s", id.ClientID, again.ClientID)
	}
	c.ok("identity", "create", "api", "-g", "other", "-l", "northeurope")
	var ids []cli.Identity
	_ = json.Unmarshal([]byte(c.ok("identity", "list", "-o", "json")), &ids)
	if len(ids) != 1 || ids[0].Name != "web" {
		t.Errorf("list in rg = %+v", ids)
	}
	if out := c.ok("identity", "list", "--all", "-o", "yaml"); !strings.Contains(out, "name: api") || !strings.Contains(out, "name: web") {
		t.Errorf("list --all:\n%s", out)
	}
	c.ok("identity", "delete", "web")

	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"deleted", []string{"identity", "show", "web"}, "identity web in resource group rg not found"},
		{"malformed name", []string{"identity", "create", "a"}, `identity name "a" must be 3-128`},
		{"name with slash", []string{"identity", "show", "../x"}, "must be 3-128"},
		{"bad subscription", []string{"identity", "list", "--subscription", "nope"}, `subscription "nope" is not a GUID`},
		{"bad resource group", []string{"identity", "list", "-g", "a/b"}, `resource group "a/b"`},
		{"bad tag", []string{"identity", "create", "web2", "--tag", "novalue"}, `--tag "novalue"`},
		{"unknown flag", []string{"identity", "list", "--frobnicate"}, "unknown flag"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := c.podid(tc.args...)
			if r.code == 0 || !strings.Contains(r.stderr, tc.want) {
				t.Fatalf("exit %d, stderr %q; want non-zero and %q", r.code, r.stderr, tc.want)
			}
			if lines := strings.Count(strings.TrimSpace(r.stderr), "\n"); lines != 0 {
				t.Errorf("stderr has %d lines: %q", lines+1, r.stderr)
			}
		})
	}
	// An unknown flag is a usage error.
	if r := c.podid("identity", "list", "--frobnicate"); r.code != 2 {
		t.Errorf("unknown flag: exit %d, want 2", r.code)
	}
}

func TestUnreachableEndpoint(t *testing.T) {
	c := newCLI(t, "", nil)
	c.sts.Stop()
	r := c.podid("identity", "list")
	if r.code != 1 || !strings.Contains(r.stderr, "connect") || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
		t.Fatalf("exit %d, stderr %q; want 1 and one line about the connection", r.code, r.stderr)
	}
}

func TestWrongSecret(t *testing.T) {
	c := newCLI(t, "", nil)
	secret := ststest.WriteFile(t, "wrong", []byte("not-the-secret"))
	c.ok("config", "set-cloud", "local", "--authority", c.sts.URL, "--ca-file", c.sts.CAFile, "--tenant-id", c.sts.TenantID,
		"--client-id", ststest.AdminClientID, "--client-secret-file", secret, "--subscription", ststest.SubscriptionID, "-g", "rg")
	r := c.podid("identity", "list")
	if r.code != 1 || !strings.Contains(r.stderr, "AADSTS7000215: the client secret is wrong") {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestFederatedCredentialLimit(t *testing.T) {
	c := newCLI(t, "", nil)
	c.ok("identity", "create", "web")
	issuer := "https://issuer.podid.test"
	for i := range cli.MaxFederatedCredentials {
		c.ok("fic", "create", "--identity", "web", "--issuer", issuer, "--service-account", fmt.Sprintf("ns%d/sa", i))
	}
	// Repeating one is a no-op, even at the limit.
	c.ok("fic", "create", "--identity", "web", "--issuer", issuer, "--service-account", "ns3/sa")
	var fs []cli.FederatedCredential
	_ = json.Unmarshal([]byte(c.ok("fic", "list", "--identity", "web", "-o", "json")), &fs)
	if len(fs) != cli.MaxFederatedCredentials || fs[0].Audiences[0] != cli.ExchangeAudience || !strings.HasPrefix(fs[0].Subject, "system:serviceaccount:ns") {
		t.Fatalf("list: %d credentials, first %+v", len(fs), fs[0])
	}
	r := c.podid("federated-credential", "create", "--identity", "web", "--issuer", issuer, "--service-account", "ns20/sa")
	if r.code != 1 || !strings.Contains(r.stderr, "identity web already has 20 federated credentials, Entra's limit") {
		t.Fatalf("21st: exit %d, stderr %q", r.code, r.stderr)
	}
	c.ok("fic", "delete", "kubernetes-ns0-sa", "--identity", "web")
	c.ok("fic", "create", "--identity", "web", "--issuer", issuer, "--service-account", "ns20/sa")

	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no identity", []string{"fic", "list"}, "--identity is required"},
		{"bad service account", []string{"fic", "create", "--identity", "web", "--issuer", issuer, "--service-account", "justname"}, "want NAMESPACE/NAME"},
		{"bad namespace", []string{"fic", "create", "--identity", "web", "--issuer", issuer, "--service-account", "Bad_NS/sa"}, "namespace"},
		{"http issuer", []string{"fic", "create", "--identity", "web", "--issuer", "http://issuer", "--service-account", "a/b"}, "must be an https URL"},
		{"bad name", []string{"fic", "create", "x", "--identity", "web", "--issuer", issuer, "--service-account", "a/b"}, `name "x"`},
		{"unknown identity", []string{"fic", "list", "--identity", "nobody"}, "federated credentials of identity nobody not found"},
		{"no cluster for issuer", []string{"fic", "create", "--identity", "web", "--service-account", "a/b"}, "kubeconfig"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := c.podid(tc.args...)
			if r.code == 0 || !strings.Contains(r.stderr, tc.want) {
				t.Fatalf("exit %d, stderr %q; want non-zero and %q", r.code, r.stderr, tc.want)
			}
		})
	}
}

// TestRoleAssignment runs the binary's role-assignment verbs against the
// local sts (through the real armauthorization client, as against Azure).
func TestRoleAssignment(t *testing.T) {
	c := newCLI(t, "", nil)
	var id cli.Identity
	_ = json.Unmarshal([]byte(c.ok("identity", "create", "kv-reader", "-o", "json")), &id)
	rg := "/subscriptions/" + ststest.SubscriptionID + "/resourceGroups/rg"
	vault := rg + "/providers/Microsoft.KeyVault/vaults/kv1"
	// Seed 003: az role assignment create --role "Key Vault Administrator" --scope <vault>.
	var ra cli.RoleAssignment
	r := c.podid("role-assignment", "create", "--assignee", "kv-reader", "--role", "Key Vault Administrator", "--scope", vault, "-o", "json")
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &ra) != nil {
		t.Fatalf("create: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if ra.PrincipalID != id.PrincipalID || ra.Scope != vault || ra.RoleDefinitionName != "Key Vault Administrator" ||
		!strings.HasSuffix(ra.RoleDefinitionID, "/roleDefinitions/00482a5a-887f-4fb3-b363-3b7fe8e74483") || ra.ID != vault+"/providers/Microsoft.Authorization/roleAssignments/"+ra.Name {
		t.Fatalf("create = %+v", ra)
	}
	// What the sts's data planes will ask now says yes.
	if ok, err := c.sts.HasDataAction(c.sts.TenantID, id.PrincipalID, "Microsoft.KeyVault/vaults/secrets/getSecret/action", vault); !ok || err != nil {
		t.Errorf("HasDataAction = %v, %v", ok, err)
	}
	// Idempotent: the same grant again is reported, not duplicated; by client id and by GUID role too.
	for _, args := range [][]string{
		{"--assignee", "kv-reader", "--role", "Key Vault Administrator"},
		{"--assignee", id.ClientID, "--role", "key vault administrator"},
		{"--assignee-object-id", id.PrincipalID, "--role", "00482a5a-887f-4fb3-b363-3b7fe8e74483"},
	} {
		r := c.podid(append([]string{"role-assignment", "create", "--scope", vault, "-o", "json"}, args...)...)
		var again cli.RoleAssignment
		if r.code != 0 || json.Unmarshal([]byte(r.stdout), &again) != nil || again.Name != ra.Name || !strings.Contains(r.stderr, "already grants") {
			t.Errorf("create %v again: exit %d, %s, %q", args, r.code, r.stdout, r.stderr)
		}
	}
	// Default scope: the configured resource group.
	out := c.ok("role-assignment", "create", "--assignee", "kv-reader", "--role", "Storage Queue Data Contributor")
	if !strings.Contains(out, "Storage Queue Data Contributor") || !strings.Contains(out, rg+"\n") || !strings.Contains(out, "PRINCIPAL-ID") {
		t.Errorf("create at the resource group:\n%s", out)
	}
	list := func(args ...string) []cli.RoleAssignment {
		t.Helper()
		var ras []cli.RoleAssignment
		out := c.ok(append([]string{"role-assignment", "list", "-o", "json"}, args...)...)
		if err := json.Unmarshal([]byte(out), &ras); err != nil {
			t.Fatalf("list %v: %v\n%s", args, err, out)
		}
		return ras
	}
	if ras := list("--assignee", "kv-reader"); len(ras) != 2 {
		t.Errorf("list at the resource group (and below) = %+v", ras)
	}
	if ras := list("--assignee", "kv-reader", "--scope", vault); len(ras) != 2 {
		t.Errorf("list at the vault (and inherited) = %+v", ras)
	}
	if ras := list("--assignee", "kv-reader", "--role", "Key Vault Administrator"); len(ras) != 1 || ras[0].Name != ra.Name {
		t.Errorf("list --role = %+v", ras)
	}
	// The admin's Owner at the tenant root is inherited everywhere.
	if ras := list("--role", "Owner"); len(ras) != 1 || ras[0].Scope != "/" {
		t.Errorf("list --role Owner = %+v", ras)
	}
	if out := c.ok("role-assignment", "list", "-o", "yaml"); !strings.Contains(out, "roleDefinitionName: Key Vault Administrator") {
		t.Errorf("list -o yaml:\n%s", out)
	}
	// Delete by name at a scope, by id, by assignee; deleting again says so.
	if out := c.ok("role-assignment", "delete", ra.Name, "--scope", vault); !strings.Contains(out, "deleted") {
		t.Errorf("delete by name: %s", out)
	}
	if out := c.ok("role-assignment", "delete", ra.ID); !strings.Contains(out, "does not exist") {
		t.Errorf("delete again by id: %s", out)
	}
	if out := c.ok("role-assignment", "delete", "--assignee", "kv-reader", "--role", "Storage Queue Data Contributor"); !strings.Contains(out, "deleted") {
		t.Errorf("delete by assignee: %s", out)
	}
	if ras := list("--assignee", "kv-reader"); len(ras) != 0 {
		t.Errorf("after delete: %+v", ras)
	}

	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"URL scope", []string{"create", "--assignee", "kv-reader", "--role", "Reader", "--scope", "https://storage.azure.com"}, `--scope "https://storage.azure.com" is a URL, not an ARM scope: an ARM scope is /subscriptions/`},
		{"malformed scope", []string{"create", "--assignee", "kv-reader", "--role", "Reader", "--scope", "/subscriptions/nope"}, "--scope: invalid scope"},
		{"no role", []string{"create", "--assignee", "kv-reader"}, "--role and --assignee (or --assignee-object-id) are required"},
		{"unknown role", []string{"create", "--assignee", "kv-reader", "--role", "Key Vault Janitor"}, `role "Key Vault Janitor" not found at ` + rg},
		{"unknown role GUID", []string{"create", "--assignee", "kv-reader", "--role", "0b1f6471-0000-4000-8000-000000000000"}, "role definition 0b1f6471-0000-4000-8000-000000000000 not found"},
		{"unknown identity", []string{"create", "--assignee", "nobody", "--role", "Reader"}, "identity nobody in resource group rg not found"},
		{"unknown principal", []string{"create", "--assignee-object-id", "0b1f6471-0000-4000-8000-00000000dead", "--role", "Reader"}, "PrincipalNotFound"},
		{"bad name", []string{"create", "--assignee", "kv-reader", "--role", "Reader", "--name", "x"}, `--name "x" is not a GUID`},
		{"both assignees", []string{"create", "--assignee", "kv-reader", "--assignee-object-id", id.PrincipalID, "--role", "Reader"}, "exclude each other"},
		{"delete nothing named", []string{"delete"}, "give the assignment's name or id, or --assignee"},
		{"delete bad ref", []string{"delete", "kv-reader"}, "neither a role assignment name"},
		{"quote in role", []string{"list", "--role", "x' or 1 eq '1"}, "is not a role name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := c.podid(append([]string{"role-assignment"}, tc.args...)...)
			if r.code != 1 || !strings.Contains(r.stderr, tc.want) {
				t.Fatalf("exit %d, stderr %q; want 1 and %q", r.code, r.stderr, tc.want)
			}
			if strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 || strings.Contains(r.stderr, "goroutine") {
				t.Errorf("stderr is not one line: %q", r.stderr)
			}
		})
	}
}

// TestRoleAssignmentAuthorization: a principal that is not Owner or User
// Access Administrator gets ARM's AuthorizationFailed from the binary.
func TestRoleAssignmentAuthorization(t *testing.T) {
	c := newCLI(t, "", nil)
	c.ok("identity", "create", "web")
	app, _, err := c.sts.PutApplication(t.Context(), c.sts.TenantID, sts.Application{DisplayName: "contributor"})
	if err != nil {
		t.Fatal(err)
	}
	_, secret, err := c.sts.GenerateSecret(t.Context(), app.ClientID, "test", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	rg := "/subscriptions/" + ststest.SubscriptionID + "/resourceGroups/rg"
	if _, _, err := c.sts.PutAzureRoleAssignment(t.Context(), sts.AzureRoleAssignment{TenantID: c.sts.TenantID, Scope: rg, Role: "Contributor", PrincipalID: app.ObjectID}); err != nil {
		t.Fatal(err)
	}
	c.ok("config", "set-cloud", "local", "--authority", c.sts.URL, "--ca-file", c.sts.CAFile, "--tenant-id", c.sts.TenantID,
		"--client-id", app.ClientID, "--client-secret-file", ststest.WriteFile(t, "contributor", []byte(secret)), "--subscription", ststest.SubscriptionID, "-g", "rg")
	// A Contributor manages identities but cannot grant roles.
	c.ok("identity", "show", "web")
	r := c.podid("role-assignment", "create", "--assignee", "web", "--role", "Key Vault Secrets User")
	if r.code != 1 || !strings.Contains(r.stderr, "AuthorizationFailed") || !strings.Contains(r.stderr, "Microsoft.Authorization/roleAssignments/write") {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
}

// TestOnlyLocalTraffic routes every non-loopback connection the binary could
// make to a proxy that counts them: configured for podid sts, the SDK
// clients (token authority, instance discovery, ARM) never reach any other
// host.
func TestOnlyLocalTraffic(t *testing.T) {
	c := newCLI(t, "", nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			conn.Close()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	proxy := "http://" + ln.Addr().String()
	c.extraEnv = []string{"HTTPS_PROXY=" + proxy, "HTTP_PROXY=" + proxy, "https_proxy=" + proxy, "http_proxy=" + proxy}
	c.ok("identity", "create", "web")
	c.ok("identity", "list", "--all")
	c.ok("fic", "create", "--identity", "web", "--issuer", "https://issuer.podid.test", "--service-account", "shop/web")
	c.ok("fic", "list", "--identity", "web")
	c.ok("role-assignment", "create", "--assignee", "web", "--role", "Reader")
	c.ok("role-assignment", "list")
	c.ok("role-assignment", "delete", "--assignee", "web", "--role", "Reader")
	c.ok("identity", "delete", "web")
	c.ok("keyvault", "create", "kv-local")
	// The admin holds no Key Vault role: refused (403), but by the local sts.
	if r := c.podid("keyvault", "secret", "list", "--vault-name", "kv-local"); !strings.Contains(r.stderr, "Forbidden") {
		t.Errorf("secret list: exit %d %q", r.code, r.stderr)
	}
	if n := conns.Load(); n != 0 {
		t.Fatalf("%d connection(s) went to a non-loopback host", n)
	}
	// The proxy is really used for other hosts (so zero above means something).
	c.ok("config", "set-cloud", "local", "--authority", "https://sts.podid.test", "--tenant-id", ststest.TenantID,
		"--client-id", ststest.AdminClientID, "--subscription", ststest.SubscriptionID, "-g", "rg")
	c.extraEnv = append(c.extraEnv, cli.EnvClientSecret+"=x")
	if r := c.podid("identity", "list"); r.code == 0 || conns.Load() == 0 {
		t.Fatalf("a non-loopback authority did not go through the proxy: exit %d, %d connections, %q", r.code, conns.Load(), r.stderr)
	}
}

// TestRoleAssignmentOnAzure: configured for Azure, role-assignment takes
// the same path as against the sts — sign in with azidentity, then the
// authorization API — instead of refusing. A proxy that records where
// each connection was headed (and answers none) stands in for the
// internet, so nothing leaves the machine or resolves a public name.
func TestRoleAssignmentOnAzure(t *testing.T) {
	c := newCLI(t, "", nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	targets := make(chan string, 64)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			line, _ := bufio.NewReader(conn).ReadString('\n')
			select {
			case targets <- strings.TrimSpace(line):
			default:
			}
			conn.Close()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	proxy := "http://" + ln.Addr().String()
	c.extraEnv = []string{"HTTPS_PROXY=" + proxy, "HTTP_PROXY=" + proxy, "https_proxy=" + proxy, "http_proxy=" + proxy,
		"AZURE_TENANT_ID=" + ststest.TenantID, "AZURE_CLIENT_ID=" + ststest.AdminClientID, "AZURE_CLIENT_SECRET=not-a-real-secret"}
	c.ok("config", "set-cloud", "azure", "--subscription", ststest.SubscriptionID, "-g", "rg")
	r := c.podid("role-assignment", "create", "--assignee-object-id", "6d7a8300-0000-4000-8000-000000000001",
		"--role", "00482a5a-887f-4fb3-b363-3b7fe8e74483", "--scope", "/subscriptions/"+ststest.SubscriptionID+"/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv")
	if r.code != 1 || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 || strings.Contains(r.stderr, "az role assignment") {
		t.Fatalf("exit %d, stderr %q; want 1 and one line from the sign-in", r.code, r.stderr)
	}
	if !strings.Contains(r.stderr, "role definition 00482a5a-887f-4fb3-b363-3b7fe8e74483") {
		t.Errorf("stderr %q does not say which call failed", r.stderr)
	}
	ln.Close()
	<-done // the recorder has stopped: targets is complete
	var seen []string
	for len(targets) > 0 {
		seen = append(seen, <-targets)
	}
	if !slices.ContainsFunc(seen, func(l string) bool { return strings.HasPrefix(l, "CONNECT login.microsoftonline.com:443 ") }) {
		t.Errorf("connections went to %q; want Entra's login.microsoftonline.com", seen)
	}
}
