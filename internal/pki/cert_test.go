package pki_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"strings"
	"testing"
	"time"

	"github.com/podid/podid/internal/pki"
)

func TestIssueServing(t *testing.T) {
	now := time.Now()
	ca, err := pki.NewCA("test CA", now.Add(-time.Hour), now.Add(48*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if !ca.Cert.IsCA || !ca.Cert.MaxPathLenZero || ca.Cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Fatalf("CA = IsCA %v, MaxPathLenZero %v, KeyUsage %v", ca.Cert.IsCA, ca.Cert.MaxPathLenZero, ca.Cert.KeyUsage)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	for _, tt := range []struct {
		name     string
		hosts    []string
		notAfter time.Time
		verify   string // a name the certificate must verify for
		wantEnd  time.Time
		wantErr  string
	}{
		{name: "dns and ip", hosts: []string{"svc.ns.svc", "127.0.0.1"}, notAfter: now.Add(time.Hour), verify: "127.0.0.1", wantEnd: now.Add(time.Hour)},
		{name: "clipped to the CA", hosts: []string{"svc"}, notAfter: now.Add(365 * 24 * time.Hour), verify: "svc", wantEnd: ca.Cert.NotAfter},
		{name: "empty hosts are dropped", hosts: []string{"", "svc"}, notAfter: now.Add(time.Hour), verify: "svc", wantEnd: now.Add(time.Hour)},
		{name: "no host", hosts: []string{""}, notAfter: now.Add(time.Hour), wantErr: "at least one host"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			leaf, err := ca.IssueServing(tt.hosts, now.Add(-time.Minute), tt.notAfter)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if _, err := leaf.Cert.Verify(x509.VerifyOptions{Roots: pool, DNSName: tt.verify, CurrentTime: now}); err != nil {
				t.Fatalf("does not verify for %s: %v", tt.verify, err)
			}
			if !leaf.Cert.NotAfter.Equal(tt.wantEnd.Truncate(time.Second)) {
				t.Errorf("NotAfter = %v, want %v", leaf.Cert.NotAfter, tt.wantEnd)
			}
			if !pki.HostsMatch(leaf.Cert, tt.hosts) || pki.HostsMatch(leaf.Cert, append(tt.hosts, "other")) {
				t.Errorf("HostsMatch disagrees with the hosts the certificate was issued for")
			}
			back, err := pki.ParsePair(leaf.CertPEM, leaf.KeyPEM)
			if err != nil || !back.Cert.Equal(leaf.Cert) {
				t.Fatalf("ParsePair of its own PEM: %v", err)
			}
		})
	}
	if _, err := (&pki.KeyPair{Cert: mustLeaf(t, ca).Cert, Key: ca.Key}).Issue(&x509.Certificate{Subject: pkix.Name{CommonName: "x"}}); err == nil {
		t.Fatal("a leaf issued a certificate")
	}
}

func mustLeaf(t *testing.T, ca *pki.KeyPair) *pki.KeyPair {
	t.Helper()
	leaf, err := ca.IssueServing([]string{"leaf"}, time.Now().Add(-time.Minute), time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return leaf
}

func TestParsePairRejects(t *testing.T) {
	now := time.Now()
	ca, err := pki.NewCA("test CA", now, now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	otherDER, err := x509.MarshalECPrivateKey(other)
	if err != nil {
		t.Fatal(err)
	}
	otherPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: otherDER})
	for _, tt := range []struct {
		name          string
		cert, key     []byte
		wantErrSubstr string
	}{
		{"no certificate", nil, ca.KeyPEM, "no certificate"},
		{"key first", ca.KeyPEM, ca.KeyPEM, "no certificate"},
		{"no key", ca.CertPEM, nil, "no key"},
		{"unknown key type", ca.CertPEM, pem.EncodeToMemory(&pem.Block{Type: "DSA PRIVATE KEY", Bytes: []byte{1}}), "unsupported"},
		{"garbage key", ca.CertPEM, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1, 2, 3}}), "parse key"},
		{"another key", ca.CertPEM, otherPEM, "does not match"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := pki.ParsePair(tt.cert, tt.key)
			if err == nil || !strings.Contains(err.Error(), tt.wantErrSubstr) {
				t.Fatalf("err = %v, want %q", err, tt.wantErrSubstr)
			}
		})
	}
}

func TestBundleRoundTrip(t *testing.T) {
	now := time.Now()
	var certs []*x509.Certificate
	for range 3 {
		ca, err := pki.NewCA("ca", now, now.Add(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		certs = append(certs, ca.Cert)
	}
	b := pki.EncodeBundle(certs)
	// Foreign and broken blocks are skipped, not fatal.
	b = append(b, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1}})...)
	b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1}})...)
	got := pki.ParseBundle(b)
	if len(got) != len(certs) {
		t.Fatalf("parsed %d certificates, want %d", len(got), len(certs))
	}
	for i := range certs {
		if !got[i].Equal(certs[i]) {
			t.Fatalf("certificate %d differs", i)
		}
	}
}
