package sts

import (
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/go-jose/go-jose/v4/jwt"
)

// MaxAssertionBytes bounds a client assertion. Kubernetes service-account
// tokens and CI tokens are 1–3 KiB; 16 KiB leaves room without inviting abuse.
const MaxAssertionBytes = 16 << 10

// assertion is a client assertion parsed but not yet verified.
type assertion struct {
	raw          string
	signingInput string // header.payload
	signature    []byte
	header       assertionHeader
	claims       assertionClaims
}

type assertionHeader struct {
	Alg     string          `json:"alg"`
	Crit    json.RawMessage `json:"crit"`
	B64     json.RawMessage `json:"b64"`
	Kid     string          `json:"kid"`
	Typ     string          `json:"typ"`
	X5t     string          `json:"x5t"`
	X5tS256 string          `json:"x5t#S256"`
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

var errMalformedAssertion = errors.New("malformed JWT")

// parseAssertion splits and decodes a compact JWS without checking its
// signature, so the server can decide which key (certificate or issuer JWKS)
// verifies it. Everything is bounded and strictly decoded.
func parseAssertion(raw string) (*assertion, error) {
	if len(raw) > MaxAssertionBytes {
		return nil, fmt.Errorf("%w: larger than %d bytes", errMalformedAssertion, MaxAssertionBytes)
	}
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return nil, fmt.Errorf("%w: want 3 dot-separated parts, got %d", errMalformedAssertion, len(parts))
	}
	a := &assertion{raw: raw}
	if err := decodeSegment(parts[0], &a.header); err != nil {
		return nil, fmt.Errorf("%w: header: %v", errMalformedAssertion, err)
	}
	if err := decodeSegment(parts[1], &a.claims); err != nil {
		return nil, fmt.Errorf("%w: claims: %v", errMalformedAssertion, err)
	}
	if parts[2] == "" {
		return nil, fmt.Errorf("%w: empty signature", errMalformedAssertion)
	}
	if _, err := base64.RawURLEncoding.DecodeString(parts[2]); err != nil {
		return nil, fmt.Errorf("%w: signature: %v", errMalformedAssertion, err)
	}
	if a.header.Alg == "" {
		return nil, fmt.Errorf("%w: no alg", errMalformedAssertion)
	}
	// RFC 7515 §4.1.11 / RFC 7797: extensions we do not implement must be refused.
	if a.header.Crit != nil || a.header.B64 != nil {
		return nil, fmt.Errorf("%w: unsupported 'crit' or 'b64' header", errMalformedAssertion)
	}
	a.signingInput = raw[:len(parts[0])+1+len(parts[1])]
	a.signature, _ = base64.RawURLEncoding.DecodeString(parts[2])
	return a, nil
}

// minRSABits is the smallest RSA key accepted for assertions, as in Entra.
const minRSABits = 2048

var errBadSignature = errors.New("signature does not verify")

// verify checks the JWS signature with alg (RS256 or PS256 only) and an RSA
// public key. The header was already parsed strictly by parseAssertion.
func (a *assertion) verify(alg string, key any) error {
	pub, ok := key.(*rsa.PublicKey)
	if !ok {
		return errors.New("key is not an RSA public key")
	}
	if pub.N.BitLen() < minRSABits {
		return fmt.Errorf("RSA key shorter than %d bits", minRSABits)
	}
	if alg != a.header.Alg {
		return errors.New("algorithm mismatch")
	}
	digest := sha256.Sum256([]byte(a.signingInput))
	var err error
	switch alg {
	case "RS256":
		err = rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest[:], a.signature)
	case "PS256":
		err = rsa.VerifyPSS(pub, crypto.SHA256, digest[:], a.signature, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto})
	default:
		return fmt.Errorf("unsupported algorithm %q", alg)
	}
	if err != nil {
		return errBadSignature
	}
	return nil
}

func decodeSegment(seg string, v any) error {
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		return err
	}
	if len(b) == 0 || b[0] != '{' {
		return errors.New("not a JSON object")
	}
	return json.Unmarshal(b, v)
}
