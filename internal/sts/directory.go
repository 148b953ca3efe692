package sts

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/podid/podid/internal/sts/store"
)

// Errors of directory writes; the HTTP layers map them to status codes.
var (
	ErrNotFound = store.ErrNotFound
	ErrConflict = errors.New("conflict")
	ErrInvalid  = errors.New("invalid")
)

// Limits from docs/contracts.md §3.
const (
	MaxFICsPerPrincipal = 20
	MaxFICFieldLen      = 600
	DefaultFICAudience  = "api://AzureADTokenExchange"
)

var (
	nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{2,119}$`)
	armRE  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.()-]{0,127}$`)
	idRE   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{2,127}$`)
)

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// IdentityResourceID is the ARM id of a user-assigned identity.
func IdentityResourceID(sub, rg, name string) string {
	return "/subscriptions/" + sub + "/resourcegroups/" + rg + "/providers/Microsoft.ManagedIdentity/userAssignedIdentities/" + name
}

// PutTenant creates or updates a tenant (domains are merged).
func (s *Server) PutTenant(ctx context.Context, id string, domains []string) error {
	if !guidRE.MatchString(id) {
		return invalid("tenant id %q is not a GUID", id)
	}
	id = strings.ToLower(id)
	t, _ := s.tenant(id)
	t.ID = id
	for _, d := range domains {
		if !slices.Contains(t.Domains, d) {
			t.Domains = append(t.Domains, d)
		}
	}
	if err := s.store.PutTenant(t); err != nil {
		return fmt.Errorf("put tenant: %w", err)
	}
	return s.reloadTenants()
}

// Application is what PutApplication sets on an app registration.
type Application struct {
	ClientID           string // generated when empty
	ObjectID           string // generated when empty (kept once set)
	DisplayName        string
	IdentifierURIs     []string
	AccessTokenVersion int // 1 (default) or 2
}

// PutApplication creates or updates an app registration; it reports whether
// it was created.
func (s *Server) PutApplication(ctx context.Context, tenantID string, a Application) (*store.Principal, bool, error) {
	if _, ok := s.tenant(tenantID); !ok {
		return nil, false, fmt.Errorf("%w: tenant %s", ErrNotFound, tenantID)
	}
	if a.ClientID == "" {
		a.ClientID = newGUID()
	}
	if !guidRE.MatchString(a.ClientID) || (a.ObjectID != "" && !guidRE.MatchString(a.ObjectID)) {
		return nil, false, invalid("client and object ids must be GUIDs")
	}
	if a.AccessTokenVersion != 0 && a.AccessTokenVersion != 1 && a.AccessTokenVersion != 2 {
		return nil, false, invalid("accessTokenVersion must be 1 or 2")
	}
	for _, u := range a.IdentifierURIs {
		if len(u) == 0 || len(u) > MaxFICFieldLen {
			return nil, false, invalid("identifier URI length must be 1..%d", MaxFICFieldLen)
		}
	}
	created := false
	p, err := s.store.UpdatePrincipal(strings.ToLower(a.ClientID), func(cur *store.Principal) (*store.Principal, error) {
		if cur == nil {
			created = true
			oid := a.ObjectID
			if oid == "" {
				oid = newGUID()
			}
			cur = &store.Principal{TenantID: tenantID, ClientID: strings.ToLower(a.ClientID), ObjectID: strings.ToLower(oid), Kind: store.KindApplication}
		}
		if cur.Kind != store.KindApplication || cur.TenantID != tenantID {
			return nil, fmt.Errorf("%w: client id %s is used by another principal", ErrConflict, a.ClientID)
		}
		if a.ObjectID != "" && !strings.EqualFold(a.ObjectID, cur.ObjectID) {
			return nil, fmt.Errorf("%w: object id of %s cannot change", ErrConflict, a.ClientID)
		}
		cur.DisplayName = a.DisplayName
		cur.IdentifierURIs = a.IdentifierURIs
		cur.AccessTokenVersion = a.AccessTokenVersion
		return cur, nil
	})
	if err != nil {
		return nil, false, err
	}
	return p, created, s.reindex()
}

// DeletePrincipal deletes an app registration or identity and its role
// assignments.
func (s *Server) DeletePrincipal(ctx context.Context, clientID string) error {
	_, err := s.store.UpdatePrincipal(clientID, func(cur *store.Principal) (*store.Principal, error) {
		if cur == nil {
			return nil, ErrNotFound
		}
		return nil, nil
	})
	if err != nil {
		return err
	}
	ras, err := s.store.RoleAssignments("")
	if err != nil {
		return err
	}
	for _, ra := range ras {
		if ra.Principal == clientID {
			if err := s.store.DeleteRoleAssignment(ra.ID); err != nil {
				return err
			}
		}
	}
	return s.reindex()
}

// AddSecret registers a client secret (stored salted-hashed). If the value
// is already registered it returns the existing id, so bootstrap is
// idempotent. A zero expires means no expiry.
func (s *Server) AddSecret(ctx context.Context, clientID, displayName, value string, expires time.Time) (string, error) {
	if len(value) < 16 || len(value) > 512 {
		return "", invalid("client secret length must be 16..512")
	}
	var id string
	_, err := s.store.UpdatePrincipal(clientID, func(cur *store.Principal) (*store.Principal, error) {
		if cur == nil {
			return nil, ErrNotFound
		}
		if cur.Kind != store.KindApplication {
			return nil, invalid("managed identities have no secrets")
		}
		for _, sec := range cur.Secrets {
			if subtle.ConstantTimeCompare(hashSecret(sec.Salt, value), sec.Hash) == 1 {
				id = sec.ID
				return cur, nil
			}
		}
		if len(cur.Secrets) >= 16 {
			return nil, invalid("at most 16 secrets per application")
		}
		salt := make([]byte, 16)
		_, _ = rand.Read(salt)
		id = newGUID()
		cur.Secrets = append(cur.Secrets, store.Secret{ID: id, DisplayName: displayName, Hint: value[:3], Salt: salt, Hash: hashSecret(salt, value), Expires: expires})
		return cur, nil
	})
	return id, err
}

// GenerateSecret creates a random secret, registers it and returns id and
// value. The value is returned once and never stored.
func (s *Server) GenerateSecret(ctx context.Context, clientID, displayName string, expires time.Time) (id, value string, err error) {
	b := make([]byte, 30)
	_, _ = rand.Read(b)
	value = strings.NewReplacer("-", "~", "_", ".").Replace(base64URL(b))
	id, err = s.AddSecret(ctx, clientID, displayName, value, expires)
	return id, value, err
}

// DeleteSecret removes a secret by id.
func (s *Server) DeleteSecret(ctx context.Context, clientID, id string) error {
	_, err := s.store.UpdatePrincipal(clientID, func(cur *store.Principal) (*store.Principal, error) {
		if cur == nil {
			return nil, ErrNotFound
		}
		i := slices.IndexFunc(cur.Secrets, func(x store.Secret) bool { return x.ID == id })
		if i < 0 {
			return nil, ErrNotFound
		}
		cur.Secrets = slices.Delete(cur.Secrets, i, i+1)
		return cur, nil
	})
	return err
}

// AddCertificate registers a public certificate (DER or PEM) for
// certificate-based client assertions. Idempotent on the certificate.
func (s *Server) AddCertificate(ctx context.Context, clientID string, certData []byte) (string, error) {
	der := certData
	if b, _ := pem.Decode(certData); b != nil {
		if b.Type != "CERTIFICATE" {
			return "", invalid("PEM block is %q, want CERTIFICATE", b.Type)
		}
		der = b.Bytes
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return "", invalid("certificate: %v", err)
	}
	sum := sha256.Sum256(cert.Raw)
	id := hex.EncodeToString(sum[:])
	_, err = s.store.UpdatePrincipal(clientID, func(cur *store.Principal) (*store.Principal, error) {
		if cur == nil {
			return nil, ErrNotFound
		}
		if cur.Kind != store.KindApplication {
			return nil, invalid("managed identities have no certificates")
		}
		if slices.ContainsFunc(cur.Certificates, func(c store.Certificate) bool { return c.ID == id }) {
			return cur, nil
		}
		if len(cur.Certificates) >= 16 {
			return nil, invalid("at most 16 certificates per application")
		}
		cur.Certificates = append(cur.Certificates, store.Certificate{ID: id, DER: cert.Raw})
		return cur, nil
	})
	return id, err
}

// DeleteCertificate removes a certificate by id (its SHA-256 thumbprint, hex).
func (s *Server) DeleteCertificate(ctx context.Context, clientID, id string) error {
	_, err := s.store.UpdatePrincipal(clientID, func(cur *store.Principal) (*store.Principal, error) {
		if cur == nil {
			return nil, ErrNotFound
		}
		i := slices.IndexFunc(cur.Certificates, func(x store.Certificate) bool { return x.ID == id })
		if i < 0 {
			return nil, ErrNotFound
		}
		cur.Certificates = slices.Delete(cur.Certificates, i, i+1)
		return cur, nil
	})
	return err
}

// Identity is what PutIdentity sets on a user-assigned managed identity.
type Identity struct {
	TenantID      string
	Subscription  string
	ResourceGroup string
	Name          string
	Location      string
	Tags          map[string]string
	ClientID      string // generated when empty
	PrincipalID   string // generated when empty
}

// PutIdentity creates or updates a user-assigned identity; ids never change
// once created. It reports whether it was created.
func (s *Server) PutIdentity(ctx context.Context, id Identity) (*store.Principal, bool, error) {
	if _, ok := s.tenant(id.TenantID); !ok {
		return nil, false, fmt.Errorf("%w: tenant %s", ErrNotFound, id.TenantID)
	}
	if !guidRE.MatchString(id.Subscription) {
		return nil, false, invalid("subscription id %q is not a GUID", id.Subscription)
	}
	if !armRE.MatchString(id.ResourceGroup) || len(id.ResourceGroup) > 90 {
		return nil, false, invalid("resource group name %q is invalid", id.ResourceGroup)
	}
	if !idRE.MatchString(id.Name) {
		return nil, false, invalid("identity name %q must be 3-128 characters of letters, digits, '-' and '_', starting with a letter or digit", id.Name)
	}
	if len(id.Location) > 64 || len(id.Tags) > 50 {
		return nil, false, invalid("location or tags too long")
	}
	if (id.ClientID != "" && !guidRE.MatchString(id.ClientID)) || (id.PrincipalID != "" && !guidRE.MatchString(id.PrincipalID)) {
		return nil, false, invalid("client and principal ids must be GUIDs")
	}
	rid := IdentityResourceID(id.Subscription, id.ResourceGroup, id.Name)
	existing, err := s.store.PrincipalByResourceID(rid)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, false, err
	}
	clientID := strings.ToLower(id.ClientID)
	if existing != nil {
		if clientID != "" && clientID != existing.ClientID {
			return nil, false, fmt.Errorf("%w: identity %s already has client id %s", ErrConflict, rid, existing.ClientID)
		}
		clientID = existing.ClientID
	}
	if clientID == "" {
		clientID = newGUID()
	}
	created := false
	p, err := s.store.UpdatePrincipal(clientID, func(cur *store.Principal) (*store.Principal, error) {
		if cur == nil {
			created = true
			oid := strings.ToLower(id.PrincipalID)
			if oid == "" {
				oid = newGUID()
			}
			cur = &store.Principal{TenantID: id.TenantID, ClientID: clientID, ObjectID: oid, Kind: store.KindIdentity, ResourceID: rid}
		}
		if cur.Kind != store.KindIdentity || !strings.EqualFold(cur.ResourceID, rid) {
			return nil, fmt.Errorf("%w: client id %s is used by another principal", ErrConflict, clientID)
		}
		if id.PrincipalID != "" && !strings.EqualFold(id.PrincipalID, cur.ObjectID) {
			return nil, fmt.Errorf("%w: principal id of %s cannot change", ErrConflict, rid)
		}
		cur.DisplayName = id.Name
		cur.Location = id.Location
		cur.Tags = id.Tags
		return cur, nil
	})
	if err != nil {
		return nil, false, err
	}
	return p, created, s.reindex()
}

// validateFIC applies docs/contracts.md §3 to one credential.
func validateFIC(f *store.FederatedCredential) error {
	if !nameRE.MatchString(f.Name) {
		return invalid("federated credential name %q must be 3-120 characters of letters, digits, '-' and '_', starting with a letter or digit", f.Name)
	}
	if len(f.Audiences) == 0 {
		f.Audiences = []string{DefaultFICAudience}
	}
	if len(f.Audiences) != 1 {
		return invalid("exactly one audience is allowed")
	}
	for field, v := range map[string]string{"issuer": f.Issuer, "subject": f.Subject, "audience": f.Audiences[0]} {
		if v == "" || len(v) > MaxFICFieldLen {
			return invalid("%s must be 1..%d characters", field, MaxFICFieldLen)
		}
	}
	u, err := url.Parse(f.Issuer)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return invalid("issuer must be an https URL")
	}
	return nil
}

// PutFederatedCredential creates or replaces a federated identity credential
// of an identity or app (by client id). Issuer+subject must be unique per
// principal (ErrConflict); at most MaxFICsPerPrincipal.
func (s *Server) PutFederatedCredential(ctx context.Context, clientID string, f store.FederatedCredential) (bool, error) {
	if err := validateFIC(&f); err != nil {
		return false, err
	}
	created := false
	_, err := s.store.UpdatePrincipal(clientID, func(cur *store.Principal) (*store.Principal, error) {
		if cur == nil {
			return nil, ErrNotFound
		}
		i := slices.IndexFunc(cur.FederatedCreds, func(x store.FederatedCredential) bool { return strings.EqualFold(x.Name, f.Name) })
		for j, x := range cur.FederatedCreds {
			if j != i && x.Issuer == f.Issuer && x.Subject == f.Subject {
				return nil, fmt.Errorf("%w: federated credential %q already has issuer %q and subject %q", ErrConflict, x.Name, f.Issuer, f.Subject)
			}
		}
		if i >= 0 {
			f.Name = cur.FederatedCreds[i].Name
			cur.FederatedCreds[i] = f
			return cur, nil
		}
		if len(cur.FederatedCreds) >= MaxFICsPerPrincipal {
			return nil, invalid("at most %d federated identity credentials per identity", MaxFICsPerPrincipal)
		}
		created = true
		cur.FederatedCreds = append(cur.FederatedCreds, f)
		return cur, nil
	})
	return created, err
}

// DeleteFederatedCredential removes a federated identity credential by name.
func (s *Server) DeleteFederatedCredential(ctx context.Context, clientID, name string) error {
	_, err := s.store.UpdatePrincipal(clientID, func(cur *store.Principal) (*store.Principal, error) {
		if cur == nil {
			return nil, ErrNotFound
		}
		i := slices.IndexFunc(cur.FederatedCreds, func(x store.FederatedCredential) bool { return strings.EqualFold(x.Name, name) })
		if i < 0 {
			return nil, ErrNotFound
		}
		cur.FederatedCreds = slices.Delete(cur.FederatedCreds, i, i+1)
		return cur, nil
	})
	return err
}

// PutRoleAssignment grants role on resource to the principal (client id).
// With an empty id, the id is derived from the content, so repeating the
// call is idempotent.
func (s *Server) PutRoleAssignment(ctx context.Context, ra store.RoleAssignment) (store.RoleAssignment, error) {
	p, err := s.store.Principal(strings.ToLower(ra.Principal))
	if err != nil {
		return ra, fmt.Errorf("principal %s: %w", ra.Principal, err)
	}
	if ra.TenantID == "" {
		ra.TenantID = p.TenantID
	}
	if p.TenantID != ra.TenantID {
		return ra, invalid("principal %s is not in tenant %s", ra.Principal, ra.TenantID)
	}
	if ra.Resource == "" || len(ra.Resource) > MaxFICFieldLen || ra.Role == "" || len(ra.Role) > 120 {
		return ra, invalid("resource and role are required and bounded")
	}
	ra.Principal = p.ClientID
	if ra.ID == "" {
		sum := sha256.Sum256([]byte(ra.TenantID + "|" + ra.Principal + "|" + normResource(ra.Resource) + "|" + ra.Role))
		ra.ID = hex.EncodeToString(sum[:16])
	}
	if err := s.store.PutRoleAssignment(ra); err != nil {
		return ra, err
	}
	return ra, s.reindex()
}

// DeleteRoleAssignment removes a role assignment.
func (s *Server) DeleteRoleAssignment(ctx context.Context, id string) error {
	if err := s.store.DeleteRoleAssignment(id); err != nil {
		return err
	}
	return s.reindex()
}

// Principal returns an app or identity by client id.
func (s *Server) Principal(clientID string) (*store.Principal, error) {
	return s.store.Principal(strings.ToLower(clientID))
}

// Apply applies a bootstrap idempotently: it creates or updates what it
// names and deletes nothing.
func (s *Server) Apply(ctx context.Context, b *Bootstrap) error {
	for _, t := range b.Tenants {
		if err := s.PutTenant(ctx, t.ID, t.Domains); err != nil {
			return fmt.Errorf("bootstrap tenant %s: %w", t.ID, err)
		}
		tid := strings.ToLower(t.ID)
		for _, a := range t.Applications {
			p, _, err := s.PutApplication(ctx, tid, Application{ClientID: a.ClientID, ObjectID: a.ObjectID, DisplayName: a.DisplayName, IdentifierURIs: a.IdentifierURIs, AccessTokenVersion: a.AccessTokenVersion})
			if err != nil {
				return fmt.Errorf("bootstrap application %s: %w", a.ClientID, err)
			}
			for i, sec := range a.Secrets {
				v, err := sec.value()
				if err != nil {
					return fmt.Errorf("bootstrap application %s secret %d: %w", a.ClientID, i, err)
				}
				if _, err := s.AddSecret(ctx, p.ClientID, "bootstrap", v, time.Time{}); err != nil {
					return fmt.Errorf("bootstrap application %s secret %d: %w", a.ClientID, i, err)
				}
			}
			for i, c := range a.Certificates {
				data := []byte(c.PEM)
				if c.File != "" {
					if data, err = os.ReadFile(c.File); err != nil {
						return fmt.Errorf("bootstrap application %s certificate %d: %w", a.ClientID, i, err)
					}
				}
				if _, err := s.AddCertificate(ctx, p.ClientID, data); err != nil {
					return fmt.Errorf("bootstrap application %s certificate %d: %w", a.ClientID, i, err)
				}
			}
			if err := s.applyFICs(ctx, p.ClientID, a.FederatedCreds); err != nil {
				return fmt.Errorf("bootstrap application %s: %w", a.ClientID, err)
			}
		}
		for _, id := range t.Identities {
			p, _, err := s.PutIdentity(ctx, Identity{TenantID: tid, Subscription: id.Subscription, ResourceGroup: id.ResourceGroup, Name: id.Name, Location: id.Location, ClientID: id.ClientID, PrincipalID: id.PrincipalID})
			if err != nil {
				return fmt.Errorf("bootstrap identity %s: %w", id.Name, err)
			}
			if err := s.applyFICs(ctx, p.ClientID, id.FederatedCreds); err != nil {
				return fmt.Errorf("bootstrap identity %s: %w", id.Name, err)
			}
		}
		for _, ra := range t.RoleAssignments {
			if _, err := s.PutRoleAssignment(ctx, store.RoleAssignment{TenantID: tid, Principal: ra.Principal, Resource: ra.Resource, Role: ra.Role}); err != nil {
				return fmt.Errorf("bootstrap role assignment %s/%s: %w", ra.Principal, ra.Role, err)
			}
		}
	}
	return s.reindex()
}

func (s *Server) applyFICs(ctx context.Context, clientID string, fics []BootstrapFederatedIdentity) error {
	for _, f := range fics {
		if _, err := s.PutFederatedCredential(ctx, clientID, store.FederatedCredential{Name: f.Name, Issuer: f.Issuer, Subject: f.Subject, Audiences: f.Audiences}); err != nil {
			return fmt.Errorf("federated credential %s: %w", f.Name, err)
		}
	}
	return nil
}

func (b BootstrapSecret) value() (string, error) {
	switch {
	case b.Value != "":
		return b.Value, nil
	case b.ValueEnv != "":
		v := os.Getenv(b.ValueEnv)
		if v == "" {
			return "", fmt.Errorf("env var %s is empty", b.ValueEnv)
		}
		return v, nil
	case b.File != "":
		raw, err := os.ReadFile(b.File)
		if err != nil {
			return "", err
		}
		return strings.TrimSpace(string(raw)), nil
	}
	return "", errors.New("secret has no value, valueEnv or file")
}
