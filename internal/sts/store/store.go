package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// ErrNotFound is returned when a record does not exist.
var ErrNotFound = errors.New("not found")

var (
	bucketTenants    = []byte("tenants")
	bucketPrincipals = []byte("principals")
	bucketARMIndex   = []byte("armindex")
	bucketRoles      = []byte("roles")
	bucketKeys       = []byte("signingkeys")
	bucketBlobs      = []byte("blobs")
)

// Tenant is a directory tenant.
type Tenant struct {
	ID      string   `json:"id"`
	Domains []string `json:"domains,omitempty"`
}

// Kind tells app registrations from user-assigned managed identities.
type Kind string

// Principal kinds.
const (
	KindApplication Kind = "application"
	KindIdentity    Kind = "identity"
)

// Secret is a client secret, stored only as a salted hash.
type Secret struct {
	ID          string    `json:"id"`
	DisplayName string    `json:"displayName,omitempty"`
	Hint        string    `json:"hint"` // first three characters, as Entra shows
	Salt        []byte    `json:"salt"`
	Hash        []byte    `json:"hash"`
	Expires     time.Time `json:"expires,omitempty"`
}

// Certificate is a public certificate registered for an application.
type Certificate struct {
	ID  string `json:"id"`
	DER []byte `json:"der"`
}

// FederatedCredential trusts tokens from an external issuer for a subject.
type FederatedCredential struct {
	Name      string   `json:"name"`
	Issuer    string   `json:"issuer"`
	Subject   string   `json:"subject"`
	Audiences []string `json:"audiences"`
}

// Principal is an application registration or a user-assigned identity; both
// are service principals that can obtain tokens.
type Principal struct {
	TenantID           string                `json:"tenantId"`
	ClientID           string                `json:"clientId"`
	ObjectID           string                `json:"objectId"`
	Kind               Kind                  `json:"kind"`
	DisplayName        string                `json:"displayName,omitempty"`
	IdentifierURIs     []string              `json:"identifierUris,omitempty"`
	AccessTokenVersion int                   `json:"accessTokenVersion,omitempty"`
	Secrets            []Secret              `json:"secrets,omitempty"`
	Certificates       []Certificate         `json:"certificates,omitempty"`
	FederatedCreds     []FederatedCredential `json:"federatedIdentityCredentials,omitempty"`
	// ARM fields, set for identities.
	ResourceID string            `json:"resourceId,omitempty"`
	Location   string            `json:"location,omitempty"`
	Tags       map[string]string `json:"tags,omitempty"`
}

// RoleAssignment grants an app role on a resource to a principal.
type RoleAssignment struct {
	ID        string `json:"id"`
	TenantID  string `json:"tenantId"`
	Principal string `json:"principal"` // client id
	Resource  string `json:"resource"`
	Role      string `json:"role"`
}

// SigningKey is a token signing key. A key is published from Created,
// signs from SignsFrom (zero: from Created) and, once retired, stays
// published until RetiredAt+overlap so tokens it signed keep validating.
type SigningKey struct {
	KID       string    `json:"kid"`
	PKCS8     []byte    `json:"pkcs8"`
	Cert      []byte    `json:"cert,omitempty"` // self-signed certificate (DER) for x5c/x5t
	Created   time.Time `json:"created"`
	SignsFrom time.Time `json:"signsFrom,omitempty"`
	RetiredAt time.Time `json:"retiredAt,omitempty"`
}

// Store is the bbolt-backed state. The zero value is not usable; use Open.
type Store struct {
	db *bolt.DB
}

// Open opens (creating if needed) the state file with mode 0600.
func Open(path string) (*Store, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("open state %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketTenants, bucketPrincipals, bucketARMIndex, bucketRoles, bucketKeys, bucketBlobs} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("init state %s: %w", path, err)
	}
	return &Store{db: db}, nil
}

// Close closes the file.
func (s *Store) Close() error { return s.db.Close() }

func get[T any](tx *bolt.Tx, bucket []byte, key string) (*T, error) {
	raw := tx.Bucket(bucket).Get([]byte(key))
	if raw == nil {
		return nil, ErrNotFound
	}
	v := new(T)
	if err := json.Unmarshal(raw, v); err != nil {
		return nil, fmt.Errorf("decode %s/%s: %w", bucket, key, err)
	}
	return v, nil
}

func put(tx *bolt.Tx, bucket []byte, key string, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s/%s: %w", bucket, key, err)
	}
	return tx.Bucket(bucket).Put([]byte(key), raw)
}

func list[T any](tx *bolt.Tx, bucket []byte) ([]T, error) {
	var out []T
	err := tx.Bucket(bucket).ForEach(func(k, raw []byte) error {
		var v T
		if err := json.Unmarshal(raw, &v); err != nil {
			return fmt.Errorf("decode %s/%s: %w", bucket, k, err)
		}
		out = append(out, v)
		return nil
	})
	return out, err
}

// PutTenant creates or replaces a tenant.
func (s *Store) PutTenant(t Tenant) error {
	return s.db.Update(func(tx *bolt.Tx) error { return put(tx, bucketTenants, t.ID, t) })
}

// Tenants lists all tenants.
func (s *Store) Tenants() ([]Tenant, error) {
	var out []Tenant
	err := s.db.View(func(tx *bolt.Tx) (err error) { out, err = list[Tenant](tx, bucketTenants); return })
	return out, err
}

// Principal returns the principal with the client id.
func (s *Store) Principal(clientID string) (*Principal, error) {
	var p *Principal
	err := s.db.View(func(tx *bolt.Tx) (err error) { p, err = get[Principal](tx, bucketPrincipals, clientID); return })
	return p, err
}

