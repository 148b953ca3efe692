package sts_test

import (
	"encoding/json"
	"io"
	"mime"
	"net/http"
	"strings"
	"testing"

	"github.com/podid/podid/internal/sts/ststest"
)

// TestErrorsAreJSON: whatever path or method a client gets wrong, the answer
// is a JSON error document, never text/plain.
func TestErrorsAreJSON(t *testing.T) {
	srv := ststest.Start(t, ststest.Options{})
	tid := srv.TenantID
	for _, tt := range []struct {
		method, path string
		status       int
	}{
		{"GET", "/", 404},
		{"GET", "/nope", 404},
		{"GET", "/" + tid + "/nope", 404},
		{"GET", "/" + tid + "/oauth2/v2.0/token", 405},
		{"POST", "/" + tid + "/v2.0/.well-known/openid-configuration", 405},
		{"DELETE", "/common/discovery/keys", 405},
		{"GET", "/" + tid + "/oauth2%2Fv2.0/token", 400},
		{"GET", "//" + tid + "/oauth2/v2.0/token", 400},
		{"GET", "/" + tid + "/oauth2/../v2.0/.well-known/openid-configuration", 400},
		{"GET", "/podid/v1/tenants/" + tid + "/./applications", 400},
		{"GET", "/clusters/unknown/.well-known/openid-configuration", 404},
		{"POST", "/clusters/unknown/openid/v1/jwks", 405},
		{"GET", "/podid/v2/x", 404},
		{"GET", "/00000000-0000-0000-0000-000000000000/v2.0/.well-known/openid-configuration", 400},
	} {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, srv.URL+tt.path, nil)
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			raw, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.status {
				t.Errorf("status %d, want %d: %s", resp.StatusCode, tt.status, raw)
			}
			if resp.StatusCode == http.StatusMethodNotAllowed && resp.Header.Get("Allow") == "" {
				t.Errorf("405 without Allow")
			}
			mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
			var m map[string]any
			if mt != "application/json" || json.Unmarshal(raw, &m) != nil || m["error"] == nil {
				t.Errorf("not a JSON error (%s): %q", resp.Header.Get("Content-Type"), strings.TrimSpace(string(raw)))
			}
		})
	}
}
