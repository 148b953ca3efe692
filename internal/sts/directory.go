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
	"log/slog"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/podid/podid/internal/claimsexpr"
	"github.com/podid/podid/internal/rbac"
	"github.com/podid/podid/internal/sts/store"
	"github.com/podid/podid/internal/workloadidentity"
)

// Errors of directory writes; the HTTP layers map them to status codes.
var (
	ErrNotFound = store.ErrNotFound
	ErrConflict = store.ErrConflict
	ErrInvalid  = errors.New("invalid")
)

// Directory is the tenant directory over the store: tenants and their
// names, app registrations, managed identities, their credentials and role
// assignments. Every write is validated here and is one store transaction;
// after it, the in-memory indexes the token path reads (tenant names, and
// resources and roles) are rebuilt. The HTTP layers only translate.
type Directory struct {
	store *store.Store
	log   *slog.Logger
	dir   dirHolder // resources and roles, read lock-free by issuance

	mu      sync.RWMutex            // protects tenants
	tenants map[string]store.Tenant // by lower-case id and domain
}

func newDirectory(st *store.Store, log *slog.Logger) *Directory {
	return &Directory{store: st, log: log, tenants: map[string]store.Tenant{}}
}

// Limits of federated credentials, as Entra enforces them.
const (
	MaxFICsPerPrincipal = workloadidentity.MaxFederatedCredentials
	MaxFICFieldLen      = workloadidentity.MaxFederatedCredentialField
	DefaultFICAudience  = workloadidentity.TokenAudience
)

