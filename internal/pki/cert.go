package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"slices"
	"time"
)

// Organization is the subject organization of every certificate podid makes.
const Organization = "podid"

// KeyPair is a certificate with its private key, parsed and in PEM form.
type KeyPair struct {
	Cert    *x509.Certificate
	Key     crypto.Signer
	CertPEM []byte
	KeyPEM  []byte // PKCS#8, or the form it was parsed from
}

// NewCA makes a self-signed CA that signs leaf certificates only.
func NewCA(commonName string, notBefore, notAfter time.Time) (*KeyPair, error) {
	return issue(&x509.Certificate{
		Subject:               pkix.Name{CommonName: commonName, Organization: []string{Organization}},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}, nil)
}

// IssueServing signs a TLS serving certificate for hosts (DNS names or IP
// literals; the first is also the common name). Its validity is clipped to
// the CA's, so the chain never outlives its root.
func (ca *KeyPair) IssueServing(hosts []string, notBefore, notAfter time.Time) (*KeyPair, error) {
	dns, ips := SplitHosts(hosts)
	if len(dns)+len(ips) == 0 {
		return nil, errors.New("serving certificate needs at least one host")
	}
	cn := hosts[slices.IndexFunc(hosts, func(h string) bool { return h != "" })]
	return ca.Issue(&x509.Certificate{
		Subject:     pkix.Name{CommonName: cn, Organization: []string{Organization}},
		DNSNames:    dns,
		IPAddresses: ips,
		NotBefore:   notBefore,
		NotAfter:    notAfter,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
}

// Issue signs a certificate from tmpl (subject, names, usages, validity)
// with a fresh P-256 key; the serial number is chosen here and the validity
// clipped to the CA's.
func (ca *KeyPair) Issue(tmpl *x509.Certificate) (*KeyPair, error) {
	if !ca.Cert.IsCA {
		return nil, errors.New("issuer is not a CA")
	}
	t := *tmpl
	if t.NotAfter.After(ca.Cert.NotAfter) {
		t.NotAfter = ca.Cert.NotAfter
	}
	return issue(&t, ca)
}

func issue(tmpl *x509.Certificate, parent *KeyPair) (*KeyPair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	if tmpl.SerialNumber, err = rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127)); err != nil {
		return nil, fmt.Errorf("generate serial: %w", err)
	}
	parentCert, signer := tmpl, crypto.Signer(key)
	if parent != nil {
		parentCert, signer = parent.Cert, parent.Key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parentCert, key.Public(), signer)
	if err != nil {
		return nil, fmt.Errorf("create certificate %q: %w", tmpl.Subject.CommonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse certificate: %w", err)
	}
	pk, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode key: %w", err)
	}
	return &KeyPair{
		Cert:    cert,
		Key:     key,
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pk}),
	}, nil
}

// ParsePair parses the first CERTIFICATE block of certPEM and a PKCS#8, EC
// or PKCS#1 key, and checks that they belong together.
func ParsePair(certPEM, keyPEM []byte) (*KeyPair, error) {
	cb, _ := pem.Decode(certPEM)
	if cb == nil || cb.Type != "CERTIFICATE" {
		return nil, errors.New("no certificate PEM block")
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse certificate: %w", err)
	}
	kb, _ := pem.Decode(keyPEM)
	if kb == nil {
		return nil, errors.New("no key PEM block")
	}
	var key any
	switch kb.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(kb.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(kb.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(kb.Bytes)
	default:
		err = fmt.Errorf("unsupported key PEM type %q", kb.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("parse key: %w", err)
	}
	return pairOf(cert, key, certPEM, keyPEM)
}

func pairOf(cert *x509.Certificate, key any, certPEM, keyPEM []byte) (*KeyPair, error) {
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, errors.New("key cannot sign")
	}
	pub, ok := signer.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(cert.PublicKey) {
		return nil, errors.New("key does not match certificate")
	}
	return &KeyPair{Cert: cert, Key: signer, CertPEM: certPEM, KeyPEM: keyPEM}, nil
}

// ParseBundle parses every CERTIFICATE block, skipping unparsable ones.
func ParseBundle(b []byte) []*x509.Certificate {
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return out
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		if c, err := x509.ParseCertificate(blk.Bytes); err == nil {
			out = append(out, c)
		}
	}
}

// EncodeBundle is the PEM of certs, in order.
func EncodeBundle(certs []*x509.Certificate) []byte {
	var buf bytes.Buffer
	for _, c := range certs {
		_ = pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return buf.Bytes()
}

// SplitHosts separates IP literals from DNS names, dropping empty entries.
func SplitHosts(hosts []string) (dns []string, ips []net.IP) {
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			ips = append(ips, ip)
		} else if h != "" {
			dns = append(dns, h)
		}
	}
	return dns, ips
}

// HostsMatch reports whether c names exactly hosts (in any order).
func HostsMatch(c *x509.Certificate, hosts []string) bool {
	dns, ips := SplitHosts(hosts)
	if !sameSet(c.DNSNames, dns) || len(c.IPAddresses) != len(ips) {
		return false
	}
	for _, ip := range ips {
		if !slices.ContainsFunc(c.IPAddresses, ip.Equal) {
			return false
		}
	}
	return true
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(slices.Compact(a), slices.Compact(b))
}
