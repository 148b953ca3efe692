// Package keyset holds the sts's token signing keys and rotates them, as
// Entra does: a new key is published (in the JWKS) for a lead time before it
// signs, so a verifier that caches the JWKS for its max-age already has it
// when the first token signed with it arrives; the newest signing key signs;
// retired keys stay published for an overlap (at least the longest token
// lifetime) so tokens signed before a rotation keep validating until they
// expire. Every key has a self-signed certificate, published as x5c with its
// SHA-1 thumbprint x5t, which tokens carry in their header next to kid.
// Rotation is driven by the caller's clock, so tests move time instead of
// waiting.
package keyset

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"slices"
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
	Interval time.Duration // how long a key signs before the next one takes over
	// Lead is how long a key is published before it signs; it must exceed
	// the JWKS cache lifetime, and be shorter than Interval.
	Lead    time.Duration
	Overlap time.Duration // how long a retired key stays published
	Bits    int           // RSA modulus size; 2048 when zero
}

// certValidity is how long a signing key's self-signed certificate is
// valid; far longer than a key lives (Lead + Interval + Overlap), as
// verifiers that check the x5c certificate must not reject a live key.
const certValidity = 5 * 365 * 24 * time.Hour

// Signer is one usable key.
type Signer struct {
	KID  string
	X5t  string // base64url SHA-1 thumbprint of Cert
	Key  *rsa.PrivateKey
	Cert *x509.Certificate
	jws  jose.Signer // RS256, header {alg, kid, typ: JWT, x5t}
}

// SignJWT returns the compact RS256 JWS of claims (JSON-marshalled), with
// kid and x5t in the header as in Entra's tokens.
func (s *Signer) SignJWT(claims any) (string, error) {
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", fmt.Errorf("encode claims: %w", err)
	}
	obj, err := s.jws.Sign(payload)
	if err != nil {
		return "", fmt.Errorf("sign: %w", err)
	}
	return obj.CompactSerialize()
}

type key struct {
	rec    store.SigningKey
	signer *Signer
}

// signsFrom is when the key starts signing; keys stored before
// pre-publication existed signed from creation.
func (k key) signsFrom() time.Time {
	if k.rec.SignsFrom.IsZero() {
		return k.rec.Created
	}
	return k.rec.SignsFrom
}

// Set is the rotating key set.
type Set struct {
	cfg Config

	rotMu sync.Mutex   // serializes Load and Rotate (read-modify-persist of the set)
	mu    sync.RWMutex // protects keys, cur
	keys  []key        // oldest first
	cur   int          // index of the signing key in keys; -1 before Load
}

// New assembles a Set; Load reads it.
func New(cfg Config) *Set {
	if cfg.Bits == 0 {
		cfg.Bits = 2048
	}
	return &Set{cfg: cfg, cur: -1}
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
	upgraded := false
	for _, r := range recs {
		if len(r.Cert) == 0 {
			// Stored before keys had certificates: give it one.
			if r, err = withCert(r); err != nil {
				return err
			}
			upgraded = true
		}
		k, err := fromRecord(r)
		if err != nil {
			return err
		}
		keys = append(keys, k)
	}
	if upgraded {
		if err := s.persist(keys); err != nil {
			return err
		}
	}
	s.mu.Lock()
	s.keys = keys
	s.mu.Unlock()
	return nil
}

func withCert(r store.SigningKey) (store.SigningKey, error) {
	rk, err := parseKey(r)
	if err != nil {
		return r, err
	}
	der, err := selfSigned(rk, r.Created)
	if err != nil {
		return r, fmt.Errorf("signing key %s: %w", r.KID, err)
	}
	r.Cert = der
	return r, nil
}

func parseKey(r store.SigningKey) (*rsa.PrivateKey, error) {
	pk, err := x509.ParsePKCS8PrivateKey(r.PKCS8)
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", r.KID, err)
	}
	rk, ok := pk.(*rsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("signing key %s: not RSA", r.KID)
	}
	return rk, nil
}

// selfSigned issues the key's certificate, as Entra publishes one per key.
func selfSigned(rk *rsa.PrivateKey, created time.Time) ([]byte, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("certificate serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "podid sts token signing"},
		NotBefore:             created.Add(-time.Hour),
		NotAfter:              created.Add(certValidity),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &rk.PublicKey, rk)
	if err != nil {
		return nil, fmt.Errorf("self-sign certificate: %w", err)
	}
	return der, nil
}

func thumbprintSHA1(cert *x509.Certificate) []byte {
	sum := sha1.Sum(cert.Raw)
	return sum[:]
}

func fromRecord(r store.SigningKey) (key, error) {
	rk, err := parseKey(r)
	if err != nil {
		return key{}, err
	}
	rk.Precompute()
	cert, err := x509.ParseCertificate(r.Cert)
	if err != nil {
		return key{}, fmt.Errorf("signing key %s: certificate: %w", r.KID, err)
	}
	if !rk.PublicKey.Equal(cert.PublicKey) {
		return key{}, fmt.Errorf("signing key %s: certificate is for another key", r.KID)
	}
	x5t := base64.RawURLEncoding.EncodeToString(thumbprintSHA1(cert))
	jws, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: rk},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", r.KID).WithHeader("x5t", x5t))
	if err != nil {
		return key{}, fmt.Errorf("signing key %s: %w", r.KID, err)
	}
	return key{rec: r, signer: &Signer{KID: r.KID, X5t: x5t, Key: rk, Cert: cert, jws: jws}}, nil
}

