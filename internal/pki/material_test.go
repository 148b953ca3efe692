package pki_test

import (
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/podid/podid/internal/pki"
)

type blobs map[string][]byte

var errMissing = errors.New("missing")

func (b blobs) Blob(n string) ([]byte, error) {
	if v, ok := b[n]; ok {
		return v, nil
	}
	return nil, errMissing
}
func (b blobs) PutBlob(n string, v []byte) error { b[n] = v; return nil }

func isMissing(err error) bool { return errors.Is(err, errMissing) }

func TestEnsure(t *testing.T) {
	now := time.Now()
	b := blobs{}
	first, err := pki.Ensure(b, isMissing, []string{"localhost", "127.0.0.1"}, now)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name        string
		hosts       []string
		at          time.Time
		sameServing bool
	}{
		{"same hosts reuse everything", []string{"127.0.0.1", "localhost"}, now, true},
		{"new host reissues serving cert", []string{"localhost", "127.0.0.1", "sts.podid.local"}, now, false},
		{"near expiry reissues serving cert", []string{"localhost", "127.0.0.1", "sts.podid.local"}, now.Add(340 * 24 * time.Hour), false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := b["serving"]
			m, err := pki.Ensure(b, isMissing, tt.hosts, tt.at)
			if err != nil {
				t.Fatal(err)
			}
			if !m.CA.Equal(first.CA) {
				t.Fatal("CA changed")
			}
			if same := string(before) == string(b["serving"]); same != tt.sameServing {
				t.Fatalf("serving reused = %v, want %v", same, tt.sameServing)
			}
			if _, err := m.Serving.Leaf.Verify(x509.VerifyOptions{Roots: m.Pool(), DNSName: tt.hosts[0], CurrentTime: tt.at}); err != nil {
				t.Fatalf("serving cert does not verify: %v", err)
			}
		})
	}
	path := filepath.Join(t.TempDir(), "sub", "ca.pem")
	if err := first.WriteCAFile(path); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(path)
	if string(raw) != string(first.CAPEM()) {
		t.Fatal("CA file content differs")
	}
}
