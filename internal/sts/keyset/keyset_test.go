package keyset_test

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/podid/podid/internal/sts/keyset"
	"github.com/podid/podid/internal/sts/store"
)

func TestRotate(t *testing.T) {
	st, err := store.Open(filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	cfg := keyset.Config{Store: st, Interval: 10 * time.Hour, Overlap: 2 * time.Hour, Bits: 1024}
	t0 := time.Unix(1_800_000_000, 0)
	ks := keyset.New(cfg)
	if err := ks.Load(t0); err != nil {
		t.Fatal(err)
	}
	first, _ := ks.Current()
	for _, tt := range []struct {
		name      string
		at        time.Duration
		changed   bool
		published int
	}{
		{"fresh key kept", 9 * time.Hour, false, 1},
		{"rotates at interval", 10 * time.Hour, true, 2},
		{"old key published during overlap", 11*time.Hour + 59*time.Minute, false, 2},
		{"old key pruned after overlap", 12 * time.Hour, true, 1},
		{"next rotation", 20 * time.Hour, true, 2},
	} {
		t.Run(tt.name, func(t *testing.T) {
			changed, err := ks.Rotate(t0.Add(tt.at), false)
			if err != nil || changed != tt.changed {
				t.Fatalf("changed = %v, err = %v, want %v", changed, err, tt.changed)
			}
			if got := len(ks.Public().Keys); got != tt.published {
				t.Fatalf("published %d keys, want %d", got, tt.published)
			}
			cur, _ := ks.Current()
			if ks.Public().Keys[0].KeyID != cur.KID {
				t.Fatal("current key not first in JWKS")
			}
		})
	}
	// A reload from the store sees the same set.
	again := keyset.New(cfg)
	if err := again.Load(t0.Add(20 * time.Hour)); err != nil {
		t.Fatal(err)
	}
	a, _ := ks.Current()
	b, _ := again.Current()
	if a.KID != b.KID || a.KID == first.KID || len(again.Public().Keys) != 2 {
		t.Fatalf("reloaded set differs")
	}
}
