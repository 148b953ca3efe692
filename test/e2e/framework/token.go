package framework

import (
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"strings"
)

// Claims are the claims of a Kubernetes service-account token.
type Claims struct {
	Issuer    string   `json:"iss"`
	Subject   string   `json:"sub"`
	Audience  Audience `json:"aud"`
	Expiry    int64    `json:"exp"`
	IssuedAt  int64    `json:"iat"`
	NotBefore int64    `json:"nbf"`
	JTI       string   `json:"jti"`
	// Kubernetes is the "kubernetes.io" claim binding the token to its pod.
	Kubernetes struct {
		Namespace      string  `json:"namespace"`
		Node           *Object `json:"node"`
		Pod            *Object `json:"pod"`
		ServiceAccount Object  `json:"serviceaccount"`
	} `json:"kubernetes.io"`
}

// Object names an object a token is bound to.
type Object struct {
	Name string `json:"name"`
	UID  string `json:"uid"`
}

// Audience is the "aud" claim: a string or a list of strings.
type Audience []string

// UnmarshalJSON accepts both forms.
func (a *Audience) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*a = Audience{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return fmt.Errorf("aud is neither a string nor a list of strings: %w", err)
	}
	*a = many
	return nil
}

// Contains reports whether aud is one of the audiences.
func (a Audience) Contains(aud string) bool {
	for _, x := range a {
		if x == aud {
			return true
		}
	}
	return false
}

// DecodeClaims decodes a JWT's claims without verifying it.
func DecodeClaims(jwt string) (Claims, error) {
	_, payload, _, err := splitJWT(jwt)
	if err != nil {
		return Claims{}, err
	}
	var c Claims
	if err := json.Unmarshal(payload, &c); err != nil {
		return Claims{}, fmt.Errorf("decode JWT claims: %w", err)
	}
	return c, nil
}

func splitJWT(jwt string) (header, payload, sig []byte, err error) {
	parts := strings.Split(strings.TrimSpace(jwt), ".")
	if len(parts) != 3 {
		return nil, nil, nil, fmt.Errorf("not a JWT: %d parts", len(parts))
	}
	dec := make([][]byte, 3)
	for i, p := range parts {
		if dec[i], err = base64.RawURLEncoding.DecodeString(p); err != nil {
			return nil, nil, nil, fmt.Errorf("JWT part %d: %w", i, err)
		}
	}
	return dec[0], dec[1], dec[2], nil
}

// OIDCDiscovery is the part of the issuer's /.well-known/openid-configuration the tests use.
type OIDCDiscovery struct {
	Issuer  string `json:"issuer"`
	JWKSURI string `json:"jwks_uri"`
}

// Discovery fetches the service-account issuer's discovery document without
// credentials, as an external identity provider does.
func (c *Cluster) Discovery(ctx context.Context) (OIDCDiscovery, error) {
	var d OIDCDiscovery
	err := c.getJSON(ctx, strings.TrimSuffix(c.Issuer, "/")+"/.well-known/openid-configuration", &d)
	return d, err
}

// VerifyToken checks a service-account token's RS256 signature against the keys
// the issuer publishes (fetched anonymously through its discovery document) and
// that its issuer is the cluster's; it returns the claims.
func (c *Cluster) VerifyToken(ctx context.Context, jwt string) (Claims, error) {
	d, err := c.Discovery(ctx)
	if err != nil {
		return Claims{}, err
	}
	var jwks struct {
		Keys []struct {
			Kty string `json:"kty"`
			Kid string `json:"kid"`
			N   string `json:"n"`
			E   string `json:"e"`
		} `json:"keys"`
	}
	if err := c.getJSON(ctx, d.JWKSURI, &jwks); err != nil {
		return Claims{}, err
	}
	hb, _, sig, err := splitJWT(jwt)
	if err != nil {
		return Claims{}, err
	}
	var h struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
	}
	if err := json.Unmarshal(hb, &h); err != nil {
		return Claims{}, fmt.Errorf("JWT header: %w", err)
	}
	if h.Alg != "RS256" {
		return Claims{}, fmt.Errorf("JWT alg %q, want RS256", h.Alg)
	}
	parts := strings.Split(strings.TrimSpace(jwt), ".")
	digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	for _, k := range jwks.Keys {
		if k.Kid != h.Kid || k.Kty != "RSA" {
			continue
		}
		n, err1 := base64.RawURLEncoding.DecodeString(k.N)
		e, err2 := base64.RawURLEncoding.DecodeString(k.E)
		if err1 != nil || err2 != nil {
			return Claims{}, fmt.Errorf("JWKS key %s is malformed", k.Kid)
		}
		pub := &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}
		if err := rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest[:], sig); err != nil {
			return Claims{}, fmt.Errorf("JWT signature: %w", err)
		}
		claims, err := DecodeClaims(jwt)
		if err != nil {
			return Claims{}, err
		}
		if claims.Issuer != d.Issuer {
			return Claims{}, fmt.Errorf("JWT iss %q, issuer publishes %q", claims.Issuer, d.Issuer)
		}
		return claims, nil
	}
	return Claims{}, fmt.Errorf("no RSA key %q in %s", h.Kid, d.JWKSURI)
}

func (c *Cluster) getJSON(ctx context.Context, url string, v any) error {
	hc, err := c.AnonymousHTTPClient()
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, body)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("GET %s: %w", url, err)
	}
	return nil
}
