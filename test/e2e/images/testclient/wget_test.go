package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWget(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/missing" {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte("md=" + r.Header.Get("Metadata")))
	}))
	defer srv.Close()
	tests := []struct {
		name    string
		args    []string
		stdout  string
		wantErr string
	}{
		{"bundled -qO-", []string{"-qO-", srv.URL}, "md=", ""},
		{"timeout and header", []string{"-q", "-T", "5", "--header", "Metadata: true", "-O", "-", srv.URL}, "md=true", ""},
		{"inline forms", []string{"-T5", "--header=Metadata: x", "-qO", "-", srv.URL}, "md=x", ""},
		{"error status", []string{"-qO-", srv.URL + "/missing"}, "", "404"},
		{"unknown option", []string{"-x", srv.URL}, "", "unknown option -x"},
		{"bad timeout", []string{"-T", "0", srv.URL}, "", "positive number"},
		{"missing value", []string{"-qO"}, "", "-O needs a value"},
		{"two urls", []string{srv.URL, srv.URL}, "", "unexpected argument"},
		{"no url", []string{"-q"}, "", "usage"},
		{"bad header", []string{"--header", "nocolon", srv.URL}, "", "not 'Name: value'"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := wget(tt.args, &stdout, &stderr)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("wget(%q) error = %v, want it to contain %q", tt.args, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("wget(%q): %v", tt.args, err)
			}
			if stdout.String() != tt.stdout {
				t.Errorf("stdout = %q, want %q", stdout.String(), tt.stdout)
			}
		})
	}
	t.Run("to a file", func(t *testing.T) {
		f := filepath.Join(t.TempDir(), "out")
		var stdout, stderr bytes.Buffer
		if err := wget([]string{"-O", f, srv.URL}, &stdout, &stderr); err != nil {
			t.Fatal(err)
		}
		if b, _ := os.ReadFile(f); string(b) != "md=" || stdout.Len() != 0 {
			t.Errorf("file = %q, stdout = %q", b, stdout.String())
		}
	})
}
