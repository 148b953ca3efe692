package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// Blobs persists opaque values; the sts's *store.Store implements it.
type Blobs interface {
	Blob(name string) ([]byte, error)
	PutBlob(name string, v []byte) error
}

type pair struct {
	CertDER []byte `json:"cert"`
	KeyDER  []byte `json:"key"`
}

// Material is the sts's loaded CA and serving certificate.
type Material struct {
	CA      *x509.Certificate
	Serving tls.Certificate
}

// CAPEM returns the CA certificate in PEM form.
func (m *Material) CAPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: m.CA.Raw})
}

// Pool returns a pool holding only the CA.
func (m *Material) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(m.CA)
	return p
}

// Ensure loads or creates the sts's CA and a serving certificate valid for hosts
// (DNS names or IP literals). isNotFound tells a missing blob from a failure.
func Ensure(b Blobs, isNotFound func(error) bool, hosts []string, now time.Time) (*Material, error) {
	return EnsureWithCA(b, isNotFound, hosts, now, nil)
}

// CA is a certificate authority the operator brings (LoadCA).
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// LoadCA parses a PEM CA certificate and its PEM private key (PKCS#1 RSA,
// SEC 1 EC or PKCS#8), refusing a certificate that is not a CA or a key that
// is not its own.
func LoadCA(certPEM, keyPEM []byte) (*CA, error) {
	kp, err := ParsePair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("CA: %w", err)
	}
	if !kp.Cert.IsCA || kp.Cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, errors.New("CA certificate: not a CA (basic constraints CA and key usage certSign required)")
	}
	return &CA{Cert: kp.Cert, Key: kp.Key}, nil
}

// EnsureWithCA is Ensure with the operator's CA when ca is non-nil: it is
// used as given (never stored) and the serving certificate is reissued
// under it when the stored one was signed by another.
func EnsureWithCA(b Blobs, isNotFound func(error) bool, hosts []string, now time.Time, given *CA) (*Material, error) {
	var ca *loaded
	var err error
	if given != nil {
		if given.Cert.NotAfter.Before(now) {
			return nil, fmt.Errorf("CA certificate expired at %s", given.Cert.NotAfter.Format(time.RFC3339))
		}
		ca = &loaded{cert: given.Cert, key: given.Key}
	} else if ca, err = loadPair(b, "ca", isNotFound); err != nil {
		return nil, err
	}
	if given == nil && (ca == nil || ca.cert.NotAfter.Before(now.Add(30*24*time.Hour))) {
		ca, err = newCA(now)
		if err != nil {
			return nil, err
		}
		if err := storePair(b, "ca", ca); err != nil {
			return nil, err
		}
	}
	srv, err := loadPair(b, "serving", isNotFound)
	if err != nil {
		return nil, err
	}
	if srv == nil || !servingOK(srv.cert, ca.cert, hosts, now) {
		srv, err = newServing(ca, hosts, now)
		if err != nil {
			return nil, err
		}
		if err := storePair(b, "serving", srv); err != nil {
			return nil, err
		}
	}
	return &Material{
		CA:      ca.cert,
		Serving: tls.Certificate{Certificate: [][]byte{srv.cert.Raw, ca.cert.Raw}, PrivateKey: srv.key, Leaf: srv.cert},
	}, nil
}

// WriteCAFile writes the CA PEM atomically (temp file + rename), so a reader
// never sees a partial file.
func (m *Material) WriteCAFile(path string) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("write CA file: %w", err)
	}
	f, err := os.CreateTemp(dir, ".ca-*.pem")
	if err != nil {
		return fmt.Errorf("write CA file: %w", err)
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(m.CAPEM()); err != nil {
		f.Close()
		return fmt.Errorf("write CA file: %w", err)
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return fmt.Errorf("write CA file: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write CA file: %w", err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("write CA file: %w", err)
	}
	return nil
}

type loaded struct {
	cert *x509.Certificate
	key  crypto.Signer // ECDSA for what this package makes; any for a given CA
}

func loadPair(b Blobs, name string, isNotFound func(error) bool) (*loaded, error) {
	raw, err := b.Blob(name)
	if isNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("load %s certificate: %w", name, err)
	}
	var p pair
	if err := json.Unmarshal(raw, &p); err != nil {
		return nil, fmt.Errorf("decode %s certificate: %w", name, err)
	}
	cert, err := x509.ParseCertificate(p.CertDER)
	if err != nil {
		return nil, fmt.Errorf("parse %s certificate: %w", name, err)
	}
	key, err := x509.ParseECPrivateKey(p.KeyDER)
	if err != nil {
		return nil, fmt.Errorf("parse %s key: %w", name, err)
	}
	return &loaded{cert: cert, key: key}, nil
}

func storePair(b Blobs, name string, l *loaded) error {
	ek, ok := l.key.(*ecdsa.PrivateKey)
	if !ok {
		return fmt.Errorf("encode %s key: not ECDSA", name)
	}
	kd, err := x509.MarshalECPrivateKey(ek)
	if err != nil {
		return fmt.Errorf("encode %s key: %w", name, err)
	}
	raw, err := json.Marshal(pair{CertDER: l.cert.Raw, KeyDER: kd})
	if err != nil {
		return err
	}
	return b.PutBlob(name, raw)
}

func newCA(now time.Time) (*loaded, error) {
	kp, err := NewCA("podid sts CA", now.Add(-time.Hour), now.Add(10*365*24*time.Hour))
	if err != nil {
		return nil, fmt.Errorf("create CA: %w", err)
	}
	return loadedOf(kp)
}

func servingOK(c, ca *x509.Certificate, hosts []string, now time.Time) bool {
	return c.CheckSignatureFrom(ca) == nil && !c.NotAfter.Before(now.Add(30*24*time.Hour)) && HostsMatch(c, hosts)
}

func newServing(ca *loaded, hosts []string, now time.Time) (*loaded, error) {
	issuer := &KeyPair{Cert: ca.cert, Key: ca.key}
	kp, err := issuer.IssueServing(hosts, now.Add(-time.Hour), now.Add(365*24*time.Hour))
	if err != nil {
		return nil, fmt.Errorf("create serving certificate: %w", err)
	}
	return loadedOf(kp)
}

// loadedOf narrows a fresh key pair to the ECDSA form the store persists.
func loadedOf(kp *KeyPair) (*loaded, error) {
	key, ok := kp.Key.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("key of %q is %T, want ECDSA", kp.Cert.Subject.CommonName, kp.Key)
	}
	return &loaded{cert: kp.Cert, key: key}, nil
}
