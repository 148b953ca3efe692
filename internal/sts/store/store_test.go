package store_test

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/podid/podid/internal/sts/store"
)

func TestPrincipalARMIndex(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	st, err := store.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	const rid = "/subscriptions/s/resourcegroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/a"
	put := func(clientID, resourceID string) error {
		_, err := st.UpdatePrincipal(clientID, func(cur *store.Principal) (*store.Principal, error) {
			return &store.Principal{ClientID: clientID, TenantID: "t", Kind: store.KindIdentity, ResourceID: resourceID}, nil
		})
		return err
	}
	for _, tt := range []struct {
		name    string
		run     func() error
		wantErr bool
	}{
		{"create", func() error { return put("c1", rid) }, false},
		{"same resource, other client", func() error { return put("c2", rid) }, true},
		{"lookup is case-insensitive", func() error {
			p, err := st.PrincipalByResourceID("/SUBSCRIPTIONS/s/resourceGroups/RG/providers/microsoft.managedidentity/userassignedidentities/A")
			if err == nil && p.ClientID != "c1" {
				return errors.New("wrong principal")
			}
			return err
		}, false},
		{"list under prefix", func() error {
			ps, err := st.IdentitiesUnder("/subscriptions/s/resourcegroups/rg/")
			if err == nil && len(ps) != 1 {
				return errors.New("want 1")
			}
			return err
		}, false},
		{"delete drops the index", func() error {
			if _, err := st.UpdatePrincipal("c1", func(*store.Principal) (*store.Principal, error) { return nil, nil }); err != nil {
				return err
			}
			_, err := st.PrincipalByResourceID(rid)
			if !errors.Is(err, store.ErrNotFound) {
				return errors.New("index survived delete")
			}
			return put("c2", rid)
		}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.run(); (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
		})
	}
	// Reopen: state persisted.
	st.Close()
	st, err = store.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if p, err := st.PrincipalByResourceID(rid); err != nil || p.ClientID != "c2" {
		t.Fatalf("after reopen: %v %v", p, err)
	}
}

