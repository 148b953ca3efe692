package tokenverify_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/podid/podid/internal/sts/jwks"
	"github.com/podid/podid/internal/sts/tokenverify"
)

// keys is a fixed key source: what a JWKS would publish.
type keys map[string]*rsa.PublicKey

// certThumb is the x5t the JWKS publishes for kid "kx".
var certThumb = []byte("0123456789abcdefghij")

func (k keys) URLKey(_ context.Context, _, kid string) (*jose.JSONWebKey, error) {
	if pk, ok := k[kid]; ok {
		jwk := &jose.JSONWebKey{Key: pk, KeyID: kid}
		if kid == "kx" {
			jwk.CertificateThumbprintSHA1 = certThumb
		}
		return jwk, nil
	}
	return nil, jwks.ErrUnknownKID
}

func TestVerify(t *testing.T) {
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	now := time.Unix(1_800_000_000, 0)
	const iss, aud = "https://sts.windows.net/t/", "https://vault.azure.net"
	signX5t := func(k any, alg jose.SignatureAlgorithm, kid, x5t string, claims map[string]any) string {
		opts := (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", kid)
		if x5t != "" {
			opts = opts.WithHeader("x5t", x5t)
		}
		s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: k}, opts)
		if err != nil {
			t.Fatal(err)
		}
		tok, err := jwt.Signed(s).Claims(claims).Serialize()
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	sign := func(k any, alg jose.SignatureAlgorithm, kid string, claims map[string]any) string {
		return signX5t(k, alg, kid, "", claims)
	}
	base := func(mod map[string]any) map[string]any {
		c := map[string]any{"iss": iss, "aud": aud, "iat": now.Unix(), "nbf": now.Add(-5 * time.Minute).Unix(), "exp": now.Add(time.Hour).Unix(), "tid": "t", "appid": "a", "roles": []string{"r"}}
		for k, v := range mod {
			if v == nil {
				delete(c, k)
			} else {
				c[k] = v
			}
		}
		return c
	}
	v, err := tokenverify.New(tokenverify.Config{JWKSURL: "https://x/keys", Keys: keys{"k1": &key.PublicKey, "kx": &key.PublicKey}, Issuers: []string{iss}, Audiences: []string{aud}, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		tok  string
		want string // substring of the error; "" for success
	}{
		{"valid", sign(key, jose.RS256, "k1", base(nil)), ""},
		{"wrong issuer", sign(key, jose.RS256, "k1", base(map[string]any{"iss": "https://login.microsoftonline.com/t/v2.0"})), "issuer"},
		{"wrong audience", sign(key, jose.RS256, "k1", base(map[string]any{"aud": "https://storage.azure.com"})), "audience"},
		{"array audience", sign(key, jose.RS256, "k1", base(map[string]any{"aud": []string{aud}})), "single string"},
		{"expired", sign(key, jose.RS256, "k1", base(map[string]any{"exp": now.Add(-2 * time.Minute).Unix()})), "expired"},
		{"not yet valid", sign(key, jose.RS256, "k1", base(map[string]any{"nbf": now.Add(2 * time.Minute).Unix()})), "not yet valid"},
		{"no nbf", sign(key, jose.RS256, "k1", base(map[string]any{"nbf": nil})), "lacks"},
		{"unknown kid", sign(key, jose.RS256, "k9", base(nil)), "signing key"},
		{"wrong key", sign(other, jose.RS256, "k1", base(nil)), "signature"},
		{"PS256 refused", sign(key, jose.PS256, "k1", base(nil)), "parse"},
		{"HS256 refused", sign([]byte(strings.Repeat("k", 32)), jose.HS256, "k1", base(nil)), "parse"},
		{"x5t matches the key's certificate", signX5t(key, jose.RS256, "kx", base64.RawURLEncoding.EncodeToString(certThumb), base(nil)), ""},
		{"x5t of another certificate", signX5t(key, jose.RS256, "kx", base64.RawURLEncoding.EncodeToString([]byte("another-certificate!")), base(nil)), "x5t"},
		{"x5t without a published certificate", signX5t(key, jose.RS256, "k1", "whatever", base(nil)), ""},
		{"oversized", strings.Repeat("a", tokenverify.MaxTokenSize+1), "larger"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := v.Verify(context.Background(), tt.tok)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("err = %v", err)
			case tt.want == "" && (c.AppID != "a" || c.Roles[0] != "r"):
				t.Fatalf("claims = %+v", c)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}
