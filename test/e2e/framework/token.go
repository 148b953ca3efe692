package framework

import (
	"context"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
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

// decodeAlgs are the signature algorithms DecodeClaims parses: what an API
// server signs service-account tokens with.
var decodeAlgs = []jose.SignatureAlgorithm{jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.ES256, jose.ES384, jose.ES512}

// DecodeClaims decodes a JWT's claims without verifying it.
func DecodeClaims(token string) (Claims, error) {
	tok, err := jwt.ParseSigned(strings.TrimSpace(token), decodeAlgs)
	if err != nil {
		return Claims{}, fmt.Errorf("parse JWT: %w", err)
	}
	var c Claims
	if err := tok.UnsafeClaimsWithoutVerification(&c); err != nil {
		return Claims{}, fmt.Errorf("decode JWT claims: %w", err)
	}
	return c, nil
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
func (c *Cluster) VerifyToken(ctx context.Context, token string) (Claims, error) {
	d, err := c.Discovery(ctx)
	if err != nil {
		return Claims{}, err
	}
	var set jose.JSONWebKeySet
	if err := c.getJSON(ctx, d.JWKSURI, &set); err != nil {
		return Claims{}, err
	}
	tok, err := jwt.ParseSigned(strings.TrimSpace(token), []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		return Claims{}, fmt.Errorf("parse JWT (RS256 only): %w", err)
	}
	kid := tok.Headers[0].KeyID
	for _, k := range set.Key(kid) {
		pub, ok := k.Key.(*rsa.PublicKey)
		if !ok {
			continue
		}
		var claims Claims
		if err := tok.Claims(pub, &claims); err != nil {
			return Claims{}, fmt.Errorf("JWT signature: %w", err)
		}
		if claims.Issuer != d.Issuer {
			return Claims{}, fmt.Errorf("JWT iss %q, issuer publishes %q", claims.Issuer, d.Issuer)
		}
		return claims, nil
	}
	return Claims{}, fmt.Errorf("no RSA key %q in %s", kid, d.JWKSURI)
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
