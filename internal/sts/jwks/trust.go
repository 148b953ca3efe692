package jwks

import (
	"crypto/x509"
	"fmt"
	"os"
)

// LoadTrust builds a Trust from PEM files: global bundles trusted for every
// issuer, and per-issuer bundles (issuer URL → file) that replace them for
// that issuer.
func LoadTrust(globalFiles []string, perIssuer map[string]string, noSystemRoots bool) (Trust, error) {
	t := Trust{NoSystemRoots: noSystemRoots}
	if len(globalFiles) > 0 {
		t.Global = x509.NewCertPool()
		for _, f := range globalFiles {
			if err := appendPEMFile(t.Global, f); err != nil {
				return Trust{}, err
			}
		}
	}
	if len(perIssuer) > 0 {
		t.PerIssuer = map[string]*x509.CertPool{}
		for iss, f := range perIssuer {
			p := x509.NewCertPool()
			if err := appendPEMFile(p, f); err != nil {
				return Trust{}, fmt.Errorf("issuer %s: %w", iss, err)
			}
			t.PerIssuer[iss] = p
		}
	}
	return t, nil
}

func appendPEMFile(p *x509.CertPool, path string) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read CA bundle: %w", err)
	}
	if !p.AppendCertsFromPEM(raw) {
		return fmt.Errorf("CA bundle %s holds no PEM certificate", path)
	}
	return nil
}
