package agent

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestAuthorityProbe(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusNotFound) // any answer proves reach and trust
	}))
	defer srv.Close()
	closed := httptest.NewTLSServer(http.NotFoundHandler())
	closedURL := closed.URL
	closed.Close()

	tests := []struct {
		name    string
		url     string
		client  *http.Client
		wantErr string
	}{
		{"trusted and reachable", srv.URL, srv.Client(), ""},
		{"CA not trusted", srv.URL, &http.Client{}, "certificate"},
		{"unreachable", closedURL, srv.Client(), "connection refused"},
		{"malformed authority", "https://%zz", srv.Client(), "invalid URL escape"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newAuthorityProbe(tt.url, tt.client)
			if err := p.Ready(); err == nil || !strings.Contains(err.Error(), "not probed yet") {
				t.Fatalf("before the first probe Ready() = %v, want not probed yet", err)
			}
			p.check(context.Background())
			err := p.Ready()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Ready() = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "not reachable or not trusted") {
				t.Fatalf("Ready() = %v, want an error naming %q", err, tt.wantErr)
			}
		})
	}
}
