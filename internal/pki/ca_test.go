package pki_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/podid/podid/internal/pki"
)

// makeCA returns a PEM certificate and PKCS#1 RSA key as Helm's genCA makes them.
func makeCA(t *testing.T, isCA bool, notAfter time.Time) (certPEM, keyPEM []byte, key *rsa.PrivateKey) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "podid sts CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: notAfter,
		KeyUsage:              x509.KeyUsageKeyEncipherment | x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		BasicConstraintsValid: true, IsCA: isCA,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), key
}

func TestLoadCA(t *testing.T) {
	year := time.Now().Add(365 * 24 * time.Hour)
	certPEM, keyPEM, _ := makeCA(t, true, year)
	otherCert, otherKey, _ := makeCA(t, true, year)
	leafCert, leafKey, _ := makeCA(t, false, year)
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecDER, err := x509.MarshalPKCS8PrivateKey(ec)
	if err != nil {
		t.Fatal(err)
	}
	ecPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: ecDER})
	tests := []struct {
		name      string
		cert, key []byte
		wantErr   string
	}{
		{"helm genCA pair", certPEM, keyPEM, ""},
		{"other pair", otherCert, otherKey, ""},
		{"key of another CA", certPEM, otherKey, "key does not match certificate"},
		{"PKCS#8 key of another type", certPEM, ecPEM, "key does not match certificate"},
		{"not a CA", leafCert, leafKey, "not a CA"},
		{"no certificate", []byte("junk"), keyPEM, "no certificate PEM block"},
		{"no key", certPEM, []byte("junk"), "no key PEM block"},
		{"key block of unknown type", certPEM, pem.EncodeToMemory(&pem.Block{Type: "OPENSSH PRIVATE KEY", Bytes: []byte{1}}), "unsupported"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ca, err := pki.LoadCA(tt.cert, tt.key)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if ca.Cert == nil || ca.Key == nil {
					t.Fatal("empty CA")
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

// A given CA is used as is, across restarts and a stored CA of its own: the
// serving certificate is reissued under it; it is never written to the store.
func TestEnsureWithCA(t *testing.T) {
	now := time.Now()
	certPEM, keyPEM, key := makeCA(t, true, now.Add(365*24*time.Hour))
	ca, err := pki.LoadCA(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	b := blobs{}
	own, err := pki.Ensure(b, isMissing, []string{"localhost"}, now) // a CA of its own first
	if err != nil {
		t.Fatal(err)
	}
	storedCA := string(b["ca"])
	for i := range 2 {
		m, err := pki.EnsureWithCA(b, isMissing, []string{"10.96.0.100", "podid-sts.podid-system.svc"}, now, ca)
		if err != nil {
			t.Fatal(err)
		}
		if !m.CA.Equal(ca.Cert) || m.CA.Equal(own.CA) {
			t.Fatalf("run %d: not serving under the given CA", i)
		}
		if err := m.Serving.Leaf.CheckSignatureFrom(ca.Cert); err != nil {
			t.Fatalf("run %d: serving certificate not signed by the given CA: %v", i, err)
		}
		if !key.PublicKey.Equal(m.CA.PublicKey.(crypto.PublicKey)) {
			t.Fatalf("run %d: CA public key differs", i)
		}
		if _, err := m.Serving.Leaf.Verify(x509.VerifyOptions{DNSName: "podid-sts.podid-system.svc", Roots: m.Pool()}); err != nil {
			t.Fatalf("run %d: %v", i, err)
		}
	}
	if string(b["ca"]) != storedCA {
		t.Error("the given CA was written to the store")
	}
	if _, err := pki.EnsureWithCA(blobs{}, isMissing, []string{"localhost"}, now.Add(2*365*24*time.Hour), ca); err == nil ||
		!strings.Contains(err.Error(), "expired") {
		t.Errorf("expired CA: err = %v", err)
	}
}
