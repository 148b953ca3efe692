// Package tokenverify checks an access token the way a resource server does:
// RS256 signature against the issuer's JWKS (fetched over HTTPS and cached),
// exact issuer, a single-string audience from an allowed set, and exp/nbf/iat
// present and valid with a small leeway. It works for tokens from the podid
// sts and from Entra ID alike; v1 tokens (iss https://sts.windows.net/{tid}/)
// name no fetchable issuer, so the JWKS URL is configured, not discovered.
package tokenverify

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/podid/podid/internal/sts/jwks"
)

// MaxTokenSize bounds the token accepted for parsing.
const MaxTokenSize = 16 << 10

// Keys resolves a kid to a public key; *jwks.Cache implements it via URLKey.
type Keys interface {
	URLKey(ctx context.Context, jwksURL, kid string) (*jose.JSONWebKey, error)
}

// Config configures a Verifier.
type Config struct {
	JWKSURL   string
	Keys      Keys     // usually jwks.New(...)
	Issuers   []string // accepted iss values, exact
	Audiences []string // accepted aud values, exact
	// AllowArrayAudience accepts an array aud (v2 multi-audience). Off by
	// default: resource servers for first-party resources reject arrays.
	AllowArrayAudience bool
	Leeway             time.Duration // 1 minute when zero
	Now                func() time.Time
}

// Claims are the checked claims of an access token.
type Claims struct {
	Issuer    string    `json:"iss"`
	Subject   string    `json:"sub"`
	Audience  []string  `json:"aud"`
	TenantID  string    `json:"tid"`
	ObjectID  string    `json:"oid"`
	AppID     string    `json:"appid"` // appid (v1) or azp (v2)
	IDType    string    `json:"idtyp"`
	Version   string    `json:"ver"`
	Roles     []string  `json:"roles,omitempty"`
	IssuedAt  time.Time `json:"iat"`
	NotBefore time.Time `json:"nbf"`
	Expiry    time.Time `json:"exp"`
	KeyID     string    `json:"kid"`
}

// Verifier is safe for concurrent use.
type Verifier struct{ cfg Config }

// New assembles a Verifier.
func New(cfg Config) (*Verifier, error) {
	if cfg.JWKSURL == "" || cfg.Keys == nil {
		return nil, errors.New("tokenverify: JWKSURL and Keys are required")
	}
	if len(cfg.Issuers) == 0 || len(cfg.Audiences) == 0 {
		return nil, errors.New("tokenverify: at least one issuer and one audience are required")
	}
	if cfg.Leeway == 0 {
		cfg.Leeway = time.Minute
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Verifier{cfg: cfg}, nil
}

type rawClaims struct {
	Iss   string           `json:"iss"`
	Sub   string           `json:"sub"`
	Aud   json.RawMessage  `json:"aud"`
	Tid   string           `json:"tid"`
	Oid   string           `json:"oid"`
	AppID string           `json:"appid"`
	Azp   string           `json:"azp"`
	IDTyp string           `json:"idtyp"`
	Ver   string           `json:"ver"`
	Roles []string         `json:"roles"`
	Iat   *jwt.NumericDate `json:"iat"`
	Nbf   *jwt.NumericDate `json:"nbf"`
	Exp   *jwt.NumericDate `json:"exp"`
}

// Verify checks raw and returns its claims.
func (v *Verifier) Verify(ctx context.Context, raw string) (*Claims, error) {
	if len(raw) > MaxTokenSize {
		return nil, fmt.Errorf("token larger than %d bytes", MaxTokenSize)
	}
	tok, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		return nil, fmt.Errorf("parse token: %w", err)
	}
	if len(tok.Headers) != 1 || tok.Headers[0].KeyID == "" {
		return nil, errors.New("token header has no kid")
	}
	kid := tok.Headers[0].KeyID
	key, err := v.cfg.Keys.URLKey(ctx, v.cfg.JWKSURL, kid)
	if err != nil {
		return nil, fmt.Errorf("resolve signing key: %w", err)
	}
	// A token naming its key's certificate (x5t, as Entra's and ours do)
	// must name the certificate the JWKS publishes for that kid.
	if x5t, ok := tok.Headers[0].ExtraHeaders["x5t"]; ok && len(key.CertificateThumbprintSHA1) > 0 {
		if s, _ := x5t.(string); s != base64.RawURLEncoding.EncodeToString(key.CertificateThumbprintSHA1) {
			return nil, errors.New("token x5t does not match the certificate of its key")
		}
	}
	var rc rawClaims
	if err := tok.Claims(key.Key, &rc); err != nil {
		return nil, fmt.Errorf("signature: %w", err)
	}
	if !slices.Contains(v.cfg.Issuers, rc.Iss) {
		return nil, fmt.Errorf("issuer %q not accepted", rc.Iss)
	}
	var aud []string
	var single string
	if err := json.Unmarshal(rc.Aud, &single); err == nil {
		aud = []string{single}
	} else if v.cfg.AllowArrayAudience && json.Unmarshal(rc.Aud, &aud) == nil {
	} else {
		return nil, errors.New("aud must be a single string")
	}
	if !slices.ContainsFunc(aud, func(a string) bool { return slices.Contains(v.cfg.Audiences, a) }) {
		return nil, fmt.Errorf("audience %q not accepted", strings.Join(aud, ","))
	}
	if rc.Iat == nil || rc.Nbf == nil || rc.Exp == nil {
		return nil, errors.New("token lacks iat, nbf or exp")
	}
	now := v.cfg.Now()
	if now.Add(v.cfg.Leeway).Before(rc.Nbf.Time()) {
		return nil, errors.New("token not yet valid")
	}
	if now.Add(-v.cfg.Leeway).After(rc.Exp.Time()) {
		return nil, errors.New("token expired")
	}
	if now.Add(v.cfg.Leeway).Before(rc.Iat.Time()) {
		return nil, errors.New("token issued in the future")
	}
	app := rc.AppID
	if app == "" {
		app = rc.Azp
	}
	return &Claims{
		Issuer: rc.Iss, Subject: rc.Sub, Audience: aud, TenantID: rc.Tid, ObjectID: rc.Oid,
		AppID: app, IDType: rc.IDTyp, Version: rc.Ver, Roles: rc.Roles,
		IssuedAt: rc.Iat.Time(), NotBefore: rc.Nbf.Time(), Expiry: rc.Exp.Time(), KeyID: kid,
	}, nil
}

var _ Keys = (*jwks.Cache)(nil)
