package sts

import (
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"os"
	"regexp"

	jose "github.com/go-jose/go-jose/v4"
)

var clusterNameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// ClusterIssuerKeys parses the PEM public keys (an API server's
// --service-account-key-file) into the JWKS a cluster issuer publishes. The
// kid is computed as the API server computes it (base64url SHA-256 of the
// PKIX DER), so tokens it signs name a kid found here.
func ClusterIssuerKeys(pemData []byte) (jose.JSONWebKeySet, error) {
	var set jose.JSONWebKeySet
	for {
		var b *pem.Block
		b, pemData = pem.Decode(pemData)
		if b == nil {
			break
		}
		var pub crypto.PublicKey
		switch b.Type {
		case "PUBLIC KEY":
			k, err := x509.ParsePKIXPublicKey(b.Bytes)
			if err != nil {
				return set, fmt.Errorf("cluster issuer key: %w", err)
			}
			pub = k
		case "RSA PUBLIC KEY":
			k, err := x509.ParsePKCS1PublicKey(b.Bytes)
			if err != nil {
				return set, fmt.Errorf("cluster issuer key: %w", err)
			}
			pub = k
		case "CERTIFICATE":
			c, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				return set, fmt.Errorf("cluster issuer key: %w", err)
			}
			pub = c.PublicKey
		default:
			continue
		}
		rk, ok := pub.(*rsa.PublicKey)
		if !ok {
			return set, errors.New("cluster issuer key: only RSA keys are supported (RS256)")
		}
		der, err := x509.MarshalPKIXPublicKey(rk)
		if err != nil {
			return set, err
		}
		sum := sha256.Sum256(der)
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: rk, KeyID: base64.RawURLEncoding.EncodeToString(sum[:]), Algorithm: "RS256", Use: "sig"})
	}
	if len(set.Keys) == 0 {
		return set, errors.New("cluster issuer key: no PEM public key found")
	}
	return set, nil
}

// LoadClusterIssuerKeys reads a PEM file with ClusterIssuerKeys.
func LoadClusterIssuerKeys(path string) (jose.JSONWebKeySet, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return jose.JSONWebKeySet{}, fmt.Errorf("read cluster issuer key: %w", err)
	}
	return ClusterIssuerKeys(raw)
}

// ClusterIssuerURL is the issuer URL of a hosted cluster issuer, to be used
// as the API server's --service-account-issuer.
func (s *Server) ClusterIssuerURL(name string) string { return s.PublicURL() + "/clusters/" + name }

// serveClusterDiscovery and serveClusterJWKS publish OIDC discovery and
// JWKS for clusters whose API server does not serve them publicly, in the
// shape a Kubernetes API server does (docs/contracts.md §4).
func (s *Server) serveClusterDiscovery(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if _, ok := s.cfg.ClusterIssuers[name]; !ok {
		writeHTTPError(w, http.StatusNotFound, "not_found", "No cluster issuer is hosted under this name.")
		return
	}
	iss := s.baseURL(r) + "/clusters/" + name
	writeJSONCacheable(w, map[string]any{
		"issuer": iss, "jwks_uri": iss + "/openid/v1/jwks",
		"response_types_supported": []string{"id_token"}, "subject_types_supported": []string{"public"},
		"id_token_signing_alg_values_supported": []string{"RS256"},
	})
}

func (s *Server) serveClusterJWKS(w http.ResponseWriter, r *http.Request) {
	set, ok := s.cfg.ClusterIssuers[r.PathValue("name")]
	if !ok {
		writeHTTPError(w, http.StatusNotFound, "not_found", "No cluster issuer is hosted under this name.")
		return
	}
	writeJSONCacheable(w, set)
}