func TestTenantNamesUnique(t *testing.T) {
	st, err := store.Open(filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	const a, b = "aaaaaaaa-0000-4000-8000-000000000000", "bbbbbbbb-0000-4000-8000-000000000000"
	if err := st.PutTenant(store.Tenant{ID: a, Domains: []string{"a.test"}}); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		t    store.Tenant
		want error
	}{
		{"own domain again", store.Tenant{ID: a, Domains: []string{"a.test", "a2.test"}}, nil},
		{"other's domain", store.Tenant{ID: b, Domains: []string{"A.TEST"}}, store.ErrConflict},
		{"other's id as domain", store.Tenant{ID: b, Domains: []string{strings.ToUpper(a)}}, store.ErrConflict},
		{"fresh domain", store.Tenant{ID: b, Domains: []string{"b.test"}}, nil},
		{"id that is another's domain", store.Tenant{ID: "b.test"}, store.ErrConflict},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := st.PutTenant(tt.t); !errors.Is(err, tt.want) {
				t.Errorf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestDeletePrincipalTakesRoleAssignments(t *testing.T) {
	st, err := store.Open(filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	const rid = "/subscriptions/s/resourcegroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/a"
	if _, err := st.UpdatePrincipal("c1", func(*store.Principal) (*store.Principal, error) {
		return &store.Principal{ClientID: "c1", TenantID: "t", Kind: store.KindIdentity, ResourceID: rid}, nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.UpdatePrincipal("c2", func(*store.Principal) (*store.Principal, error) {
		return &store.Principal{ClientID: "c2", TenantID: "t", Kind: store.KindApplication}, nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, ra := range []store.RoleAssignment{{ID: "r1", TenantID: "t", Principal: "c1"}, {ID: "r2", TenantID: "t", Principal: "c2"}} {
		if err := st.PutRoleAssignment(ra); err != nil {
			t.Fatal(err)
		}
	}
	// An assignment for a principal that is absent, or in another tenant, is refused.
	for _, ra := range []store.RoleAssignment{{ID: "r3", TenantID: "t", Principal: "gone"}, {ID: "r4", TenantID: "other", Principal: "c2"}} {
		if err := st.PutRoleAssignment(ra); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("PutRoleAssignment(%+v) = %v, want ErrNotFound", ra, err)
		}
	}
	if err := st.DeletePrincipal("c1"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.PrincipalByResourceID(rid); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("ARM index kept: %v", err)
	}
	ras, _ := st.RoleAssignments("")
	if len(ras) != 1 || ras[0].ID != "r2" {
		t.Errorf("role assignments = %+v, want only r2", ras)
	}
	if err := st.DeletePrincipal("c1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("second delete: %v", err)
	}
}

func TestSubscriptionBelongsToOneTenant(t *testing.T) {
	st, err := store.Open(filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	rid := func(sub, name string) string {
		return "/subscriptions/" + sub + "/resourcegroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/" + name
	}
	put := func(clientID, tenant, resourceID string) error {
		_, err := st.UpdatePrincipal(clientID, func(*store.Principal) (*store.Principal, error) {
			return &store.Principal{ClientID: clientID, TenantID: tenant, Kind: store.KindIdentity, ResourceID: resourceID}, nil
		})
		return err
	}
	for _, tt := range []struct {
		name             string
		client, tenant   string
		resourceID, want string
		err              error
	}{
		{"first identity binds", "c1", "ta", rid("S1", "a"), "ta", nil},
		{"same tenant again", "c2", "ta", rid("s1", "b"), "ta", nil},
		{"other tenant refused", "c3", "tb", rid("s1", "c"), "ta", store.ErrConflict},
		{"other subscription", "c3", "tb", rid("s2", "c"), "tb", nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := put(tt.client, tt.tenant, tt.resourceID); !errors.Is(err, tt.err) {
				t.Fatalf("err = %v, want %v", err, tt.err)
			}
			sub := strings.Split(tt.resourceID, "/")[2]
			if got, err := st.SubscriptionTenant(sub); err != nil || got != tt.want {
				t.Errorf("SubscriptionTenant(%s) = %q %v, want %q", sub, got, err, tt.want)
			}
		})
	}
	// Deleting the identities does not release the subscription.
	for _, c := range []string{"c1", "c2"} {
		if err := st.DeletePrincipal(c); err != nil {
			t.Fatal(err)
		}
	}
	if err := put("c4", "tb", rid("s1", "d")); !errors.Is(err, store.ErrConflict) {
		t.Errorf("subscription released by deletes: %v", err)
	}
}

// TestSubscriptionWithoutBinding: state written before subscriptions were
// bound derives the owner from the identities already in it.
func TestSubscriptionWithoutBinding(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	st, err := store.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	const rid = "/subscriptions/s1/resourcegroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/a"
	if _, err := st.UpdatePrincipal("c1", func(*store.Principal) (*store.Principal, error) {
		return &store.Principal{ClientID: "c1", TenantID: "ta", Kind: store.KindIdentity, ResourceID: rid}, nil
	}); err != nil {
		t.Fatal(err)
	}
	st.Close()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket([]byte("subscriptions")).Delete([]byte("s1")) }); err != nil {
		t.Fatal(err)
	}
	db.Close()
	st, err = store.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if got, err := st.SubscriptionTenant("S1"); err != nil || got != "ta" {
		t.Errorf("SubscriptionTenant = %q %v, want ta", got, err)
	}
	_, err = st.UpdatePrincipal("c2", func(*store.Principal) (*store.Principal, error) {
		return &store.Principal{ClientID: "c2", TenantID: "tb", Kind: store.KindIdentity, ResourceID: strings.Replace(rid, "/a", "/b", 1)}, nil
	})
	if !errors.Is(err, store.ErrConflict) {
		t.Errorf("other tenant in an unbound subscription with identities: %v", err)
	}
}
