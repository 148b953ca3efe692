package keyvault

import (
	"context"
	"net"
	"strings"
	"testing"
)

func TestVaultNames(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"kv1", true}, {"my-vault-01", true}, {"MyVault", true}, {strings.Repeat("a", 24), true},
		{"kv", false}, {strings.Repeat("a", 25), false}, {"1kv", false}, {"kv-", false}, {"k--v", false},
		{"kv_x", false}, {"kv.x", false}, {"", false}, {"kv x", false}, {"kév", false},
	} {
		if got := ValidVaultName(tc.name); got != tc.ok {
			t.Errorf("ValidVaultName(%q) = %v, want %v", tc.name, got, tc.ok)
		}
	}
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"a", true}, {"demo-secret-2", true}, {strings.Repeat("a", 127), true},
		{"", false}, {strings.Repeat("a", 128), false}, {"a_b", false}, {"a.b", false}, {"a/b", false}, {"ä", false},
	} {
		if got := ValidSecretName(tc.name); got != tc.ok {
			t.Errorf("ValidSecretName(%q) = %v, want %v", tc.name, got, tc.ok)
		}
	}
}

func TestVaultHost(t *testing.T) {
	h := &Handler{cfg: Config{DNSSuffix: "vault.azure.net"}}
	for _, tc := range []struct {
		host, vault string
		ok          bool
	}{
		{"kv-test.vault.azure.net", "kv-test", true},
		{"KV-Test.Vault.Azure.Net:443", "kv-test", true},
		{"kv-test.vault.azure.net.", "kv-test", true},
		{"kv-test.vault.azure.net:8443", "kv-test", true},
		{"vault.azure.net", "", false},
		{"a.b.vault.azure.net", "", false}, // one label only
		{"kv.vault.azure.net.evil.test", "", false},
		{"kv.vaultxazure.net", "", false},
		{"x.vault.azure.net", "", false}, // not a vault name
		{"127.0.0.1:8443", "", false},
		{"localhost", "", false},
		{"", "", false},
	} {
		got, ok := h.VaultName(tc.host)
		if got != tc.vault || ok != tc.ok {
			t.Errorf("VaultName(%q) = %q, %v; want %q, %v", tc.host, got, ok, tc.vault, tc.ok)
		}
	}
}

func TestDNSSuffix(t *testing.T) {
	for _, tc := range []struct {
		s  string
		ok bool
	}{
		{"vault.azure.net", true}, {"vault.podid.test", true}, {"Vault.Local", true},
		{"vault", false}, {"", false}, {"-vault.test", false}, {"vault..test", false}, {"*.vault.test", false}, {"vault.test/x", false},
	} {
		if err := ValidDNSSuffix(tc.s); (err == nil) != tc.ok {
			t.Errorf("ValidDNSSuffix(%q) = %v, want ok=%v", tc.s, err, tc.ok)
		}
	}
}

// TestDialer: only {vault}.{suffix} is redirected; other names are dialed
// as asked (here: refused by a closed port, not redirected to target).
func TestDialer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan struct{}, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- struct{}{}
			c.Close()
		}
	}()
	dial := Dialer("vault.azure.net", ln.Addr().String())
	c, err := dial(context.Background(), "tcp", "kv.vault.azure.net:443")
	if err != nil {
		t.Fatalf("vault host not redirected: %v", err)
	}
	c.Close()
	<-accepted
	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := closed.Addr().String()
	closed.Close()
	if c, err := dial(context.Background(), "tcp", addr); err == nil {
		c.Close()
		t.Fatalf("%s was redirected", addr)
	}
}

// TestParseStrict: request bodies are one JSON object of known fields.
func TestParseStrict(t *testing.T) {
	for _, tc := range []struct {
		body string
		ok   bool
	}{
		{`{"value":"v"}`, true},
		{`{"value":"v","contentType":"text/plain","tags":{"a":"b"},"attributes":{"enabled":true,"nbf":1,"exp":2}}`, true},
		{`{"value":"v","attributes":{"created":1,"updated":2,"recoveryLevel":"Recoverable","recoverableDays":90}}`, true}, // echoed read-only attributes
		{` {"value":"v"} `, true},
		{`{"value":"v","extra":1}`, false},
		{`{"value":"v","attributes":{"bogus":true}}`, false},
		{`{"value":"v"}{"value":"w"}`, false},
		{`{"value":"v"} x`, false},
		{`{"value":1}`, false},
		{`{"value":"v","attributes":{"exp":1.5}}`, false},
		{`[]`, false},
		{``, false},
		{"   ", false},
		{"{\"value\":\"\xff\"}", false},
		{`{"value":"` + strings.Repeat("x", MaxBodyBytes) + `"}`, false},
	} {
		var b setBody
		if e := parseStrict([]byte(tc.body), &b); (e == nil) != tc.ok {
			t.Errorf("parseStrict(%.60q) = %v, want ok=%v", tc.body, e, tc.ok)
		} else if e != nil && (e.status != 400 || e.code != "BadParameter") {
			t.Errorf("parseStrict(%.60q) = %d %s, want 400 BadParameter", tc.body, e.status, e.code)
		}
	}
}

func TestCheckCommon(t *testing.T) {
	i := func(v int64) *int64 { return &v }
	s := func(v string) *string { return &v }
	tags := func(n int) *map[string]string {
		m := map[string]string{}
		for k := range n {
			m[strings.Repeat("k", k+1)] = "v"
		}
		return &m
	}
	for _, tc := range []struct {
		name string
		ct   *string
		tags *map[string]string
		a    *attributesIn
		ok   bool
	}{
		{"empty", nil, nil, nil, true},
		{"15 tags", nil, tags(MaxTags), nil, true},
		{"16 tags", nil, tags(MaxTags + 1), nil, false},
		{"empty tag name", nil, &map[string]string{"": "v"}, nil, false},
		{"long tag value", nil, &map[string]string{"k": strings.Repeat("v", MaxTagValue+1)}, nil, false},
		{"long content type", s(strings.Repeat("c", MaxContentType+1)), nil, nil, false},
		{"exp before nbf", nil, nil, &attributesIn{NotBefore: i(10), Expires: i(5)}, false},
		{"negative time", nil, nil, &attributesIn{Expires: i(-1)}, false},
		{"year 10000", nil, nil, &attributesIn{Expires: i(253402300800)}, false},
	} {
		if e := checkCommon(tc.ct, tc.tags, tc.a); (e == nil) != tc.ok {
			t.Errorf("%s: %v, want ok=%v", tc.name, e, tc.ok)
		}
	}
}

// FuzzParseSetBody: any input is either refused with BadParameter or
// yields a body whose decoded value is bounded by the body's size.
func FuzzParseSetBody(f *testing.F) {
	for _, s := range []string{`{"value":"v"}`, `{"value":"v","tags":{"a":"b"},"attributes":{"enabled":false,"exp":1}}`, `{`, `{"value":"\u0000"}`, `null`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var b setBody
		e := parseStrict(body, &b)
		if e != nil {
			if e.status != 400 || e.code != "BadParameter" {
				t.Fatalf("refusal %d %s", e.status, e.code)
			}
			return
		}
		if b.Value != nil && len(*b.Value) > len(body) {
			t.Fatalf("value longer than the body")
		}
		_ = checkCommon(b.ContentType, b.Tags, b.Attributes)
	})
}
