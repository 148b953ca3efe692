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

// serveCluster publishes OIDC discovery and JWKS for clusters whose API
// server does not serve them publicly (docs/contracts.md §4 shape).
func (s *Server) serveCluster(w http.ResponseWriter, r *http.Request, segs []string) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if len(segs) < 3 {
		http.NotFound(w, r)
		return
	}
	set, ok := s.cfg.ClusterIssuers[segs[1]]
	if !ok {
		http.NotFound(w, r)
		return
	}
	iss := s.baseURL(r) + "/clusters/" + segs[1]
	switch rest := segs[2:]; {
	case len(rest) == 2 && rest[0] == ".well-known" && rest[1] == "openid-configuration":
		writeJSONCacheable(w, map[string]any{
			"issuer": iss, "jwks_uri": iss + "/openid/v1/jwks",
			"response_types_supported": []string{"id_token"}, "subject_types_supported": []string{"public"},
			"id_token_signing_alg_values_supported": []string{"RS256"},
		})
	case len(rest) == 3 && rest[0] == "openid" && rest[1] == "v1" && rest[2] == "jwks":
		writeJSONCacheable(w, set)
	default:
		http.NotFound(w, r)
	}
}
