// Package pki gives the sts its own certificate authority and a TLS serving
// certificate signed by it. Both are persisted (so clients that trust the CA
// keep trusting it across restarts); the serving certificate is reissued when
// the requested names change or it nears expiry. Keys are ECDSA P-256. An
// operator may bring the CA instead (LoadCA, EnsureWithCA): a Helm release
// keeps one CA across upgrades that every client was handed at install.
package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"time"
)

// Blobs persists opaque values; *store.Store implements it.
type Blobs interface {
	Blob(name string) ([]byte, error)
	PutBlob(name string, v []byte) error
}

type pair struct {
	CertDER []byte `json:"cert"`
	KeyDER  []byte `json:"key"`
}

// Material is the loaded CA and serving certificate.
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

// Ensure loads or creates the CA and a serving certificate valid for hosts
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
	cb, _ := pem.Decode(certPEM)
	if cb == nil || cb.Type != "CERTIFICATE" {
		return nil, errors.New("CA certificate: no PEM CERTIFICATE block")
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	if !cert.IsCA || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, errors.New("CA certificate: not a CA (basic constraints CA and key usage certSign required)")
	}
	kb, _ := pem.Decode(keyPEM)
	if kb == nil {
		return nil, errors.New("CA key: no PEM block")
	}
	var key any
	switch kb.Type {
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(kb.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(kb.Bytes)
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(kb.Bytes)
	default:
		return nil, fmt.Errorf("CA key: unsupported PEM block %q", kb.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("CA key: %w", err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, errors.New("CA key: not a signing key")
	}
	pub, err := x509.MarshalPKIXPublicKey(signer.Public())
	if err != nil {
		return nil, fmt.Errorf("CA key: %w", err)
	}
	if !bytes.Equal(pub, cert.RawSubjectPublicKeyInfo) {
		return nil, errors.New("CA key does not belong to the CA certificate")
	}
	return &CA{Cert: cert, Key: signer}, nil
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

func serial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

func newCA(now time.Time) (*loaded, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	sn, err := serial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{CommonName: "podid sts CA", Organization: []string{"podid"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("create CA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &loaded{cert: cert, key: key}, nil
}

func splitHosts(hosts []string) (dns []string, ips []net.IP) {
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			ips = append(ips, ip)
		} else if h != "" {
			dns = append(dns, h)
		}
	}
	return dns, ips
}

func servingOK(c, ca *x509.Certificate, hosts []string, now time.Time) bool {
	if c.CheckSignatureFrom(ca) != nil || c.NotAfter.Before(now.Add(30*24*time.Hour)) {
		return false
	}
	dns, ips := splitHosts(hosts)
	have := append([]string(nil), c.DNSNames...)
	want := append([]string(nil), dns...)
	sort.Strings(have)
	sort.Strings(want)
	if !slices.Equal(slices.Compact(have), slices.Compact(want)) || len(c.IPAddresses) != len(ips) {
		return false
	}
	for _, ip := range ips {
		if !slices.ContainsFunc(c.IPAddresses, ip.Equal) {
			return false
		}
	}
	return true
}

func newServing(ca *loaded, hosts []string, now time.Time) (*loaded, error) {
	if len(hosts) == 0 {
		return nil, errors.New("serving certificate needs at least one host")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate serving key: %w", err)
	}
	sn, err := serial()
	if err != nil {
		return nil, err
	}
	dns, ips := splitHosts(hosts)
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      pkix.Name{CommonName: hosts[0], Organization: []string{"podid"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     dns,
		IPAddresses:  ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, fmt.Errorf("create serving certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &loaded{cert: cert, key: key}, nil
}
