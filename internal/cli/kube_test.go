package cli_test

import (
	"encoding/json"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podid/podid/internal/cli"
	"github.com/podid/podid/internal/sts/ststest"
	"github.com/podid/podid/internal/workloadidentity"
)

func TestFederatedCredentialIssuerFromCluster(t *testing.T) {
	c := startCluster(t)
	c.ok("identity", "create", "web")
	var f cli.FederatedCredential
	if err := json.Unmarshal([]byte(c.ok("fic", "create", "--identity", "web", "--service-account", "shop/web", "-o", "json")), &f); err != nil {
		t.Fatal(err)
	}
	if f.Issuer != c.issuer || f.Subject != "system:serviceaccount:shop:web" || f.Name != "kubernetes-shop-web" {
		t.Fatalf("created %+v; want issuer %s", f, c.issuer)
	}
}

func TestServiceAccount(t *testing.T) {
	c := startCluster(t)
	ns := env.Namespace(t)
	var id cli.Identity
	_ = json.Unmarshal([]byte(c.ok("identity", "create", "orders", "-o", "json")), &id)
	vault := "/subscriptions/" + ststest.SubscriptionID + "/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/orders"
	args := []string{"serviceaccount", "create", "-n", ns, "--name", "orders", "--identity", "orders",
		"--role", "Key Vault Administrator", "--role-scope", vault, "--service-account-token-expiration", "7200"}
	out := c.ok(args...)
	for _, want := range []string{
		"[serviceaccount] created ServiceAccount " + ns + "/orders",
		"[federated-identity-credential] created kubernetes-" + ns + "-orders on identity orders (issuer " + c.issuer,
		`[role-assignment] "Key Vault Administrator" at ` + vault + ` granted to orders`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	sa, err := c.cs.CoreV1().ServiceAccounts(ns).Get(t.Context(), "orders", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if sa.Annotations[workloadidentity.ClientIDAnnotation] != id.ClientID || sa.Annotations[workloadidentity.TenantIDAnnotation] != c.sts.TenantID ||
		sa.Annotations[workloadidentity.TokenExpirationAnnotation] != "7200" || sa.Labels[workloadidentity.UseLabel] != "true" {
		t.Errorf("ServiceAccount = %v %v", sa.Annotations, sa.Labels)
	}
	// Idempotent: a second run changes nothing.
	out = c.ok(args...)
	if !strings.Contains(out, "ServiceAccount "+ns+"/orders unchanged") || !strings.Contains(out, "already trusts system:serviceaccount:"+ns+":orders") ||
		!strings.Contains(out, `[role-assignment] "Key Vault Administrator" at `+vault+` already granted to orders`) {
		t.Errorf("second run:\n%s", out)
	}
	var fs []cli.FederatedCredential
	_ = json.Unmarshal([]byte(c.ok("fic", "list", "--identity", "orders", "-o", "json")), &fs)
	if len(fs) != 1 {
		t.Errorf("credentials after two runs: %+v", fs)
	}
	var ras []cli.RoleAssignment
	_ = json.Unmarshal([]byte(c.ok("role-assignment", "list", "--assignee", "orders", "-o", "json")), &ras)
	if len(ras) != 1 {
		t.Errorf("role assignments after two runs: %+v", ras)
	}
	// An existing ServiceAccount keeps its own annotations; ours are merged.
	sa.Annotations["team"] = "shop"
	sa.Annotations[workloadidentity.ClientIDAnnotation] = "00000000-0000-4000-8000-000000000000"
	if _, err := c.cs.CoreV1().ServiceAccounts(ns).Update(t.Context(), sa, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	out = c.ok("sa", "create", "-n", ns, "--name", "orders", "--identity", "orders", "--skip-phases", "federated-identity-credential")
	if !strings.Contains(out, "updated ServiceAccount") || strings.Contains(out, "[federated-identity-credential]") {
		t.Errorf("skip-phases run:\n%s", out)
	}
	sa, _ = c.cs.CoreV1().ServiceAccounts(ns).Get(t.Context(), "orders", metav1.GetOptions{})
	if sa.Annotations["team"] != "shop" || sa.Annotations[workloadidentity.ClientIDAnnotation] != id.ClientID {
		t.Errorf("merged annotations = %v", sa.Annotations)
	}

	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"unknown phase", []string{"sa", "create", "-n", ns, "--name", "x", "--identity", "orders", "--skip-phases", "sa"}, `unknown phase "sa"`},
		{"no name", []string{"sa", "create", "-n", ns, "--identity", "orders"}, "--name is required"},
		{"bad name", []string{"sa", "create", "-n", ns, "--name", "Bad_Name", "--identity", "orders"}, "name"},
		{"unknown identity", []string{"sa", "create", "-n", ns, "--name", "x", "--identity", "nobody"}, "identity nobody in resource group rg not found"},
		{"bad expiration", []string{"sa", "create", "-n", ns, "--name", "x", "--identity", "orders", "--service-account-token-expiration", "60"}, "must be an integer number of seconds in [3600, 86400]"},
		{"scope without role", []string{"sa", "create", "-n", ns, "--name", "x", "--identity", "orders", "--role-scope", vault}, "--role-scope needs --role"},
		{"URL role scope", []string{"sa", "create", "-n", ns, "--name", "x", "--identity", "orders", "--role", "Reader", "--role-scope", "https://vault.azure.net"}, "is a URL, not an ARM scope"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := c.podid(tc.args...)
			if r.code == 0 || !strings.Contains(r.stderr, tc.want) {
				t.Fatalf("exit %d, stderr %q; want non-zero and %q", r.code, r.stderr, tc.want)
			}
		})
	}

	out = c.ok("sa", "delete", "-n", ns, "--name", "orders", "--identity", "orders", "--role", "Key Vault Administrator", "--role-scope", vault)
	for _, want := range []string{"[role-assignment] deleted 1 role assignment(s)", "[federated-identity-credential] deleted", "[serviceaccount] deleted ServiceAccount"} {
		if !strings.Contains(out, want) {
			t.Errorf("delete output lacks %q:\n%s", want, out)
		}
	}
	if _, err := c.cs.CoreV1().ServiceAccounts(ns).Get(t.Context(), "orders", metav1.GetOptions{}); err == nil {
		t.Error("ServiceAccount still exists")
	}
	fs = nil
	_ = json.Unmarshal([]byte(c.ok("fic", "list", "--identity", "orders", "-o", "json")), &fs)
	if len(fs) != 0 {
		t.Errorf("credentials after delete: %+v", fs)
	}
	// Deleting again is fine.
	if out := c.ok("sa", "delete", "-n", ns, "--name", "orders", "--identity", "orders"); !strings.Contains(out, "already absent") {
		t.Errorf("second delete:\n%s", out)
	}
}

var _ = corev1.Pod{}
