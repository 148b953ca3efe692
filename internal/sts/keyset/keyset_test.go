package keyset_test

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"encoding/base64"
	"path/filepath"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/podid/podid/internal/sts/keyset"
	"github.com/podid/podid/internal/sts/store"
)

func openStore(t *testing.T) *store.Store {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func kids(ks *keyset.Set) []string {
	var out []string
	for _, k := range ks.Public().Keys {
		out = append(out, k.KeyID)
	}
	return out
}

// TestRotate walks a clock through two rotations: the next key is published
// Lead before it signs, the old key stays published for Overlap after.
func TestRotate(t *testing.T) {
	st := openStore(t)
	cfg := keyset.Config{Store: st, Interval: 10 * time.Hour, Lead: time.Hour, Overlap: 2 * time.Hour, Bits: 1024}
	t0 := time.Unix(1_800_000_000, 0)
	ks := keyset.New(cfg)
	if err := ks.Load(t0); err != nil {
		t.Fatal(err)
	}
	first, _ := ks.Current()
	signers := map[string]string{"A": first.KID}
	for _, tt := range []struct {
		name    string
		at      time.Duration
		changed bool
		signer  string   // name of the signing key; a new name is a new key
		want    []string // published, signing key first, then newest first
	}{
		{"fresh key kept", 8*time.Hour + 59*time.Minute, false, "A", []string{"A"}},
		{"next key published Lead before it signs", 9 * time.Hour, true, "A", []string{"A", "B"}},
		{"published key does not sign early", 9*time.Hour + 59*time.Minute, false, "A", []string{"A", "B"}},
		{"next key signs at interval", 10 * time.Hour, true, "B", []string{"B", "A"}},
		{"old key published during overlap", 11*time.Hour + 59*time.Minute, false, "B", []string{"B", "A"}},
		{"old key pruned after overlap", 12 * time.Hour, true, "B", []string{"B"}},
		{"a late check publishes first", 20*time.Hour + 30*time.Minute, true, "B", []string{"B", "C"}},
		{"and signs Lead later", 21*time.Hour + 29*time.Minute, false, "B", []string{"B", "C"}},
		{"not before", 21*time.Hour + 30*time.Minute, true, "C", []string{"C", "B"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			changed, err := ks.Rotate(t0.Add(tt.at), false)
			if err != nil || changed != tt.changed {
				t.Fatalf("changed = %v, err = %v, want %v", changed, err, tt.changed)
			}
			cur, _ := ks.Current()
			published := kids(ks)
			for i, name := range tt.want {
				if _, ok := signers[name]; !ok && i < len(published) {
					signers[name] = published[i]
				}
			}
			if cur.KID != signers[tt.signer] {
				t.Errorf("signing key %s, want %s (%s)", cur.KID, tt.signer, signers[tt.signer])
			}
			if len(published) != len(tt.want) {
				t.Fatalf("published %v, want %v", published, tt.want)
			}
			for i, name := range tt.want {
				if published[i] != signers[name] {
					t.Fatalf("published %v, want %v (%v)", published, tt.want, signers)
				}
			}
		})
	}
	// A reload from the store sees the same set.
	again := keyset.New(cfg)
	if err := again.Load(t0.Add(21*time.Hour + 31*time.Minute)); err != nil {
		t.Fatal(err)
	}
	a, _ := ks.Current()
	b, _ := again.Current()
	if a.KID != b.KID || len(kids(again)) != 2 {
		t.Fatalf("reloaded set differs: %s %v vs %s %v", a.KID, kids(ks), b.KID, kids(again))
	}
}

// Forced rotation (a compromised key) signs with a new key at once and
// drops a pending key that never signed.
func TestForceRotate(t *testing.T) {
	ks := keyset.New(keyset.Config{Store: openStore(t), Interval: 10 * time.Hour, Lead: time.Hour, Overlap: 2 * time.Hour, Bits: 1024})
	t0 := time.Unix(1_800_000_000, 0)
	if err := ks.Load(t0); err != nil {
		t.Fatal(err)
	}
	old, _ := ks.Current()
	if _, err := ks.Rotate(t0.Add(9*time.Hour), false); err != nil {
		t.Fatal(err)
	}
	pending := kids(ks)[1]
	if _, err := ks.Rotate(t0.Add(9*time.Hour+time.Minute), true); err != nil {
		t.Fatal(err)
	}
	cur, _ := ks.Current()
	got := kids(ks)
	if cur.KID == old.KID || cur.KID == pending || len(got) != 2 || got[0] != cur.KID || got[1] != old.KID {
		t.Fatalf("after force: signing %s, published %v (old %s, pending %s)", cur.KID, got, old.KID, pending)
	}
}

// Tokens and JWKS entries carry x5t (and the JWKS x5c), as Entra's.
func TestX5tAndX5c(t *testing.T) {
	ks := keyset.New(keyset.Config{Store: openStore(t), Interval: 10 * time.Hour, Lead: time.Hour, Overlap: 2 * time.Hour, Bits: 1024})
	if err := ks.Load(time.Now()); err != nil {
		t.Fatal(err)
	}
	cur, _ := ks.Current()
	jwk := ks.Public().Keys[0]
	if len(jwk.Certificates) != 1 || !cur.Key.PublicKey.Equal(jwk.Certificates[0].PublicKey) {
		t.Fatalf("x5c = %v, want the key's certificate", jwk.Certificates)
	}
	sum := sha1.Sum(jwk.Certificates[0].Raw)
	x5t := base64.RawURLEncoding.EncodeToString(sum[:])
	if string(jwk.CertificateThumbprintSHA1) != string(sum[:]) || cur.X5t != x5t || cur.KID != x5t {
		t.Fatalf("x5t = %x / %s, kid %s; want %s", jwk.CertificateThumbprintSHA1, cur.X5t, cur.KID, x5t)
	}
	raw, err := cur.SignJWT(map[string]any{"aud": "a"})
	if err != nil {
		t.Fatal(err)
	}
	obj, err := jose.ParseSignedCompact(raw, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		t.Fatal(err)
	}
	h := obj.Signatures[0].Header
	if h.KeyID != cur.KID || h.ExtraHeaders["x5t"] != x5t || h.ExtraHeaders[jose.HeaderType] != "JWT" {
		t.Fatalf("header = %+v", h)
	}
	if _, err := obj.Verify(jwk.Certificates[0].PublicKey); err != nil {
		t.Fatalf("signature does not verify with the x5c certificate: %v", err)
	}
}

// Keys stored before certificates existed get one at load, and keep their kid.
func TestLoadUpgradesKeysWithoutCertificate(t *testing.T) {
	st := openStore(t)
	rk, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(rk)
	t0 := time.Unix(1_800_000_000, 0)
	if err := st.ReplaceSigningKeys([]store.SigningKey{{KID: "legacy", PKCS8: der, Created: t0}}); err != nil {
		t.Fatal(err)
	}
	ks := keyset.New(keyset.Config{Store: st, Interval: 10 * time.Hour, Lead: time.Hour, Overlap: 2 * time.Hour, Bits: 1024})
	if err := ks.Load(t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	cur, _ := ks.Current()
	if cur.KID != "legacy" || len(ks.Public().Keys[0].Certificates) != 1 {
		t.Fatalf("kid %s, x5c %v", cur.KID, ks.Public().Keys[0].Certificates)
	}
	recs, _ := st.SigningKeys()
	if len(recs) != 1 || len(recs[0].Cert) == 0 {
		t.Fatalf("certificate not persisted: %+v", recs)
	}
}
