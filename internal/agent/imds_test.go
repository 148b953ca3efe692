package agent

import (
	"net/http"
	"testing"
	"unicode/utf8"
)

func TestClassifyPath(t *testing.T) {
	for _, tt := range []struct {
		uri  string
		want route
	}{
		{"/metadata/identity/oauth2/token?api-version=2018-02-01", routeToken},
		{"/metadata/identity/oauth2/token/?x", routeToken},
		{"/Metadata/identity/oauth2/token", routeToken},
		{"/METADATA/identity/oauth2/token/", routeToken},
		{"/metadata/IDENTITY/oauth2/token", routeBadPath},
		{"/metadata/identity/oauth2/token//", routeBadPath},
		{"/metadata/identity/oauth2/token/extra", routeBadPath},
		{"/metadata/identity/oauth2/token%2f", routeBadPath},
		{"/metadata/identity%2Foauth2/token", routeBadPath},
		{`/metadata\identity/oauth2/token`, routeBadPath},
		{"/metadata/identity/oauth2/../oauth2/token", routeBadPath},
		{"/metadata/identity/./oauth2/token", routeBadPath},
		{"//metadata/identity/oauth2/token", routeBadPath},
		{"/metadata//identity/oauth2/token", routeBadPath},
		{"/metadata/identity/oauth2/token;x", routeBadPath},
		{"/metadata/identity", routeBadPath},
		{"/metadata", routeBadPath},
		{"http://169.254.169.254/metadata/identity/oauth2/token", routeBadPath},
		{"*", routeBadPath},
		{"/metadata/instance?api-version=2021-02-01", routeInstance},
		{"/metadata/instance/compute/location?format=text", routeInstance},
		{"/Metadata/instance/compute", routeInstance},
		{"/metadata/instancex", routeOther},
		{"/", routeOther},
		{"/healthz", routeOther},
	} {
		t.Run(tt.uri, func(t *testing.T) {
			if got, _ := classifyPath(tt.uri); got != tt.want {
				t.Fatalf("classifyPath(%q) = %v, want %v", tt.uri, got, tt.want)
			}
		})
	}
}

func TestCheckHeaders(t *testing.T) {
	for _, tt := range []struct {
		name string
		h    http.Header
		ok   bool
		desc string
	}{
		{"ok", http.Header{"Metadata": {"true"}}, true, ""},
		{"missing", http.Header{}, false, "Required metadata header not specified"},
		{"True", http.Header{"Metadata": {"True"}}, false, "Required metadata header not specified"},
		{"empty", http.Header{"Metadata": {""}}, false, "Required metadata header not specified"},
		{"twice", http.Header{"Metadata": {"true", "true"}}, false, "Required metadata header not specified"},
		{"xff", http.Header{"Metadata": {"true"}, "X-Forwarded-For": {"1.2.3.4"}}, false, ""},
		{"xff empty", http.Header{"Metadata": {"true"}, "X-Forwarded-For": {""}}, false, ""},
		{"forwarded", http.Header{"Metadata": {"true"}, "Forwarded": {"for=1.2.3.4"}}, false, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := checkHeaders(tt.h)
			if (e == nil) != tt.ok {
				t.Fatalf("checkHeaders = %v, want ok=%v", e, tt.ok)
			}
			if e != nil && (e.status != 400 || (tt.desc != "" && e.description != tt.desc)) {
				t.Fatalf("got %d %q", e.status, e.description)
			}
		})
	}
}

