package store_test

import (
	"errors"
	"path/filepath"
	"testing"

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
