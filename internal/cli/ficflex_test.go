package cli_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/podid/podid/internal/cli"
)

// TestFederatedCredentialNamespace: podid fic create --namespace makes a
// flexible federated credential (claimsMatchingExpression) for every
// ServiceAccount of a namespace on the sts; list shows it; repeating it
// is a no-op; bad input is refused.
func TestFederatedCredentialNamespace(t *testing.T) {
	c := newCLI(t, "", nil)
	c.ok("identity", "create", "web")
	issuer := "https://issuer.podid.test"
	var f cli.FederatedCredential
	if err := json.Unmarshal([]byte(c.ok("fic", "create", "--identity", "web", "--issuer", issuer, "--namespace", "shop", "-o", "json")), &f); err != nil {
		t.Fatal(err)
	}
	want := "claims['sub'] matches 'system:serviceaccount:shop:*'"
	if f.Name != "kubernetes-shop-all" || f.ClaimsMatchingExpression != want || f.Subject != "" {
		t.Fatalf("created %+v", f)
	}
	c.ok("fic", "create", "--identity", "web", "--issuer", issuer, "--service-account", "shop/web")
	c.ok("fic", "create", "--identity", "web", "--issuer", issuer, "--namespace", "shop") // no-op
	var fs []cli.FederatedCredential
	if err := json.Unmarshal([]byte(c.ok("fic", "list", "--identity", "web", "-o", "json")), &fs); err != nil || len(fs) != 2 {
		t.Fatalf("list: %+v %v", fs, err)
	}
	if out := c.ok("fic", "list", "--identity", "web"); !strings.Contains(out, want) || !strings.Contains(out, "system:serviceaccount:shop:web") {
		t.Errorf("list table: %s", out)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"fic", "create", "--identity", "web", "--issuer", issuer, "--namespace", "shop", "--service-account", "shop/web"}, "one of --service-account or --namespace"},
		{[]string{"fic", "create", "--identity", "web", "--issuer", issuer}, "one of --service-account or --namespace"},
		{[]string{"fic", "create", "--identity", "web", "--issuer", issuer, "--namespace", "Shop*"}, "--namespace"},
	} {
		r := c.podid(tc.args...)
		if r.code == 0 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want %q", tc.args, r.code, r.stderr, tc.want)
		}
	}
}
