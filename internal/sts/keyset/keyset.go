// Package keyset holds the sts's token signing keys and rotates them. The
// newest key signs; retired keys stay in the published JWKS for an overlap
// period (at least the token lifetime) so tokens signed before a rotation keep
// validating until they expire. Rotation is driven by the caller's clock, so
// tests move time instead of waiting.
package keyset

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/podid/podid/internal/sts/store"
)

// Persister stores the key set; *store.Store implements it.
type Persister interface {
	SigningKeys() ([]store.SigningKey, error)
	ReplaceSigningKeys([]store.SigningKey) error
}

// Config configures a Set.
type Config struct {
	Store    Persister
	Interval time.Duration // how long a key signs before it is replaced
	Overlap  time.Duration // how long a retired key stays published
	Bits     int           // RSA modulus size; 2048 when zero
}

// Signer is one usable key.
type Signer struct {
	KID    string
	Key    *rsa.PrivateKey
	header string // base64url of the fixed JOSE header
}

// SignJWT returns the compact RS256 JWS of claims (JSON-marshalled) with
// header {"alg":"RS256","kid":…,"typ":"JWT"}. The header is encoded once per
// key; this is the token issuance hot path.
func (s *Signer) SignJWT(claims any) (string, error) {
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", fmt.Errorf("encode claims: %w", err)
	}
	enc := base64.RawURLEncoding
	size := s.Key.Size()
	buf := make([]byte, 0, len(s.header)+2+enc.EncodedLen(len(payload))+enc.EncodedLen(size))
	buf = append(buf, s.header...)
	buf = append(buf, '.')
	buf = enc.AppendEncode(buf, payload)
	digest := sha256.Sum256(buf)
	sig, err := rsa.SignPKCS1v15(nil, s.Key, crypto.SHA256, digest[:])
	if err != nil {
		return "", fmt.Errorf("sign: %w", err)
	}
	buf = append(buf, '.')
	buf = enc.AppendEncode(buf, sig)
	return string(buf), nil
}

type key struct {
	rec    store.SigningKey
	signer *Signer
}

// Set is the rotating key set.
type Set struct {
	cfg Config

	rotMu sync.Mutex   // serializes Load and Rotate (read-modify-persist of the set)
	mu    sync.RWMutex // protects keys
	keys  []key        // oldest first; last is current
}

// New assembles a Set; Load reads it.
func New(cfg Config) *Set {
	if cfg.Bits == 0 {
		cfg.Bits = 2048
	}
	return &Set{cfg: cfg}
}

// Load reads persisted keys and rotates if due (creating the first key).
func (s *Set) Load(now time.Time) error {
	if err := s.load(); err != nil {
		return err
	}
	_, err := s.Rotate(now, false)
	return err
}

func (s *Set) load() error {
	s.rotMu.Lock()
	defer s.rotMu.Unlock()
	recs, err := s.cfg.Store.SigningKeys()
	if err != nil {
		return fmt.Errorf("load signing keys: %w", err)
	}
	keys := make([]key, 0, len(recs))
	for _, r := range recs {
		k, err := fromRecord(r)
		if err != nil {
			return err
		}
		keys = append(keys, k)
	}
	s.mu.Lock()
	s.keys = keys
	s.mu.Unlock()
	return nil
}

func fromRecord(r store.SigningKey) (key, error) {
	pk, err := x509.ParsePKCS8PrivateKey(r.PKCS8)
	if err != nil {
		return key{}, fmt.Errorf("signing key %s: %w", r.KID, err)
	}
	rk, ok := pk.(*rsa.PrivateKey)
	if !ok {
		return key{}, fmt.Errorf("signing key %s: not RSA", r.KID)
	}
	rk.Precompute()
	hdr, err := json.Marshal(struct {
		Alg string `json:"alg"`
		KID string `json:"kid"`
		Typ string `json:"typ"`
	}{"RS256", r.KID, "JWT"})
	if err != nil {
		return key{}, err
	}
	return key{rec: r, signer: &Signer{KID: r.KID, Key: rk, header: base64.RawURLEncoding.EncodeToString(hdr)}}, nil
}

// Rotate replaces the current key when it is older than the interval (or when
// force is set), and drops retired keys whose overlap has passed. It reports
// whether anything changed. Changes are persisted before they take effect.
func (s *Set) Rotate(now time.Time, force bool) (bool, error) {
	s.rotMu.Lock()
	defer s.rotMu.Unlock()
	s.mu.RLock()
	old := append([]key(nil), s.keys...)
	s.mu.RUnlock()

	var next []key
	changed := false
	for i, k := range old {
		current := i == len(old)-1
		if !current && !k.rec.RetiredAt.IsZero() && now.Sub(k.rec.RetiredAt) >= s.cfg.Overlap {
			changed = true
			continue
		}
		next = append(next, k)
	}
	if len(next) == 0 || force || now.Sub(next[len(next)-1].rec.Created) >= s.cfg.Interval {
		if len(next) > 0 {
			next[len(next)-1].rec.RetiredAt = now
		}
		k, err := s.generate(now)
		if err != nil {
			return false, err
		}
		next = append(next, k)
		changed = true
	}
	if !changed {
		return false, nil
	}
	recs := make([]store.SigningKey, len(next))
	for i, k := range next {
		recs[i] = k.rec
	}
	if err := s.cfg.Store.ReplaceSigningKeys(recs); err != nil {
		return false, fmt.Errorf("persist signing keys: %w", err)
	}
	s.mu.Lock()
	s.keys = next
	s.mu.Unlock()
	return true, nil
}

func (s *Set) generate(now time.Time) (key, error) {
	rk, err := rsa.GenerateKey(rand.Reader, s.cfg.Bits)
	if err != nil {
		return key{}, fmt.Errorf("generate signing key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(rk)
	if err != nil {
		return key{}, fmt.Errorf("encode signing key: %w", err)
	}
	return fromRecord(store.SigningKey{KID: thumbprint(&rk.PublicKey), PKCS8: der, Created: now})
}

// thumbprint is the RFC 7638 JWK thumbprint, so kids are stable and unique.
func thumbprint(pub *rsa.PublicKey) string {
	jwk := jose.JSONWebKey{Key: pub}
	tp, err := jwk.Thumbprint(crypto.SHA256)
	if err != nil {
		// Only fails for unsupported key types; fall back to a hash of the modulus.
		sum := sha256.Sum256(pub.N.Bytes())
		tp = sum[:]
	}
	return base64.RawURLEncoding.EncodeToString(tp)
}

// ErrNoKey is returned before Load.
var ErrNoKey = errors.New("no signing key loaded")

// Current returns the signing key.
func (s *Set) Current() (*Signer, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if len(s.keys) == 0 {
		return nil, ErrNoKey
	}
	return s.keys[len(s.keys)-1].signer, nil
}

// Public returns the published JWKS: the current and every retired key still
// in its overlap.
func (s *Set) Public() jose.JSONWebKeySet {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := jose.JSONWebKeySet{Keys: make([]jose.JSONWebKey, 0, len(s.keys))}
	for i := len(s.keys) - 1; i >= 0; i-- {
		k := s.keys[i]
		out.Keys = append(out.Keys, jose.JSONWebKey{Key: &k.signer.Key.PublicKey, KeyID: k.rec.KID, Algorithm: string(jose.RS256), Use: "sig"})
	}
	return out
}

// PublicKey returns the published key with the kid, for in-process checks.
func (s *Set) PublicKey(kid string) (*rsa.PublicKey, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, k := range s.keys {
		if k.rec.KID == kid {
			return &k.signer.Key.PublicKey, true
		}
	}
	return nil, false
}
