package sts

import (
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// MaxAssertionBytes bounds a client assertion. Kubernetes service-account
// tokens and CI tokens are 1–3 KiB; 16 KiB leaves room without inviting abuse.
const MaxAssertionBytes = 16 << 10

// assertion is a client assertion parsed (by go-jose) but not yet verified.
type assertion struct {
	jws    *jose.JSONWebSignature
	header assertionHeader
	claims assertionClaims
}

// assertionHeader is what the server reads of the JOSE header.
type assertionHeader struct {
	Alg     string
	Kid     string
	X5t     string
	X5tS256 string
}

type assertionClaims struct {
	Iss string           `json:"iss"`
	Sub string           `json:"sub"`
	Aud audience         `json:"aud"`
	Exp *jwt.NumericDate `json:"exp"`
	Nbf *jwt.NumericDate `json:"nbf"`
	Iat *jwt.NumericDate `json:"iat"`
	Jti string           `json:"jti"`
}

// audience accepts the two JSON forms of aud: a string or an array of strings.
type audience []string

func (a *audience) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		*a = audience{s}
		return nil
	}
	var l []string
	if err := json.Unmarshal(b, &l); err != nil {
		return errors.New("aud is neither a string nor an array of strings")
	}
	*a = l
	return nil
}

var (
	errMalformedAssertion = errors.New("malformed JWT")
	// errAssertionAlg: a well-formed JWS with an algorithm other than the
	// RS256 and PS256 Entra accepts (none, HS256, ES256 …).
	errAssertionAlg = errors.New("unsupported algorithm")
)

// assertionAlgs are the algorithms a client assertion may use: RS256
// (federated and certificate assertions), PS256 (MSAL's certificate
// assertions). Anything else is refused before any key is looked up.
var assertionAlgs = []jose.SignatureAlgorithm{jose.RS256, jose.PS256}

// parseAssertion parses a compact JWS without checking its signature, so
// the server can decide which key (certificate or issuer JWKS) verifies it.
// Everything is bounded and strictly decoded.
func parseAssertion(raw string) (*assertion, error) {
	if len(raw) > MaxAssertionBytes {
		return nil, fmt.Errorf("%w: larger than %d bytes", errMalformedAssertion, MaxAssertionBytes)
	}
	// An empty signature (alg "none" style) is malformed whatever alg says.
	if strings.HasSuffix(raw, ".") {
		return nil, fmt.Errorf("%w: empty signature", errMalformedAssertion)
	}
	jws, err := jose.ParseSignedCompact(raw, assertionAlgs)
	if err != nil {
		var ua *jose.ErrUnexpectedSignatureAlgorithm
		if errors.As(err, &ua) && ua.Got != "" {
			return nil, fmt.Errorf("%w %q, only RS256 and PS256 are accepted", errAssertionAlg, truncate(string(ua.Got), 16))
		}
		return nil, fmt.Errorf("%w: %v", errMalformedAssertion, err)
	}
	if len(jws.Signatures) != 1 {
		return nil, fmt.Errorf("%w: want one signature", errMalformedAssertion)
	}
	h := jws.Signatures[0].Header
	// RFC 7515 §4.1.11 / RFC 7797: extensions we do not implement must be refused.
	if _, ok := h.ExtraHeaders["crit"]; ok {
		return nil, fmt.Errorf("%w: unsupported 'crit' header", errMalformedAssertion)
	}
	if _, ok := h.ExtraHeaders["b64"]; ok {
		return nil, fmt.Errorf("%w: unsupported 'b64' header", errMalformedAssertion)
	}
	a := &assertion{jws: jws, header: assertionHeader{Alg: h.Algorithm, Kid: h.KeyID}}
	var okX5t, okS256 bool
	if v, ok := h.ExtraHeaders["x5t"]; ok {
		a.header.X5t, okX5t = v.(string)
		if !okX5t {
			return nil, fmt.Errorf("%w: 'x5t' is not a string", errMalformedAssertion)
		}
	}
	if v, ok := h.ExtraHeaders["x5t#S256"]; ok {
		a.header.X5tS256, okS256 = v.(string)
		if !okS256 {
			return nil, fmt.Errorf("%w: 'x5t#S256' is not a string", errMalformedAssertion)
		}
	}
	payload := jws.UnsafePayloadWithoutVerification()
	if len(payload) == 0 || payload[0] != '{' {
		return nil, fmt.Errorf("%w: claims: not a JSON object", errMalformedAssertion)
	}
	if err := json.Unmarshal(payload, &a.claims); err != nil {
		return nil, fmt.Errorf("%w: claims: %v", errMalformedAssertion, err)
	}
	return a, nil
}

// minRSABits is the smallest RSA key accepted for assertions, as in Entra.
const minRSABits = 2048

var errBadSignature = errors.New("signature does not verify")

// verify checks the JWS signature with alg (RS256 or PS256 only) and an RSA
// public key of at least minRSABits.
func (a *assertion) verify(alg string, key any) error {
	pub, ok := key.(*rsa.PublicKey)
	if !ok {
		return errors.New("key is not an RSA public key")
	}
	if pub.N.BitLen() < minRSABits {
		return fmt.Errorf("RSA key shorter than %d bits", minRSABits)
	}
	if alg != a.header.Alg || !slices.Contains(assertionAlgs, jose.SignatureAlgorithm(alg)) {
		return errors.New("algorithm mismatch")
	}
	if _, err := a.jws.Verify(pub); err != nil {
		return errBadSignature
	}
	return nil
}
