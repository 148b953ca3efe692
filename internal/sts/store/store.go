package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// ErrNotFound is returned when a record does not exist.
var ErrNotFound = errors.New("not found")

// ErrConflict is returned when a write would break a uniqueness rule the
// store enforces (a tenant name owned by another tenant).
var ErrConflict = errors.New("conflict")

var (
	bucketTenants    = []byte("tenants")
	bucketPrincipals = []byte("principals")
	bucketARMIndex   = []byte("armindex")
	bucketSubs       = []byte("subscriptions") // subscription id → tenant id
	bucketRoles      = []byte("roles")
	bucketRBAC       = []byte("rbac") // Azure role assignments by name
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
	// ClaimsMatchingExpression replaces Subject in a flexible federated
	// credential (Entra's claimsMatchingExpression): exactly one is set.
	ClaimsMatchingExpression *ClaimsMatchingExpression `json:"claimsMatchingExpression,omitempty"`
}

// ClaimsMatchingExpression is a flexible federated credential's expression
// (package claimsexpr).
type ClaimsMatchingExpression struct {
	Value           string `json:"value"`
	LanguageVersion int    `json:"languageVersion"`
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

// RoleAssignment is an app-role assignment (Entra): it grants Role on the
// application Resource to a principal, and the role appears in the roles
// claim of that resource's tokens. Azure RBAC is RBACAssignment.
type RoleAssignment struct {
	ID        string `json:"id"`
	TenantID  string `json:"tenantId"`
	Principal string `json:"principal"` // client id
	Resource  string `json:"resource"`
	Role      string `json:"role"`
}

// RBACAssignment is an Azure role assignment
// (Microsoft.Authorization/roleAssignments): the role definition RoleID
// granted to the principal with object id PrincipalID at Scope.
type RBACAssignment struct {
	Name          string    `json:"name"` // a GUID, lower case; unique in the store
	TenantID      string    `json:"tenantId"`
	Scope         string    `json:"scope"`            // canonical ARM scope (rbac.Scope.String)
	RoleID        string    `json:"roleDefinitionId"` // role definition GUID
	PrincipalID   string    `json:"principalId"`      // object id
	PrincipalType string    `json:"principalType"`
	Description   string    `json:"description,omitempty"`
	CreatedOn     time.Time `json:"createdOn"`
	CreatedBy     string    `json:"createdBy,omitempty"` // object id of the caller
}

// Errors of role assignment writes.
var (
	// ErrPrincipalNotFound: no principal with the object id in the tenant.
	ErrPrincipalNotFound = errors.New("principal not found")
	// ErrAssignmentExists: the same role is already assigned to the same
	// principal at the same scope, under another name.
	ErrAssignmentExists = errors.New("role assignment exists")
	// ErrAssignmentImmutable: an assignment of that name exists with
	// another tenant, scope, role or principal (assignments never change).
	ErrAssignmentImmutable = errors.New("role assignment cannot be changed")
)

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
		for _, b := range [][]byte{bucketTenants, bucketPrincipals, bucketARMIndex, bucketSubs, bucketRoles, bucketRBAC, bucketKeys, bucketBlobs} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return vaultBuckets(tx)
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
	_, err := s.UpdateTenant(t.ID, func(*Tenant) (*Tenant, error) { return &t, nil })
	return err
}

