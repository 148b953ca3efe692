package sts

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/podid/podid/internal/rbac"
	"github.com/podid/podid/internal/sts/store"
)

// Azure RBAC over the store: role assignments (Microsoft.Authorization/
// roleAssignments) of the built-in roles in internal/rbac, at ARM scopes,
// and the queries that decide with them. This is what authorizes every
// ARM call to the sts, and what the sts's data planes ask before they
// serve data (HasDataAction). App-role assignments (the roles claim) are
// a different thing: see PutRoleAssignment.

// AzureRoleAssignment is what PutAzureRoleAssignment creates.
type AzureRoleAssignment struct {
	Name          string // a GUID; derived from the content when empty
	TenantID      string
	Scope         string // an ARM scope (rbac.ParseScope)
	Role          string // a built-in role: definition GUID, definition id or name
	PrincipalID   string // object id of an app or identity of the tenant
	PrincipalType string // optional; podid's principals are all ServicePrincipal
	Description   string
	CreatedBy     string // object id of who asked, for the record
}

// PrincipalTypeServicePrincipal is the type of every podid principal
// (app registrations and managed identities alike, as in Entra).
const PrincipalTypeServicePrincipal = "ServicePrincipal"

// principalTypes are the values ARM accepts for principalType.
var principalTypes = []string{"User", "Group", PrincipalTypeServicePrincipal, "ForeignGroup", "Device"}

// Typed errors of Azure role assignment writes (ErrInvalid for the rest).
var (
	ErrRoleDefinitionNotFound = errors.New("role definition does not exist")
	ErrPrincipalNotFound      = store.ErrPrincipalNotFound
	ErrAssignmentExists       = store.ErrAssignmentExists
	ErrAssignmentImmutable    = store.ErrAssignmentImmutable
	ErrPrincipalTypeMismatch  = errors.New("principal type mismatch")
)

