package cli_test

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/podid/podid/internal/cli"
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

func TestRoleAssignment(t *testing.T) {
	c := newCLI(t, "", nil)
	var id cli.Identity
	_ = json.Unmarshal([]byte(c.ok("identity", "create", "kv-reader", "-o", "json")), &id)
	var ra cli.RoleAssignment
	out := c.ok("role-assignment", "create", "--assignee", "kv-reader", "--role", "Key Vault Administrator", "--scope", "https://vault.azure.net", "-o", "json")
	if err := json.Unmarshal([]byte(out), &ra); err != nil || ra.Principal != id.ClientID || ra.ID == "" {
		t.Fatalf("create: %v %+v", err, ra)
	}
	var ras []cli.RoleAssignment
	_ = json.Unmarshal([]byte(c.ok("role-assignment", "list", "--assignee", id.ClientID, "-o", "json")), &ras)
	if len(ras) != 1 || ras[0].Role != "Key Vault Administrator" || ras[0].Scope != "https://vault.azure.net" {
		t.Fatalf("list = %+v", ras)
	}
	c.ok("role-assignment", "delete", ra.ID)
	ras = nil
	_ = json.Unmarshal([]byte(c.ok("role-assignment", "list", "--assignee", "kv-reader", "-o", "json")), &ras)
	if len(ras) != 0 {
		t.Fatalf("after delete: %+v", ras)
	}
	if r := c.podid("role-assignment", "create", "--assignee", "kv-reader", "--role", "Reader"); r.code == 0 || !strings.Contains(r.stderr, "--scope are required") {
		t.Errorf("missing scope: %d %q", r.code, r.stderr)
	}
	// Against Azure the CLI says what to use instead (and contacts nothing).
	c.ok("config", "set-cloud", "azure", "--subscription", ststest.SubscriptionID)
	r := c.podid("role-assignment", "create", "--assignee", id.ClientID, "--role", "Reader", "--scope", "/subscriptions/x")
	if r.code != 1 || !strings.Contains(r.stderr, "az role assignment create") {
		t.Errorf("azure: %d %q", r.code, r.stderr)
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
	c.ok("role-assignment", "create", "--assignee", "web", "--role", "Reader", "--scope", "https://vault.azure.net")
	c.ok("role-assignment", "list")
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