var (
	nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{2,119}$`)
	armRE  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.()-]{0,127}$`)
	idRE   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{2,127}$`)
)

// invalidError is an ErrInvalid whose text is only the message, so the
// answer carries what Entra would say and nothing of ours.
type invalidError string

func (e invalidError) Error() string        { return string(e) }
func (e invalidError) Is(target error) bool { return target == ErrInvalid }

func invalid(format string, args ...any) error {
	return invalidError(fmt.Sprintf(format, args...))
}

// IdentityResourceID is the ARM id of a user-assigned identity.
func IdentityResourceID(sub, rg, name string) string {
	return "/subscriptions/" + sub + "/resourcegroups/" + rg + "/providers/Microsoft.ManagedIdentity/userAssignedIdentities/" + name
}

// reservedTenantNames are tenant path segments Entra gives a meaning of its
// own; no tenant may own them.
var reservedTenantNames = []string{"common", "organizations", "consumers"}

var dnsLabelRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// validateDomain checks a tenant domain and returns it lower-cased. A domain
// is a DNS name of at least two labels, not an IP address, never a GUID
// (it would shadow a tenant id in the token path) and never a reserved name.
func validateDomain(d string) (string, error) {
	l := strings.ToLower(d)
	switch {
	case guidRE.MatchString(l):
		return "", invalid("domain %q is a GUID; tenant ids cannot be used as domains", d)
	case slices.Contains(reservedTenantNames, l):
		return "", invalid("domain %q is reserved", d)
	case len(l) == 0 || len(l) > 253:
		return "", invalid("domain must be 1..253 characters")
	}
	labels := strings.Split(l, ".")
	if len(labels) < 2 {
		return "", invalid("domain %q must be a DNS name with at least two labels", d)
	}
	for _, lb := range labels {
		if !dnsLabelRE.MatchString(lb) {
			return "", invalid("domain %q is not a DNS name: each label is 1-63 letters, digits or '-', not starting or ending with '-'", d)
		}
	}
	if strings.Trim(labels[len(labels)-1], "0123456789") == "" {
		return "", invalid("domain %q looks like an IP address", d)
	}
	return l, nil
}

// PutTenant creates or updates a tenant (domains are merged). Domains are
// validated and unique across tenants (ErrConflict when another tenant
// owns one); the check and the write are one store transaction.
func (d *Directory) PutTenant(ctx context.Context, id string, domains []string) error {
	if !guidRE.MatchString(id) {
		return invalid("tenant id %q is not a GUID", id)
	}
	if len(domains) > 50 {
		return invalid("at most 50 domains per tenant")
	}
	id = strings.ToLower(id)
	norm := make([]string, 0, len(domains))
	for _, dom := range domains {
		l, err := validateDomain(dom)
		if err != nil {
			return err
		}
		norm = append(norm, l)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	_, err := d.store.UpdateTenant(id, func(cur *store.Tenant) (*store.Tenant, error) {
		t := store.Tenant{ID: id}
		if cur != nil {
			t.Domains = slices.Clone(cur.Domains)
		}
		for _, dom := range norm {
			if !slices.Contains(t.Domains, dom) {
				t.Domains = append(t.Domains, dom)
			}
		}
		if len(t.Domains) > 50 {
			return nil, invalid("at most 50 domains per tenant")
		}
		return &t, nil
	})
	if err != nil {
		return fmt.Errorf("put tenant %s: %w", id, err)
	}
	return d.reloadTenants()
}

// reloadTenants rebuilds the name → tenant index. Ids always name their own
// tenant. A domain resolves only when exactly one tenant owns it and it is a
// valid domain; a name several tenants claim (state written before names
// were checked) resolves to none, loudly, rather than to whichever tenant
// happened to be indexed last.
func (d *Directory) reloadTenants() error {
	ts, err := d.store.Tenants()
	if err != nil {
		return fmt.Errorf("load tenants: %w", err)
	}
	m := make(map[string]store.Tenant, len(ts)*2)
	for _, t := range ts {
		m[strings.ToLower(t.ID)] = t
	}
	claims := map[string][]store.Tenant{}
	for _, t := range ts {
		for _, dom := range t.Domains {
			l, err := validateDomain(dom)
			if err != nil {
				d.log.Error("tenant domain ignored", "tenant", t.ID, "domain", truncate(dom, 64), "err", err)
				continue
			}
			if _, isID := m[l]; isID {
				d.log.Error("tenant domain ignored: it is another tenant's id", "tenant", t.ID, "domain", l)
				continue
			}
			if !slices.ContainsFunc(claims[l], func(o store.Tenant) bool { return o.ID == t.ID }) {
				claims[l] = append(claims[l], t)
			}
		}
	}
	for dom, owners := range claims {
		if len(owners) != 1 {
			ids := make([]string, len(owners))
			for i, o := range owners {
				ids[i] = o.ID
			}
			d.log.Error("tenant domain claimed by several tenants resolves to none", "domain", dom, "tenants", ids)
			continue
		}
		m[dom] = owners[0]
	}
	d.mu.Lock()
	d.tenants = m
	d.mu.Unlock()
	return nil
}

// tenant resolves a tenant path segment (id or domain).
func (d *Directory) tenant(seg string) (store.Tenant, bool) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	t, ok := d.tenants[strings.ToLower(seg)]
	return t, ok
}

// Tenant resolves a tenant by id or domain, as the token paths do.
func (d *Directory) Tenant(seg string) (store.Tenant, bool) { return d.tenant(seg) }

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
func (d *Directory) PutApplication(ctx context.Context, tenantID string, a Application) (*store.Principal, bool, error) {
	if err := ctx.Err(); err != nil {
		return nil, false, err
	}
	if _, ok := d.tenant(tenantID); !ok {
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
	if firstParty(a.ClientID) {
		return nil, false, invalid("client id %s is a Microsoft first-party application's; choose another", a.ClientID)
	}
	for _, u := range a.IdentifierURIs {
		if len(u) == 0 || len(u) > MaxFICFieldLen {
			return nil, false, invalid("identifier URI length must be 1..%d", MaxFICFieldLen)
		}
		if firstParty(u) {
			return nil, false, invalid("identifier URI %q is a Microsoft first-party resource; an application cannot claim it (Entra: HostNameNotOnVerifiedDomain)", truncate(u, 200))
		}
	}
	created := false
	p, err := d.store.UpdatePrincipal(strings.ToLower(a.ClientID), func(cur *store.Principal) (*store.Principal, error) {
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
	return p, created, d.reindex()
}

// DeletePrincipal deletes an app registration or identity and its role
// assignments.
func (d *Directory) DeletePrincipal(ctx context.Context, clientID string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := d.store.DeletePrincipal(clientID); err != nil {
		return err
	}
	return d.reindex()
}

// AddSecret registers a client secret (stored salted-hashed). If the value
// is already registered it returns the existing id, so bootstrap is
// idempotent. A zero expires means no expiry.
func (d *Directory) AddSecret(ctx context.Context, clientID, displayName, value string, expires time.Time) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	if len(value) < 16 || len(value) > 512 {
		return "", invalid("client secret length must be 16..512")
	}
	var id string
	_, err := d.store.UpdatePrincipal(clientID, func(cur *store.Principal) (*store.Principal, error) {
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
func (d *Directory) GenerateSecret(ctx context.Context, clientID, displayName string, expires time.Time) (id, value string, err error) {
	b := make([]byte, 30)
	_, _ = rand.Read(b)
	value = strings.NewReplacer("-", "~", "_", ".").Replace(base64URL(b))
	id, err = d.AddSecret(ctx, clientID, displayName, value, expires)
	return id, value, err
}

// DeleteSecret removes a secret by id.
func (d *Directory) DeleteSecret(ctx context.Context, clientID, id string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	_, err := d.store.UpdatePrincipal(clientID, func(cur *store.Principal) (*store.Principal, error) {
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
func (d *Directory) AddCertificate(ctx context.Context, clientID string, certData []byte) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
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
	_, err = d.store.UpdatePrincipal(clientID, func(cur *store.Principal) (*store.Principal, error) {
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
func (d *Directory) DeleteCertificate(ctx context.Context, clientID, id string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	_, err := d.store.UpdatePrincipal(clientID, func(cur *store.Principal) (*store.Principal, error) {
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
func (d *Directory) PutIdentity(ctx context.Context, id Identity) (*store.Principal, bool, error) {
	if err := ctx.Err(); err != nil {
		return nil, false, err
	}
	if _, ok := d.tenant(id.TenantID); !ok {
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
	existing, err := d.store.PrincipalByResourceID(rid)
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
	p, err := d.store.UpdatePrincipal(clientID, func(cur *store.Principal) (*store.Principal, error) {
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
	return p, created, d.reindex()
}

// validateFIC applies Entra's limits to one credential.
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
	fields := map[string]string{"issuer": f.Issuer, "subject": f.Subject, "audience": f.Audiences[0]}
	if e := f.ClaimsMatchingExpression; e != nil {
		// Entra: subject and claimsMatchingExpression exclude each other.
		if f.Subject != "" {
			return invalid("subject and claimsMatchingExpression are mutually exclusive: set one")
		}
		x, err := claimsexpr.Parse(e.Value, e.LanguageVersion)
		if err != nil {
			return invalid("%v", err)
		}
		e.Value = x.String()
		delete(fields, "subject")
	}
	for field, v := range fields {
		if v == "" || len(v) > MaxFICFieldLen {
			return invalid("%s must be 1..%d characters", field, MaxFICFieldLen)
		}
	}
	return validateIssuerURL(f.Issuer)
}

// validateIssuerURL accepts what can be fetched as an OIDC issuer, as Entra
// does: an absolute https URL with a host and no user-info, query or
// fragment (discovery appends a path, so those could never be fetched, and
// user-info would put a credential into every log line naming the issuer).
func validateIssuerURL(iss string) error {
	u, err := url.Parse(iss)
	switch {
	case strings.ContainsFunc(iss, func(r rune) bool { return r <= ' ' || r == 0x7f }):
		return invalid("issuer %q must not contain spaces or control characters", iss)
	case err != nil || u.Scheme != "https" || u.Opaque != "" || u.Hostname() == "":
		return invalid("issuer %q must be an absolute https URL", iss)
	case u.User != nil:
		return invalid("issuer %q must not contain user information", iss)
	case u.RawQuery != "" || u.ForceQuery:
		return invalid("issuer %q must not contain a query", iss)
	case u.Fragment != "" || strings.Contains(iss, "#"):
		return invalid("issuer %q must not contain a fragment", iss)
	}
	return nil
}

// PutFederatedCredential creates or replaces a federated identity credential
// of an identity or app (by client id). Issuer+subject must be unique per
// principal (ErrInvalid, as Entra answers 400); at most MaxFICsPerPrincipal.
func (d *Directory) PutFederatedCredential(ctx context.Context, clientID string, f store.FederatedCredential) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	if err := validateFIC(&f); err != nil {
		return false, err
	}
	created := false
	_, err := d.store.UpdatePrincipal(clientID, func(cur *store.Principal) (*store.Principal, error) {
		if cur == nil {
			return nil, ErrNotFound
		}
		i := slices.IndexFunc(cur.FederatedCreds, func(x store.FederatedCredential) bool { return strings.EqualFold(x.Name, f.Name) })
		for j, x := range cur.FederatedCreds {
			sameExpr := x.ClaimsMatchingExpression != nil && f.ClaimsMatchingExpression != nil && x.ClaimsMatchingExpression.Value == f.ClaimsMatchingExpression.Value
			if j != i && x.Issuer == f.Issuer && ((x.Subject == f.Subject && f.Subject != "") || sameExpr) {
				// Entra answers 400 here (ARM and Graph alike), not 409.
				if cur.Kind == store.KindIdentity {
					return nil, invalid("Issuer and subject combination already exists for this Managed Identity.")
				}
				return nil, invalid("The combination of issuer and subject must be unique for the application. Issuer %s and Subject: %s already exist.", f.Issuer, f.Subject)
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
func (d *Directory) DeleteFederatedCredential(ctx context.Context, clientID, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	_, err := d.store.UpdatePrincipal(clientID, func(cur *store.Principal) (*store.Principal, error) {
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

// PutRoleAssignment makes an app-role assignment (Entra): role on an
// application registered in the tenant (resource: one of its names) to the
// principal (client id); the role then appears
// in the roles claim of the principal's tokens for that resource. With an
// empty id, the id is derived from the content, so repeating the call is
// idempotent.
//
// Azure Resource Manager has no app roles: its access is Azure RBAC. An
// assignment on the ARM resource (the bootstrap file's way to name the
// administrator, kept for the files users have) is therefore made as the
// Azure role assignment it means: the built-in role of that name at the
// tenant root "/" (PutAzureRoleAssignment), and returned with the Azure
// assignment's name as its id.
func (d *Directory) PutRoleAssignment(ctx context.Context, ra store.RoleAssignment) (store.RoleAssignment, error) {
	if err := ctx.Err(); err != nil {
		return ra, err
	}
	p, err := d.store.Principal(strings.ToLower(ra.Principal))
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
	if normResource(ra.Resource) == ARMResource {
		if _, ok := rbac.ByName(ra.Role); !ok {
			return ra, invalid("role %q on %s is not an Azure built-in role: access to Azure Resource Manager is Azure RBAC (podid role-assignment create --role NAME --scope /subscriptions/…)", truncate(ra.Role, 120), ARMResource)
		}
		a, _, err := d.PutAzureRoleAssignment(ctx, AzureRoleAssignment{TenantID: ra.TenantID, Scope: "/", Role: ra.Role, PrincipalID: p.ObjectID})
		if err != nil && !errors.Is(err, ErrAssignmentExists) { // the same grant under another name is the same grant
			return ra, err
		}
		ra.ID = a.Name
		return ra, nil
	}
	if !d.isApplication(ra.TenantID, ra.Resource) {
		return ra, invalid("%s is not an application registered in tenant %s: app roles exist only on applications. Azure resources (Storage, Key Vault, …) are authorized by Azure role assignments at an ARM scope (podid role-assignment create --role NAME --scope /subscriptions/…)", truncate(ra.Resource, 200), ra.TenantID)
	}
	if ra.ID == "" {
		sum := sha256.Sum256([]byte(ra.TenantID + "|" + ra.Principal + "|" + normResource(ra.Resource) + "|" + ra.Role))
		ra.ID = hex.EncodeToString(sum[:16])
	}
	if err := d.store.PutRoleAssignment(ra); err != nil {
		return ra, err
	}
	return ra, d.reindex()
}

// isApplication reports whether resource names an application registered
// in the tenant (an identifier URI or its client id).
func (d *Directory) isApplication(tenantID, resource string) bool {
	return d.dir.p.Load().resources[tenantID+"|"+normResource(resource)] != nil
}

// migrateAppRoles brings app-role assignments stored by older versions in
// line with what app roles are. One on the ARM resource, which ARM used to
// be authorized with, becomes the Azure role assignment it means (see
// PutRoleAssignment). One on a resource that is not an application of the
// tenant (such as https://storage.azure.com, which has no app roles in
// Entra) is removed with a warning: it only ever put a roles claim in
// tokens no Azure service reads; Azure RBAC is what grants access there.
// Idempotent: the Azure assignment's name is derived from its content, so
// a crash between the two writes is finished by the next start.
func (d *Directory) migrateAppRoles(ctx context.Context) error {
	ras, err := d.store.RoleAssignments("")
	if err != nil {
		return err
	}
	for _, ra := range ras {
		switch {
		case normResource(ra.Resource) == ARMResource:
			if _, ok := rbac.ByName(ra.Role); ok {
				if _, err := d.PutRoleAssignment(ctx, store.RoleAssignment{TenantID: ra.TenantID, Principal: ra.Principal, Resource: ra.Resource, Role: ra.Role}); err != nil {
					return fmt.Errorf("migrate role assignment %s: %w", ra.ID, err)
				}
				d.log.Info("app-role assignment on ARM migrated to an Azure role assignment at /", "principal", ra.Principal, "role", ra.Role)
			} else {
				d.log.Warn("app-role assignment on ARM removed: ARM access is Azure RBAC and the role is not a built-in one", "principal", ra.Principal, "role", truncate(ra.Role, 120))
			}
		case !d.isApplication(ra.TenantID, ra.Resource):
			d.log.Warn("app-role assignment removed: its resource is not an application of the tenant (use an Azure role assignment)", "principal", ra.Principal, "resource", truncate(ra.Resource, 200), "role", truncate(ra.Role, 120))
		default:
			continue
		}
		if err := d.store.DeleteRoleAssignment(ra.ID); err != nil && !errors.Is(err, ErrNotFound) {
			return fmt.Errorf("migrate role assignment %s: %w", ra.ID, err)
		}
	}
	return d.reindex()
}

// DeleteRoleAssignment removes a role assignment.
func (d *Directory) DeleteRoleAssignment(ctx context.Context, id string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := d.store.DeleteRoleAssignment(id); err != nil {
		return err
	}
	return d.reindex()
}

// Principal returns an app or identity by client id.
func (d *Directory) Principal(clientID string) (*store.Principal, error) {
	return d.store.Principal(strings.ToLower(clientID))
}

// Principals lists a tenant's apps and identities.
func (d *Directory) Principals(tenantID string) ([]store.Principal, error) {
	return d.store.Principals(tenantID)
}

// IdentityByResourceID returns a managed identity by ARM resource id.
func (d *Directory) IdentityByResourceID(resourceID string) (*store.Principal, error) {
	return d.store.PrincipalByResourceID(resourceID)
}

// Subscriptions lists the subscriptions a tenant owns.
func (d *Directory) Subscriptions(tenantID string) ([]string, error) {
	return d.store.Subscriptions(tenantID)
}

// SubscriptionTenant returns the tenant a subscription belongs to ("" when
// none has put an identity in it yet).
func (d *Directory) SubscriptionTenant(sub string) (string, error) {
	return d.store.SubscriptionTenant(sub)
}

// IdentitiesUnder lists identities whose ARM resource id starts with prefix.
func (d *Directory) IdentitiesUnder(prefix string) ([]store.Principal, error) {
	return d.store.IdentitiesUnder(prefix)
}

// RoleAssignments lists a tenant's role assignments.
func (d *Directory) RoleAssignments(tenantID string) ([]store.RoleAssignment, error) {
	return d.store.RoleAssignments(tenantID)
}

// Apply applies a bootstrap idempotently: it creates or updates what it
// names and deletes nothing.
func (d *Directory) Apply(ctx context.Context, b *Bootstrap) error {
	for _, t := range b.Tenants {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("bootstrap: %w", err)
		}
		if err := d.PutTenant(ctx, t.ID, t.Domains); err != nil {
			return fmt.Errorf("bootstrap tenant %s: %w", t.ID, err)
		}
		tid := strings.ToLower(t.ID)
		for _, a := range t.Applications {
			p, _, err := d.PutApplication(ctx, tid, Application{ClientID: a.ClientID, ObjectID: a.ObjectID, DisplayName: a.DisplayName, IdentifierURIs: a.IdentifierURIs, AccessTokenVersion: a.AccessTokenVersion})
			if err != nil {
				return fmt.Errorf("bootstrap application %s: %w", a.ClientID, err)
			}
			for i, sec := range a.Secrets {
				v, err := sec.value()
				if err != nil {
					return fmt.Errorf("bootstrap application %s secret %d: %w", a.ClientID, i, err)
				}
				if _, err := d.AddSecret(ctx, p.ClientID, "bootstrap", v, time.Time{}); err != nil {
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
				if _, err := d.AddCertificate(ctx, p.ClientID, data); err != nil {
					return fmt.Errorf("bootstrap application %s certificate %d: %w", a.ClientID, i, err)
				}
			}
			if err := d.applyFICs(ctx, p.ClientID, a.FederatedCreds); err != nil {
				return fmt.Errorf("bootstrap application %s: %w", a.ClientID, err)
			}
		}
		for _, id := range t.Identities {
			p, _, err := d.PutIdentity(ctx, Identity{TenantID: tid, Subscription: id.Subscription, ResourceGroup: id.ResourceGroup, Name: id.Name, Location: id.Location, ClientID: id.ClientID, PrincipalID: id.PrincipalID})
			if err != nil {
				return fmt.Errorf("bootstrap identity %s: %w", id.Name, err)
			}
			if err := d.applyFICs(ctx, p.ClientID, id.FederatedCreds); err != nil {
				return fmt.Errorf("bootstrap identity %s: %w", id.Name, err)
			}
		}
		for _, ra := range t.RoleAssignments {
			if err := d.applyRoleAssignment(ctx, tid, ra); err != nil {
				return fmt.Errorf("bootstrap role assignment %s/%s: %w", ra.Principal, ra.Role, err)
			}
		}
	}
	return d.reindex()
}

func (d *Directory) applyRoleAssignment(ctx context.Context, tid string, ra BootstrapRoleAssignment) error {
	if (ra.Scope == "") == (ra.Resource == "") {
		return invalid("give exactly one of resource (an app role) and scope (an Azure role)")
	}
	if ra.Resource != "" {
		if normResource(ra.Resource) != ARMResource && !d.isApplication(tid, ra.Resource) {
			// Files written when any resource took app roles keep starting:
			// the entry is skipped, loudly, as migrateAppRoles drops stored ones.
			d.log.Warn("bootstrap role assignment skipped: its resource is not an application of the tenant; for Azure resources give an ARM scope instead (scope: /subscriptions/…)",
				"principal", ra.Principal, "resource", truncate(ra.Resource, 200), "role", truncate(ra.Role, 120))
			return nil
		}
		_, err := d.PutRoleAssignment(ctx, store.RoleAssignment{TenantID: tid, Principal: ra.Principal, Resource: ra.Resource, Role: ra.Role})
		return err
	}
	p, err := d.Principal(ra.Principal)
	if err != nil || p.TenantID != tid {
		return fmt.Errorf("principal %s: %w", ra.Principal, ErrNotFound)
	}
	_, _, err = d.PutAzureRoleAssignment(ctx, AzureRoleAssignment{TenantID: tid, Scope: ra.Scope, Role: ra.Role, PrincipalID: p.ObjectID})
	if errors.Is(err, ErrAssignmentExists) { // the same grant, made under another name
		return nil
	}
	return err
}

func (d *Directory) applyFICs(ctx context.Context, clientID string, fics []BootstrapFederatedIdentity) error {
	for _, f := range fics {
		if _, err := d.PutFederatedCredential(ctx, clientID, store.FederatedCredential{Name: f.Name, Issuer: f.Issuer, Subject: f.Subject, Audiences: f.Audiences, ClaimsMatchingExpression: f.ClaimsMatchingExpression}); err != nil {
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