// Principals lists principals of a tenant (all tenants when tenantID is "").
func (s *Store) Principals(tenantID string) ([]Principal, error) {
	var all []Principal
	err := s.db.View(func(tx *bolt.Tx) (err error) { all, err = list[Principal](tx, bucketPrincipals); return })
	if err != nil {
		return nil, err
	}
	out := all[:0]
	for _, p := range all {
		if tenantID == "" || p.TenantID == tenantID {
			out = append(out, p)
		}
	}
	return out, nil
}

// UpdatePrincipal runs fn on the current record (nil if absent) inside one
// transaction and stores what it returns. fn returning nil deletes the record.
// The ARM index follows ResourceID.
func (s *Store) UpdatePrincipal(clientID string, fn func(cur *Principal) (*Principal, error)) (*Principal, error) {
	var out *Principal
	err := s.db.Update(func(tx *bolt.Tx) error {
		cur, err := get[Principal](tx, bucketPrincipals, clientID)
		if err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
		next, err := fn(cur)
		if err != nil {
			return err
		}
		if cur != nil && cur.ResourceID != "" && (next == nil || !strings.EqualFold(next.ResourceID, cur.ResourceID)) {
			if err := tx.Bucket(bucketARMIndex).Delete([]byte(strings.ToLower(cur.ResourceID))); err != nil {
				return err
			}
		}
		if next == nil {
			out = nil
			return tx.Bucket(bucketPrincipals).Delete([]byte(clientID))
		}
		if next.ClientID != clientID {
			return fmt.Errorf("principal client id changed from %q to %q", clientID, next.ClientID)
		}
		if next.ResourceID != "" {
			key := []byte(strings.ToLower(next.ResourceID))
			if owner := tx.Bucket(bucketARMIndex).Get(key); owner != nil && string(owner) != clientID {
				return fmt.Errorf("resource %s already belongs to client %s", next.ResourceID, owner)
			}
			if err := tx.Bucket(bucketARMIndex).Put(key, []byte(clientID)); err != nil {
				return err
			}
		}
		out = next
		return put(tx, bucketPrincipals, clientID, next)
	})
	return out, err
}

// PrincipalByResourceID finds an identity by its ARM resource id
// (case-insensitive, as ARM ids are).
func (s *Store) PrincipalByResourceID(resourceID string) (*Principal, error) {
	var p *Principal
	err := s.db.View(func(tx *bolt.Tx) (err error) {
		owner := tx.Bucket(bucketARMIndex).Get([]byte(strings.ToLower(resourceID)))
		if owner == nil {
			return ErrNotFound
		}
		p, err = get[Principal](tx, bucketPrincipals, string(owner))
		return err
	})
	return p, err
}

// IdentitiesUnder lists identities whose resource id starts with prefix
// (case-insensitive), sorted by resource id.
func (s *Store) IdentitiesUnder(prefix string) ([]Principal, error) {
	prefix = strings.ToLower(prefix)
	var out []Principal
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketARMIndex).Cursor()
		for k, v := c.Seek([]byte(prefix)); k != nil && strings.HasPrefix(string(k), prefix); k, v = c.Next() {
			p, err := get[Principal](tx, bucketPrincipals, string(v))
			if err != nil {
				return err
			}
			out = append(out, *p)
		}
		return nil
	})
	return out, err
}

// PutRoleAssignment creates or replaces a role assignment.
func (s *Store) PutRoleAssignment(r RoleAssignment) error {
	return s.db.Update(func(tx *bolt.Tx) error { return put(tx, bucketRoles, r.ID, r) })
}

// DeleteRoleAssignment removes a role assignment.
func (s *Store) DeleteRoleAssignment(id string) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketRoles).Get([]byte(id)) == nil {
			return ErrNotFound
		}
		return tx.Bucket(bucketRoles).Delete([]byte(id))
	})
}

// RoleAssignments lists role assignments of a tenant ("" for all).
func (s *Store) RoleAssignments(tenantID string) ([]RoleAssignment, error) {
	var all []RoleAssignment
	err := s.db.View(func(tx *bolt.Tx) (err error) { all, err = list[RoleAssignment](tx, bucketRoles); return })
	if err != nil {
		return nil, err
	}
	out := all[:0]
	for _, r := range all {
		if tenantID == "" || r.TenantID == tenantID {
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// SigningKeys returns all stored signing keys, oldest first.
func (s *Store) SigningKeys() ([]SigningKey, error) {
	var out []SigningKey
	err := s.db.View(func(tx *bolt.Tx) (err error) { out, err = list[SigningKey](tx, bucketKeys); return })
	sort.Slice(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out, err
}

// ReplaceSigningKeys atomically replaces the set of signing keys, so a
// rotation (add new, retire old, prune expired) is one transaction.
func (s *Store) ReplaceSigningKeys(keys []SigningKey) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		if err := tx.DeleteBucket(bucketKeys); err != nil {
			return err
		}
		if _, err := tx.CreateBucket(bucketKeys); err != nil {
			return err
		}
		for _, k := range keys {
			if err := put(tx, bucketKeys, k.KID, k); err != nil {
				return err
			}
		}
		return nil
	})
}

// Blob returns an opaque value (TLS material) or ErrNotFound.
func (s *Store) Blob(name string) ([]byte, error) {
	var out []byte
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketBlobs).Get([]byte(name))
		if v == nil {
			return ErrNotFound
		}
		out = append([]byte(nil), v...)
		return nil
	})
	return out, err
}

// PutBlob stores an opaque value.
func (s *Store) PutBlob(name string, v []byte) error {
	return s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketBlobs).Put([]byte(name), v) })
}
