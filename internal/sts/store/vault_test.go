package store_test

import (
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/podid/podid/internal/sts/store"
)

// TestVaultSecrets drives the vault records through their lifecycle with
// small limits: versions, the per-vault and per-secret bounds, soft delete
// and its conflict, recover, purge, lazy purge past the date, and the
// removal of a vault with its secrets.
func TestVaultSecrets(t *testing.T) {
	st, err := store.Open(filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	now := time.Unix(1_800_000_000, 0).UTC()
	const sub = "0b1f6471-1bf0-4dda-aec3-cb9272f09590"
	mkVault := func(name, tenant string) error {
		_, err := st.PutVault(name, func(cur *store.Vault) (*store.Vault, error) {
			return &store.Vault{Name: name, TenantID: tenant, ResourceID: "/subscriptions/" + sub + "/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/" + name}, nil
		})
		return err
	}
	if err := mkVault("kv", "t1"); err != nil {
		t.Fatal(err)
	}
	if err := mkVault("kv2", "t2"); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("a vault of another tenant in the same subscription: %v", err)
	}
	lim := store.SecretLimits{SecretsPerVault: 2, VersionsPerSecret: 2}
	set := func(name, version string) error {
		return st.SetSecret("kv", name, store.SecretVersion{Version: version, Value: "v-" + version, Enabled: true, Created: now}, lim, now)
	}
	step := func(what string, err, want error) {
		t.Helper()
		if !errors.Is(err, want) && !(err == nil && want == nil) {
			t.Fatalf("%s: %v, want %v", what, err, want)
		}
	}
	step("set a/1", set("a", "01"), nil)
	step("set a/2", set("A", "02"), nil) // names are case-insensitive
	step("third version", set("a", "03"), store.ErrLimit)
	step("set b", set("b", "01"), nil)
	step("third secret", set("c", "01"), store.ErrLimit)
	step("no vault", st.SetSecret("nope", "a", store.SecretVersion{Version: "01"}, lim, now), store.ErrNotFound)
	if _, v, err := st.Secret("kv", "a", "", now); err != nil || v.Version != "02" {
		t.Fatalf("latest: %v %v", v, err)
	}
	if _, v, err := st.Secret("kv", "a", "01", now); err != nil || v.Value != "v-01" {
		t.Fatalf("by version: %v %v", v, err)
	}
	purgeAt := now.Add(time.Hour)
	_, _, err = st.DeleteSecret("kv", "a", now, purgeAt)
	step("delete", err, nil)
	_, _, err = st.Secret("kv", "a", "", now)
	step("get deleted", err, store.ErrNotFound)
	step("set over deleted", set("a", "04"), store.ErrSecretDeleted)
	_, _, err = st.RecoverSecret("kv", "a", now)
	step("recover", err, nil)
	_, _, err = st.RecoverSecret("kv", "a", now)
	step("recover live", err, store.ErrNotFound)
	_, _, err = st.DeleteSecret("kv", "a", now, purgeAt)
	step("delete again", err, nil)
	if del, _ := st.Secrets("kv", true, now); len(del) != 1 {
		t.Fatalf("deleted list = %v", del)
	}
	// Past the purge date the name is free again and the old versions gone.
	later := purgeAt.Add(time.Second)
	if del, _ := st.Secrets("kv", true, later); len(del) != 0 {
		t.Fatalf("deleted list after the purge date = %v", del)
	}
	step("set after purge date", st.SetSecret("kv", "a", store.SecretVersion{Version: "05", Enabled: true}, lim, later), nil)
	if vs, err := st.SecretVersions("kv", "a", later); err != nil || len(vs) != 1 {
		t.Fatalf("versions after lazy purge: %v %v", vs, err)
	}
	_, _, err = st.DeleteSecret("kv", "b", now, purgeAt)
	step("delete b", err, nil)
	step("purge b", st.PurgeSecret("kv", "b", now), nil)
	step("purge b again", st.PurgeSecret("kv", "b", now), store.ErrNotFound)
	step("delete vault", st.DeleteVault("kv"), nil)
	step("vault gone", func() error { _, err := st.Vault("kv"); return err }(), store.ErrNotFound)
	step("recreate", mkVault("kv", "t1"), nil)
	if live, err := st.Secrets("kv", false, later); err != nil || len(live) != 0 {
		t.Fatalf("a recreated vault inherited secrets: %v %v", live, err)
	}
}