func TestParseQuery(t *testing.T) {
	const v = "api-version=2018-02-01&"
	for _, tt := range []struct {
		name     string
		raw      string
		ok       bool
		resource string
		sel      selector
	}{
		{"encoded", v + "resource=https%3A%2F%2Fvault.azure.net", true, "https://vault.azure.net", selector{}},
		{"raw", v + "resource=https://management.azure.com/", true, "https://management.azure.com/", selector{}},
		{"scope stripped", v + "resource=https://vault.azure.net/.default", true, "https://vault.azure.net", selector{}},
		{"encoded scope stripped", v + "resource=https%3A%2F%2Fvault.azure.net%2F.default", true, "https://vault.azure.net", selector{}},
		{"only .default", v + "resource=/.default", false, "", selector{}},
		{"guid resource", v + "resource=00000000-0000-0000-0000-000000000001", true, "00000000-0000-0000-0000-000000000001", selector{}},
		{"client_id", v + "resource=r&client_id=abc", true, "r", selector{clientID: "abc"}},
		{"object_id", v + "resource=r&object_id=abc", true, "r", selector{objectID: "abc"}},
		{"msi_res_id", v + "resource=r&msi_res_id=%2Fsubscriptions%2Fs", true, "r", selector{resourceID: "/subscriptions/s"}},
		{"mi_res_id", v + "resource=r&mi_res_id=/subscriptions/s", true, "r", selector{resourceID: "/subscriptions/s"}},
		{"two selectors", v + "resource=r&client_id=a&msi_res_id=b", false, "", selector{}},
		{"empty selector", v + "resource=r&client_id=", false, "", selector{}},
		{"missing resource", "api-version=2018-02-01", false, "", selector{}},
		{"empty resource", v + "resource=", false, "", selector{}},
		{"blank resource", v + "resource=%20", false, "", selector{}},
		{"space in resource", v + "resource=a+b", false, "", selector{}},
		{"ctl in resource", v + "resource=a%00b", false, "", selector{}},
		{"dup resource", v + "resource=a&resource=b", false, "", selector{}},
		{"dup same value", v + "resource=a&resource=a", false, "", selector{}},
		{"dup encoded key", v + "resource=a&re%73ource=b", false, "", selector{}},
		{"dup api-version", v + "api-version=2018-02-01&resource=a", false, "", selector{}},
		{"dup client_id", v + "resource=a&client_id=x&client_id=y", false, "", selector{}},
		{"missing api-version", "resource=a", false, "", selector{}},
		{"bad api-version", "api-version=latest&resource=a", false, "", selector{}},
		{"preview api-version", "api-version=2019-08-15-preview&resource=a", true, "a", selector{}},
		{"bad escape", v + "resource=%zz", false, "", selector{}},
		{"semicolon", v + "resource=a;client_id=b", false, "", selector{}},
		{"empty parts", "&&" + v + "resource=a&&", true, "a", selector{}},
		{"unknown ignored", v + "resource=a&bypass_cache=true", true, "a", selector{}},
		{"too many", v + "resource=a&a=1&b=1&c=1&d=1&e=1&f=1&g=1&h=1&i=1&j=1&k=1&l=1&m=1&n=1&o=1", false, "", selector{}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			q, e := parseQuery(tt.raw)
			if (e == nil) != tt.ok {
				t.Fatalf("parseQuery(%q) err = %v, want ok=%v", tt.raw, e, tt.ok)
			}
			if !tt.ok {
				if e.status != 400 || e.code != "invalid_request" {
					t.Fatalf("error %d %s", e.status, e.code)
				}
				return
			}
			if q.resource != tt.resource || q.sel != tt.sel {
				t.Fatalf("got %q %+v, want %q %+v", q.resource, q.sel, tt.resource, tt.sel)
			}
		})
	}
}

func FuzzParseQuery(f *testing.F) {
	for _, s := range []string{
		"api-version=2018-02-01&resource=https%3A%2F%2Fvault.azure.net",
		"api-version=2018-02-01&resource=https://management.azure.com/&client_id=x",
		"resource=a&resource=b", "%zz=1", "a;b", "&&&", "api-version=2018-02-01&resource=%2F.default",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		q, e := parseQuery(raw)
		if e != nil {
			if e.status != 400 || e.description == "" || !utf8.ValidString(e.code) {
				t.Fatalf("bad error %+v", e)
			}
			return
		}
		if q.resource == "" || len(q.resource) > maxResourceLen || q.apiVersion == "" {
			t.Fatalf("accepted invalid query %q: %+v", raw, q)
		}
		n := 0
		for _, s := range []string{q.sel.clientID, q.sel.objectID, q.sel.resourceID} {
			if s != "" {
				n++
			}
		}
		if n > 1 {
			t.Fatalf("two selectors accepted: %q", raw)
		}
		// Parsing is a pure function of its input.
		q2, e2 := parseQuery(raw)
		if e2 != nil || q2 != q {
			t.Fatal("not deterministic")
		}
	})
}
