package cli

import (
	"strings"
	"testing"
)

func TestParseResourceID(t *testing.T) {
	for _, tc := range []struct {
		id         string
		sub, rg, n string
		ok         bool
	}{
		{"/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/web", "s", "rg", "web", true},
		{"/subscriptions/s/resourcegroups/rg/providers/microsoft.managedidentity/userassignedidentities/web", "s", "rg", "web", true},
		{"/subscriptions/s/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/web", "", "", "", false},
		{"/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/web/extra", "", "", "", false},
		{"subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/web", "", "", "", false},
		{"", "", "", "", false},
	} {
		sub, rg, n, ok := parseResourceID(tc.id)
		if ok != tc.ok || sub != tc.sub || rg != tc.rg || n != tc.n {
			t.Errorf("parseResourceID(%q) = %q %q %q %v", tc.id, sub, rg, n, ok)
		}
	}
}

func TestParseServiceAccount(t *testing.T) {
	for _, tc := range []struct {
		in, ns, name, err string
	}{
		{"shop/web", "shop", "web", ""},
		{"shop/web.v2", "shop", "web.v2", ""},
		{"web", "", "", "want NAMESPACE/NAME"},
		{"Shop/web", "", "", "namespace"},
		{"shop/", "", "", "name"},
		{"shop/a/b", "", "", "name"},
		{"/web", "", "", "namespace"},
	} {
		ns, name, err := parseServiceAccount(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("parseServiceAccount(%q) error %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || ns != tc.ns || name != tc.name {
			t.Errorf("parseServiceAccount(%q) = %q %q %v", tc.in, ns, name, err)
		}
	}
}

func TestDefaultFICName(t *testing.T) {
	if n := defaultFICName("shop", "web.v2"); n != "kubernetes-shop-web-v2" || !ficNameRE.MatchString(n) {
		t.Errorf("got %q", n)
	}
	long := defaultFICName(strings.Repeat("a", 63), strings.Repeat("b", 200))
	if len(long) != 120 || !ficNameRE.MatchString(long) {
		t.Errorf("long name %d chars, valid %v", len(long), ficNameRE.MatchString(long))
	}
}

func TestAADSTSError(t *testing.T) {
	for _, tc := range []struct {
		e    AADSTSError
		want string
	}{
		{AADSTSError{Code: 70021}, "AADSTS70021: no federated credential of the identity matches"},
		{AADSTSError{Code: 123, Description: "AADSTS123: something"}, "AADSTS123: something"},
		{AADSTSError{OAuthCode: "HTTP 500"}, "HTTP 500"},
	} {
		if got := tc.e.Error(); !strings.HasPrefix(got, tc.want) {
			t.Errorf("%+v: %q, want prefix %q", tc.e, got, tc.want)
		}
	}
}

func TestOneLine(t *testing.T) {
	if got := oneLine("a\n  b\tc\n"); got != "a b c" {
		t.Errorf("%q", got)
	}
	if got := oneLine(strings.Repeat("x", 400)); len(got) > 304 {
		t.Errorf("not bounded: %d", len(got))
	}
}