// derivedGUID is a GUID-shaped digest of parts, for names that must be
// the same every time the same thing is written (bootstrap).
func derivedGUID(parts ...string) string {
	sum := sha256.Sum256([]byte(strings.Join(parts, "|")))
	h := hex.EncodeToString(sum[:16])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// PutAzureRoleAssignment creates a role assignment, or returns the
// identical one of the same name (created false). The write is one store
// transaction with its checks (see store.PutRBACAssignment).
func (d *Directory) PutAzureRoleAssignment(ctx context.Context, a AzureRoleAssignment) (store.RBACAssignment, bool, error) {
	if err := ctx.Err(); err != nil {
		return store.RBACAssignment{}, false, err
	}
	sc, err := rbac.ParseScope(a.Scope)
	if err != nil {
		return store.RBACAssignment{}, false, invalid("%v", err)
	}
	role, ok := rbac.ByID(rbac.DefinitionGUID(a.Role))
	if !ok {
		role, ok = rbac.ByName(a.Role)
	}
	if !ok {
		return store.RBACAssignment{}, false, fmt.Errorf("%w: %q", ErrRoleDefinitionNotFound, truncate(a.Role, 200))
	}
	if !guidRE.MatchString(a.PrincipalID) {
		return store.RBACAssignment{}, false, invalid("principal id %q is not a GUID", truncate(a.PrincipalID, 64))
	}
	switch {
	case a.PrincipalType == "" || a.PrincipalType == PrincipalTypeServicePrincipal:
	case slicesContainsFold(principalTypes, a.PrincipalType):
		return store.RBACAssignment{}, false, fmt.Errorf("%w: principal %s has type %s, which is different from the specified type %s", ErrPrincipalTypeMismatch, a.PrincipalID, PrincipalTypeServicePrincipal, a.PrincipalType)
	default:
		return store.RBACAssignment{}, false, invalid("principalType %q is not one of %s", truncate(a.PrincipalType, 64), strings.Join(principalTypes, ", "))
	}
	if len(a.Description) > 2048 {
		return store.RBACAssignment{}, false, invalid("description longer than 2048 characters")
	}
	pid := strings.ToLower(a.PrincipalID)
	if a.Name == "" {
		a.Name = derivedGUID(a.TenantID, sc.Key(), role.ID, pid)
	}
	if !guidRE.MatchString(a.Name) {
		return store.RBACAssignment{}, false, invalid("role assignment name %q is not a GUID", truncate(a.Name, 64))
	}
	rec := store.RBACAssignment{
		Name: strings.ToLower(a.Name), TenantID: a.TenantID, Scope: sc.String(), RoleID: role.ID,
		PrincipalID: pid, PrincipalType: PrincipalTypeServicePrincipal, Description: a.Description,
		CreatedOn: time.Now().UTC().Truncate(time.Second), CreatedBy: a.CreatedBy,
	}
	out, created, err := d.store.PutRBACAssignment(rec)
	if err != nil {
		return out, false, err
	}
	return out, created, d.reindex()
}

func slicesContainsFold(list []string, s string) bool {
	for _, v := range list {
		if strings.EqualFold(v, s) {
			return true
		}
	}
	return false
}

// AzureRoleAssignment returns a role assignment of the tenant by name
// (ErrNotFound for another tenant's).
func (d *Directory) AzureRoleAssignment(tenantID, name string) (*store.RBACAssignment, error) {
	a, err := d.store.RBACAssignment(strings.ToLower(name))
	if err == nil && a.TenantID != tenantID {
		return nil, ErrNotFound
	}
	return a, err
}

// DeleteAzureRoleAssignment removes a role assignment of the tenant.
func (d *Directory) DeleteAzureRoleAssignment(ctx context.Context, tenantID, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if _, err := d.AzureRoleAssignment(tenantID, name); err != nil {
		return err
	}
	if err := d.store.DeleteRBACAssignment(strings.ToLower(name)); err != nil {
		return err
	}
	return d.reindex()
}

// AzureRoleAssignments lists a tenant's role assignments.
func (d *Directory) AzureRoleAssignments(tenantID string) ([]store.RBACAssignment, error) {
	return d.store.RBACAssignments(tenantID)
}

// HasDataAction reports whether the principal with object id principalID,
// of tenant tenantID, holds dataAction (for example
// "Microsoft.KeyVault/vaults/secrets/getSecret/action") at scope, an ARM
// resource id such as /subscriptions/{s}/resourceGroups/{rg}/providers/
// Microsoft.KeyVault/vaults/{vault} or a child of it (…/secrets/{name}).
//
// It holds it when a role assignment of the principal at scope or at any
// parent of it (resource, resource group, subscription, the tenant root
// "/") names a built-in role whose dataActions match dataAction, '*'
// matching any characters (Microsoft.KeyVault/vaults/secrets/* matches
// …/secrets/getSecret/action), and whose notDataActions do not. A scope
// in a subscription that does not belong to tenantID is never granted.
// It reads an in-memory index rebuilt after every write, plus the
// subscription's owner from the store. A malformed scope is an error
// wrapping rbac.ErrInvalidScope; a malformed principal is simply not granted.
func (d *Directory) HasDataAction(tenantID, principalID, dataAction, scope string) (bool, error) {
	sc, err := rbac.ParseScope(scope)
	if err != nil {
		return false, err
	}
	return d.permits(strings.ToLower(tenantID), strings.ToLower(principalID), dataAction, sc, true)
}

// HasAction is HasDataAction for control-plane (ARM) actions, such as
// Microsoft.Authorization/roleAssignments/write.
func (d *Directory) HasAction(tenantID, principalID, action, scope string) (bool, error) {
	sc, err := rbac.ParseScope(scope)
	if err != nil {
		return false, err
	}
	return d.permits(strings.ToLower(tenantID), strings.ToLower(principalID), action, sc, false)
}

// permits decides with the index. A subscription no tenant owns yet is
// open to the control plane of a tenant-root assignment (the write that
// follows binds it to the caller's tenant, as identities do), never to
// data planes.
func (d *Directory) permits(tenantID, principalID, action string, sc rbac.Scope, data bool) (bool, error) {
	if sub := sc.Subscription(); sub != "" {
		owner, err := d.store.SubscriptionTenant(sub)
		if err != nil {
			return false, err
		}
		if owner != tenantID && (owner != "" || data) {
			return false, nil
		}
	}
	idx := d.dir.p.Load()
	return rbac.Permitted(idx.rbac[tenantID+"|"+principalID], principalID, action, sc, data), nil
}

// VisibleSubscriptions lists the subscriptions of tenantID that the
// principal (an object id) sees in ARM's GET /subscriptions: those where it
// holds a role assignment of any role at the subscription or below it
// (resource group, resource), and every one of the tenant when it holds one
// at the tenant root "/". A subscription owned by another tenant is never
// listed. Sorted, as Subscriptions.
func (d *Directory) VisibleSubscriptions(tenantID, principalID string) ([]string, error) {
	tenantID, principalID = strings.ToLower(tenantID), strings.ToLower(principalID)
	as := d.dir.p.Load().rbac[tenantID+"|"+principalID]
	if len(as) == 0 {
		return nil, nil
	}
	subs, err := d.Subscriptions(tenantID)
	if err != nil {
		return nil, err
	}
	in := map[string]bool{}
	for _, a := range as {
		if a.Scope.Root() {
			return subs, nil
		}
		in[a.Scope.Subscription()] = true
	}
	out := subs[:0:0]
	for _, sub := range subs {
		if in[strings.ToLower(sub)] {
			out = append(out, sub)
		}
	}
	return out, nil
}

// holdsAtRoot reports whether the principal is assigned the role at the
// tenant root "/" (what makes a tenant administrator; see Config.AdminRole).
func (d *Directory) holdsAtRoot(tenantID, principalID, roleID string) bool {
	for _, a := range d.dir.p.Load().rbac[tenantID+"|"+principalID] {
		if a.Scope.Root() && a.RoleID == roleID {
			return true
		}
	}
	return false
}

// rbacIndex is the evaluation index of the assignments: tenant|object id →
// the principal's assignments. A stored scope that no longer parses grants
// nothing (and is logged).
func (d *Directory) rbacIndex(as []store.RBACAssignment) map[string][]rbac.Assignment {
	m := make(map[string][]rbac.Assignment, len(as))
	for _, a := range as {
		sc, err := rbac.ParseScope(a.Scope)
		if err != nil {
			d.log.Error("role assignment ignored: its scope does not parse", "name", a.Name, "err", err)
			continue
		}
		k := a.TenantID + "|" + a.PrincipalID
		m[k] = append(m[k], rbac.Assignment{PrincipalID: a.PrincipalID, RoleID: a.RoleID, Scope: sc})
	}
	return m
}