// Rotate brings the set up to date at now: retired keys past their overlap
// are dropped; when the signing key has signed for Interval−Lead a next key
// is published, signing Lead later (not before the current key's Interval
// is up); a published key whose time has come signs, retiring the previous
// one. force makes a new key sign at once (for a compromised key: verifiers
// with a cached JWKS then refetch on the unknown kid, or wait out their
// cache). It reports whether anything changed; changes are persisted
// before they take effect.
func (s *Set) Rotate(now time.Time, force bool) (bool, error) {
	s.rotMu.Lock()
	defer s.rotMu.Unlock()
	s.mu.RLock()
	old := append([]key(nil), s.keys...)
	s.mu.RUnlock()

	changed := false
	var next []key
	for _, k := range old {
		if !k.rec.RetiredAt.IsZero() && now.Sub(k.rec.RetiredAt) >= s.cfg.Overlap {
			changed = true
			continue
		}
		next = append(next, k)
	}
	cur, pending := classify(next, now, &changed)
	switch {
	case force:
		if cur >= 0 {
			next[cur].rec.RetiredAt = now
		}
		if pending >= 0 {
			// It never signed: dropping it is safe.
			next = slices.Delete(next, pending, pending+1)
		}
		k, err := s.generate(now, now)
		if err != nil {
			return false, err
		}
		next, changed = append(next, k), true
	case cur < 0 && pending < 0:
		// Nothing was ever published, so nothing can be cached: sign now.
		k, err := s.generate(now, now)
		if err != nil {
			return false, err
		}
		next, changed = append(next, k), true
	case cur < 0:
		next[pending].rec.SignsFrom, changed = now, true
	case pending < 0 && !now.Before(next[cur].signsFrom().Add(s.cfg.Interval-s.cfg.Lead)):
		k, err := s.generate(now, later(now.Add(s.cfg.Lead), next[cur].signsFrom().Add(s.cfg.Interval)))
		if err != nil {
			return false, err
		}
		next, changed = append(next, k), true
	}
	if !changed {
		s.mu.Lock()
		s.cur = cur // set on the first Rotate after load
		s.mu.Unlock()
		return false, nil
	}
	cur, _ = classify(next, now, &changed)
	if err := s.persist(next); err != nil {
		return false, err
	}
	s.mu.Lock()
	s.keys, s.cur = next, cur
	s.mu.Unlock()
	return true, nil
}

// classify returns the index of the signing key (the newest unretired key
// whose time has come) and of the pending key (-1 when none), retiring any
// older unretired key whose time has come too.
func classify(keys []key, now time.Time, changed *bool) (cur, pending int) {
	cur, pending = -1, -1
	for i, k := range keys {
		if !k.rec.RetiredAt.IsZero() {
			continue
		}
		if k.signsFrom().After(now) {
			pending = i
			continue
		}
		if cur >= 0 {
			keys[cur].rec.RetiredAt = now
			*changed = true
		}
		cur = i
	}
	return cur, pending
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func (s *Set) persist(keys []key) error {
	recs := make([]store.SigningKey, len(keys))
	for i, k := range keys {
		recs[i] = k.rec
	}
	if err := s.cfg.Store.ReplaceSigningKeys(recs); err != nil {
		return fmt.Errorf("persist signing keys: %w", err)
	}
	return nil
}

func (s *Set) generate(now, signsFrom time.Time) (key, error) {
	rk, err := rsa.GenerateKey(rand.Reader, s.cfg.Bits)
	if err != nil {
		return key{}, fmt.Errorf("generate signing key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(rk)
	if err != nil {
		return key{}, fmt.Errorf("encode signing key: %w", err)
	}
	certDER, err := selfSigned(rk, now)
	if err != nil {
		return key{}, err
	}
	cert, err := x509.ParseCertificate(certDER)
	if err != nil {
		return key{}, fmt.Errorf("parse signing certificate: %w", err)
	}
	// kid = x5t, as in Entra's keys.
	kid := base64.RawURLEncoding.EncodeToString(thumbprintSHA1(cert))
	return fromRecord(store.SigningKey{KID: kid, PKCS8: der, Cert: certDER, Created: now, SignsFrom: signsFrom})
}

// ErrNoKey is returned before Load.
var ErrNoKey = errors.New("no signing key loaded")

// Current returns the signing key.
func (s *Set) Current() (*Signer, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.cur < 0 {
		return nil, ErrNoKey
	}
	return s.keys[s.cur].signer, nil
}

// Public returns the published JWKS: the signing key first, then the
// others (a pending next key, retired keys in their overlap), newest first.
// Each entry carries x5t and x5c, as Entra's do.
func (s *Set) Public() jose.JSONWebKeySet {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := jose.JSONWebKeySet{Keys: make([]jose.JSONWebKey, 0, len(s.keys))}
	add := func(k key) {
		out.Keys = append(out.Keys, jose.JSONWebKey{
			Key: &k.signer.Key.PublicKey, KeyID: k.rec.KID, Algorithm: string(jose.RS256), Use: "sig",
			Certificates: []*x509.Certificate{k.signer.Cert}, CertificateThumbprintSHA1: thumbprintSHA1(k.signer.Cert),
		})
	}
	if s.cur >= 0 {
		add(s.keys[s.cur])
	}
	for i := len(s.keys) - 1; i >= 0; i-- {
		if i != s.cur {
			add(s.keys[i])
		}
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