// UpdateTenant runs fn on the current tenant (nil if absent) and stores what
// it returns, in one transaction. Tenant names are unique: a domain of the
// result that is another tenant's id or domain (case-insensitively) is
// refused with ErrConflict (names already on the tenant are not rechecked), checked inside the same transaction so two
// concurrent writers cannot both claim a name.
func (s *Store) UpdateTenant(id string, fn func(cur *Tenant) (*Tenant, error)) (*Tenant, error) {
	var out *Tenant
	err := s.db.Update(func(tx *bolt.Tx) error {
		cur, err := get[Tenant](tx, bucketTenants, id)
		if err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
		next, err := fn(cur)
		if err != nil {
			return err
		}
		if next.ID != id {
			return fmt.Errorf("tenant id changed from %q to %q", id, next.ID)
		}
		others, err := list[Tenant](tx, bucketTenants)
		if err != nil {
			return err
		}
		// Only names this write adds are checked, so a tenant whose state
		// predates the rule can still be rewritten with what it had.
		var added []string
		if cur == nil {
			added = append(added, next.ID)
		}
		for _, d := range next.Domains {
			if cur == nil || !slices.ContainsFunc(cur.Domains, func(c string) bool { return strings.EqualFold(c, d) }) {
				added = append(added, d)
			}
		}
		for _, o := range others {
			if o.ID == id {
				continue
			}
			for _, d := range added {
				if strings.EqualFold(d, o.ID) || slices.ContainsFunc(o.Domains, func(od string) bool { return strings.EqualFold(od, d) }) {
					return fmt.Errorf("%w: %q is a name of another tenant", ErrConflict, d)
				}
			}
		}
		out = next
		return put(tx, bucketTenants, id, next)
	})
	return out, err
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
			if err := bindSubscription(tx, subscriptionOf(next.ResourceID), next.TenantID); err != nil {
				return err
			}
			key := []byte(strings.ToLower(next.ResourceID))
			if owner := tx.Bucket(bucketARMIndex).Get(key); owner != nil && string(owner) != clientID {
				return fmt.Errorf("%w: resource %s already belongs to client %s", ErrConflict, next.ResourceID, owner)
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

// DeletePrincipal removes a principal, its ARM index entry and every role
// assignment naming it, in one transaction: a crash never leaves role
// assignments of a deleted principal behind for a later one with the same
// client id to inherit.
func (s *Store) DeletePrincipal(clientID string) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		cur, err := get[Principal](tx, bucketPrincipals, clientID)
		if err != nil {
			return err
		}
		if cur.ResourceID != "" {
			if err := tx.Bucket(bucketARMIndex).Delete([]byte(strings.ToLower(cur.ResourceID))); err != nil {
				return err
			}
		}
		if err := tx.Bucket(bucketPrincipals).Delete([]byte(clientID)); err != nil {
			return err
		}
		ras, err := list[RoleAssignment](tx, bucketRoles)
		if err != nil {
			return err
		}
		for _, ra := range ras {
			if ra.Principal == clientID {
				if err := tx.Bucket(bucketRoles).Delete([]byte(ra.ID)); err != nil {
					return err
				}
			}
		}
		rbac, err := list[RBACAssignment](tx, bucketRBAC)
		if err != nil {
			return err
		}
		for _, a := range rbac {
			if a.PrincipalID == cur.ObjectID && a.TenantID == cur.TenantID {
				if err := tx.Bucket(bucketRBAC).Delete([]byte(a.Name)); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// subscriptionOf returns the lower-case subscription id of an ARM resource
// id ("/subscriptions/{id}/…"), or "".
func subscriptionOf(resourceID string) string {
	rest, ok := strings.CutPrefix(strings.ToLower(resourceID), "/subscriptions/")
	if !ok {
		return ""
	}
	sub, _, _ := strings.Cut(rest, "/")
	return sub
}

// subscriptionTenant returns the tenant a subscription belongs to: its
// binding, or for state written before bindings existed, the tenant of the
// identities already in it ("" when it has none).
func subscriptionTenant(tx *bolt.Tx, sub string) (string, error) {
	if owner := tx.Bucket(bucketSubs).Get([]byte(sub)); owner != nil {
		return string(owner), nil
	}
	prefix := "/subscriptions/" + sub + "/"
	// The first identity under the subscription is enough: they all share a tenant.
	k, v := tx.Bucket(bucketARMIndex).Cursor().Seek([]byte(prefix))
	if k == nil || !strings.HasPrefix(string(k), prefix) {
		return "", nil
	}
	p, err := get[Principal](tx, bucketPrincipals, string(v))
	if err != nil {
		return "", err
	}
	return p.TenantID, nil
}

// bindSubscription records that sub belongs to tenant, or refuses with
// ErrConflict when it belongs to another: as in Azure, a subscription
// trusts exactly one tenant, the one that first put an identity in it.
func bindSubscription(tx *bolt.Tx, sub, tenant string) error {
	if sub == "" {
		return fmt.Errorf("resource id names no subscription")
	}
	owner, err := subscriptionTenant(tx, sub)
	if err != nil {
		return err
	}
	if owner != "" && owner != tenant {
		return fmt.Errorf("%w: subscription %s belongs to another tenant", ErrConflict, sub)
	}
	return tx.Bucket(bucketSubs).Put([]byte(sub), []byte(tenant))
}

// SubscriptionTenant returns the tenant a subscription belongs to, or ""
// when no tenant has put an identity in it yet.
func (s *Store) SubscriptionTenant(sub string) (string, error) {
	var out string
	err := s.db.View(func(tx *bolt.Tx) (err error) { out, err = subscriptionTenant(tx, strings.ToLower(sub)); return })
	return out, err
}

// Subscriptions returns the ids of the subscriptions tenantID owns (bound,
// or holding its identities in state written before bindings), sorted.
func (s *Store) Subscriptions(tenantID string) ([]string, error) {
	seen := map[string]bool{}
	err := s.db.View(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketSubs).ForEach(func(k, v []byte) error {
			if string(v) == tenantID {
				seen[string(k)] = true
			}
			return nil
		}); err != nil {
			return err
		}
		return tx.Bucket(bucketARMIndex).ForEach(func(k, _ []byte) error {
			sub := subscriptionOf(string(k))
			if sub == "" || seen[sub] || tx.Bucket(bucketSubs).Get([]byte(sub)) != nil {
				return nil
			}
			owner, err := subscriptionTenant(tx, sub)
			if err == nil && owner == tenantID {
				seen[sub] = true
			}
			return err
		})
	})
	out := make([]string, 0, len(seen))
	for sub := range seen {
		out = append(out, sub)
	}
	slices.Sort(out)
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

// PutRoleAssignment creates or replaces a role assignment. The principal it
// names must exist in the assignment's tenant, checked in the same
// transaction (ErrNotFound otherwise), so an assignment racing the
// principal's deletion cannot outlive it.
func (s *Store) PutRoleAssignment(r RoleAssignment) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		p, err := get[Principal](tx, bucketPrincipals, r.Principal)
		if err != nil {
			return fmt.Errorf("principal %s: %w", r.Principal, err)
		}
		if p.TenantID != r.TenantID {
			return fmt.Errorf("principal %s in tenant %s: %w", r.Principal, r.TenantID, ErrNotFound)
		}
		return put(tx, bucketRoles, r.ID, r)
	})
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

// PutRBACAssignment stores a new role assignment, checked in the same
// transaction: the principal (object id) exists in a.TenantID
// (ErrPrincipalNotFound); the scope's subscription, if any, belongs to the
// tenant (binding it when no tenant has it yet; ErrConflict otherwise); no
// other assignment gives the same role to the same principal at the same
// scope (ErrAssignmentExists). An assignment of the same name that is
// identical is returned with created false; one that differs is
// ErrAssignmentImmutable.
func (s *Store) PutRBACAssignment(a RBACAssignment) (RBACAssignment, bool, error) {
	created := false
	err := s.db.Update(func(tx *bolt.Tx) error {
		ps, err := list[Principal](tx, bucketPrincipals)
		if err != nil {
			return err
		}
		if !slices.ContainsFunc(ps, func(p Principal) bool { return p.ObjectID == a.PrincipalID && p.TenantID == a.TenantID }) {
			return ErrPrincipalNotFound
		}
		if sub := subscriptionOf(a.Scope); sub != "" {
			if err := bindSubscription(tx, sub, a.TenantID); err != nil {
				return err
			}
		}
		same := func(o RBACAssignment) bool {
			return o.TenantID == a.TenantID && o.PrincipalID == a.PrincipalID && o.RoleID == a.RoleID && strings.EqualFold(o.Scope, a.Scope)
		}
		if cur, err := get[RBACAssignment](tx, bucketRBAC, a.Name); err == nil {
			if !same(*cur) {
				return ErrAssignmentImmutable
			}
			a = *cur
			return nil
		} else if !errors.Is(err, ErrNotFound) {
			return err
		}
		all, err := list[RBACAssignment](tx, bucketRBAC)
		if err != nil {
			return err
		}
		if i := slices.IndexFunc(all, same); i >= 0 {
			return fmt.Errorf("%w: %s", ErrAssignmentExists, all[i].Name)
		}
		created = true
		return put(tx, bucketRBAC, a.Name, a)
	})
	return a, created, err
}

// RBACAssignment returns the role assignment with the name.
func (s *Store) RBACAssignment(name string) (*RBACAssignment, error) {
	var a *RBACAssignment
	err := s.db.View(func(tx *bolt.Tx) (err error) { a, err = get[RBACAssignment](tx, bucketRBAC, name); return })
	return a, err
}

// DeleteRBACAssignment removes a role assignment (ErrNotFound if absent).
func (s *Store) DeleteRBACAssignment(name string) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketRBAC).Get([]byte(name)) == nil {
			return ErrNotFound
		}
		return tx.Bucket(bucketRBAC).Delete([]byte(name))
	})
}

// RBACAssignments lists the role assignments of a tenant ("" for all),
// sorted by scope, then name.
func (s *Store) RBACAssignments(tenantID string) ([]RBACAssignment, error) {
	var all []RBACAssignment
	err := s.db.View(func(tx *bolt.Tx) (err error) { all, err = list[RBACAssignment](tx, bucketRBAC); return })
	if err != nil {
		return nil, err
	}
	out := all[:0]
	for _, a := range all {
		if tenantID == "" || a.TenantID == tenantID {
			out = append(out, a)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if ki, kj := strings.ToLower(out[i].Scope), strings.ToLower(out[j].Scope); ki != kj {
			return ki < kj
		}
		return out[i].Name < out[j].Name
	})
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
