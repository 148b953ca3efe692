package main

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestServing: a serving certificate is issued under the cluster CA, kept
// while it names the same hosts, and reissued when the hosts change or it
// nears its end; a directory without a CA is an error, not a new CA.
func TestServing(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	if _, err := serving(dir, "azurite", []string{"10.96.0.110"}, now); err == nil {
		t.Fatal("serving without a CA succeeded")
	}
	if err := run(dir, "node", "192.0.2.2", "10.96.0.1"); err != nil {
		t.Fatal(err)
	}
	hosts := []string{"10.96.0.110", "10.244.0.1", "*.queue.core.windows.net"}
	read := func() *x509.Certificate {
		t.Helper()
		kp, err := loadPair(dir, "azurite")
		if err != nil {
			t.Fatal(err)
		}
		return kp.Cert
	}
	steps := []struct {
		name       string
		hosts      []string
		at         time.Time
		wantIssued bool
	}{
		{"first", hosts, now, true},
		{"same hosts", []string{"*.queue.core.windows.net", "10.244.0.1", "10.96.0.110", ""}, now, false},
		{"host added", append(hosts, "azurite.podid-local.svc"), now, true},
		{"near its end", append(hosts, "azurite.podid-local.svc"), now.Add(validity - 10*24*time.Hour), true},
	}
	for _, s := range steps {
		issued, err := serving(dir, "azurite", s.hosts, s.at)
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if issued != s.wantIssued {
			t.Fatalf("%s: issued=%v, want %v", s.name, issued, s.wantIssued)
		}
	}
	c, at := read(), steps[len(steps)-1].at
	caPEM, err := os.ReadFile(filepath.Join(dir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	for _, name := range []string{"podiddemo.queue.core.windows.net", "10.96.0.110", "azurite.podid-local.svc"} {
		if _, err := c.Verify(x509.VerifyOptions{Roots: pool, DNSName: name, CurrentTime: at, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			t.Errorf("certificate does not verify for %s: %v", name, err)
		}
	}
	if _, err := c.Verify(x509.VerifyOptions{Roots: pool, DNSName: "login.microsoftonline.com", CurrentTime: at}); err == nil {
		t.Error("certificate verifies for a name it was not issued for")
	}
	if _, err := serving(dir, "../ca", hosts, now); err == nil {
		t.Error("a name with a path was accepted")
	}
}
