package broker

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestParseTokenRequest(t *testing.T) {
	const cid = "6e3c4f1a-7d2b-4c88-9a51-0d3e5f7a9b21"
	cases := []struct {
		name, ct, body string
		wantRes        string
		wantErr        string
	}{
		{"ok", "application/json", `{"clientID":"` + cid + `","resource":"https://vault.azure.net/.default"}`, "https://vault.azure.net", ""},
		{"wrong content type", "text/plain", `{}`, "", "Content-Type"},
		{"unknown field", "application/json", `{"clientID":"` + cid + `","resource":"r","x":1}`, "", "unknown field"},
		{"two objects", "application/json", `{"clientID":"` + cid + `","resource":"r"} {}`, "", "after the JSON"},
		{"not json", "application/json", `clientID=x`, "", "not a token request"},
		{"guid without dashes", "application/json", `{"clientID":"6e3c4f1a7d2b4c889a510d3e5f7a9b21","resource":"r"}`, "", "GUID"},
		{"no resource", "application/json", `{"clientID":"` + cid + `"}`, "", "resource is required"},
		{"control char", "application/json", `{"clientID":"` + cid + `","resource":"a\u0001"}`, "", "control"},
		{"long resource", "application/json", `{"clientID":"` + cid + `","resource":"` + strings.Repeat("a", 1100) + `"}`, "", "longer"},
		{"huge", "application/json", strings.Repeat(" ", maxBody+1), "", "larger"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, Path, strings.NewReader(c.body))
			r.Header.Set("Content-Type", c.ct)
			got, err := parseTokenRequest(r)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("err %v, want %q", err, c.wantErr)
				}
				return
			}
			if err != nil || got.Resource != c.wantRes || got.ClientID != cid {
				t.Fatalf("got %+v, %v", got, err)
			}
		})
	}
}

func TestBearer(t *testing.T) {
	cases := []struct {
		name    string
		values  []string
		wantErr bool
	}{
		{"ok", []string{"Bearer aa.bb.cc"}, false},
		{"none", nil, true},
		{"two", []string{"Bearer a.b.c", "Bearer a.b.c"}, true},
		{"basic", []string{"Basic a.b.c"}, true},
		{"not jwt", []string{"Bearer abc"}, true},
		{"bad chars", []string{"Bearer a.b.c d"}, true},
		{"too long", []string{"Bearer a.b." + strings.Repeat("c", maxToken)}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := http.Header{}
			for _, v := range c.values {
				h.Add("Authorization", v)
			}
			_, err := bearer(h)
			if (err != nil) != c.wantErr {
				t.Fatalf("err %v, want error %v", err, c.wantErr)
			}
		})
	}
}

func TestAgentTokenHeader(t *testing.T) {
	cases := []struct {
		name    string
		values  []string
		wantErr string
	}{
		{"ok", []string{"aa.bb.cc"}, ""},
		{"none", nil, "exactly one"},
		{"empty", []string{""}, "exactly one"},
		{"two", []string{"a.b.c", "a.b.c"}, "exactly one"},
		{"bearer prefix", []string{"Bearer a.b.c"}, "not a compact JWT"},
		{"not jwt", []string{"abc"}, "not a compact JWT"},
		{"too long", []string{"a.b." + strings.Repeat("c", maxToken)}, "longer"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := http.Header{}
			for _, v := range c.values {
				h.Add(AgentHeader, v)
			}
			got, err := agentToken(h)
			if c.wantErr == "" {
				if err != nil || got != c.values[0] {
					t.Fatalf("got %q, %v", got, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Fatalf("err %v, want %q", err, c.wantErr)
			}
		})
	}
}
