package sts

import (
	"errors"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/podid/podid/internal/rbac"
	"github.com/podid/podid/internal/sts/store"
)

// Accepted api-version values of Microsoft.Authorization role assignments
// and definitions (armauthorization v2 sends 2022-04-01, az 2022-04-01).
var authzAPIVersions = []string{"2015-07-01", "2018-01-01-preview", "2018-09-01-preview", "2020-03-01-preview", "2020-04-01-preview", "2020-08-01-preview", "2020-10-01-preview", "2021-04-01-preview", "2022-01-01-preview", "2022-04-01", "2022-05-01-preview"}

// authorizationIndex finds {scope}/providers/Microsoft.Authorization/
// {roleAssignments|roleDefinitions}[/{name}] at the end of segs and returns
// the index of that "providers", or -1.
func authorizationIndex(segs []string) int {
	for i := len(segs) - 3; i >= 0 && i >= len(segs)-4; i-- {
		if strings.EqualFold(segs[i], "providers") && strings.EqualFold(segs[i+1], "Microsoft.Authorization") &&
			(strings.EqualFold(segs[i+2], "roleAssignments") || strings.EqualFold(segs[i+2], "roleDefinitions")) {
			return i
		}
	}
	return -1
}

// serveAuthorization serves Microsoft.Authorization at any scope:
//
//	{scope}/providers/Microsoft.Authorization/roleDefinitions          GET (list; $filter=roleName eq '…' | type eq 'BuiltInRole')
//	{scope}/providers/Microsoft.Authorization/roleDefinitions/{guid}   GET
//	{scope}/providers/Microsoft.Authorization/roleAssignments          GET (list; $filter=atScope() | principalId eq '…' | assignedTo('…'), joined by 'and')
//	{scope}/providers/Microsoft.Authorization/roleAssignments/{guid}   PUT GET DELETE
//
// scope is "/" (the tenant root) or any ARM scope rbac.ParseScope accepts.
// rest is [roleAssignments|roleDefinitions, name?].
func (s *mgmt) serveAuthorization(w http.ResponseWriter, r *http.Request, c *caller, q url.Values, scopeSegs, rest []string) {
	if !checkAPIVersion(w, q, authzAPIVersions) {
		return
	}
	if v := q.Get("tenantId"); v != "" && !strings.EqualFold(v, c.tenantID) {
		writeARMError(w, armError{403, "AuthorizationFailed", "The client '" + c.clientID + "' cannot act in tenant '" + truncate(v, 64) + "'."})
		return
	}
	raw := "/" + strings.Join(scopeSegs, "/")
	sc, err := rbac.ParseScope(raw)
	if err != nil {
		if len(scopeSegs) >= 2 && strings.EqualFold(scopeSegs[0], "subscriptions") && !guidRE.MatchString(scopeSegs[1]) {
			writeARMError(w, armError{400, "InvalidSubscriptionId", "The provided subscription identifier is malformed or invalid."})
			return
		}
		writeARMError(w, armError{400, "InvalidScope", err.Error()})
		return
	}
	if sub := sc.Subscription(); sub != "" && !s.checkSubscription(w, c, sub) {
		return
	}
	name := ""
	if len(rest) == 2 {
		name = rest[1]
	}
	if strings.EqualFold(rest[0], "roleDefinitions") {
		if r.Method != http.MethodGet {
			writeARMError(w, armError{405, "MethodNotAllowed", "method not allowed"})
			return
		}
		if ae := s.authorize(c, "Microsoft.Authorization/roleDefinitions/read", sc); ae != nil {
			writeARMError(w, *ae)
			return
		}
		s.serveRoleDefinitions(w, r, sc, name, q)
		return
	}
	if name == "" {
		if r.Method != http.MethodGet {
			writeARMError(w, armError{405, "MethodNotAllowed", "method not allowed"})
			return
		}
		if ae := s.authorize(c, "Microsoft.Authorization/roleAssignments/read", sc); ae != nil {
			writeARMError(w, *ae)
			return
		}
		s.listRoleAssignmentsAt(w, r, c, sc, q)
		return
	}
	if !guidRE.MatchString(name) {
		writeARMError(w, armError{400, "InvalidRoleAssignmentId", "The role assignment ID '" + truncate(name, 64) + "' is not valid. The role assignment ID must be a GUID."})
		return
	}
	action := map[string]string{http.MethodGet: "read", http.MethodPut: "write", http.MethodDelete: "delete"}[r.Method]
	if action == "" {
		writeARMError(w, armError{405, "MethodNotAllowed", "method not allowed"})
		return
	}
	if ae := s.authorize(c, "Microsoft.Authorization/roleAssignments/"+action, sc); ae != nil {
		writeARMError(w, *ae)
		return
	}
	switch r.Method {
	case http.MethodGet:
		a, err := s.AzureRoleAssignment(c.tenantID, name)
		if err != nil || !strings.EqualFold(a.Scope, sc.String()) {
			writeARMError(w, armError{404, "RoleAssignmentNotFound", "The role assignment '" + name + "' is not found."})
			return
		}
		writeJSON(w, 200, roleAssignmentJSON(a))
	case http.MethodPut:
		s.putRoleAssignment(w, r, c, sc, name)
	case http.MethodDelete:
		a, err := s.AzureRoleAssignment(c.tenantID, name)
		if err != nil || !strings.EqualFold(a.Scope, sc.String()) {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		if err := s.DeleteAzureRoleAssignment(r.Context(), c.tenantID, name); err != nil && !errors.Is(err, ErrNotFound) {
			writeARMError(w, armErrorFor(err))
			return
		}
		s.log.Info("Azure role assignment deleted", "name", a.Name, "scope", a.Scope, "role", a.RoleID, "principal", a.PrincipalID, "by", c.clientID)
		writeJSON(w, 200, roleAssignmentJSON(a))
	}
}

type roleAssignmentBody struct {
	Properties *struct {
		RoleDefinitionID                   string  `json:"roleDefinitionId"`
		PrincipalID                        string  `json:"principalId"`
		PrincipalType                      string  `json:"principalType"`
		Description                        *string `json:"description"`
		Condition                          *string `json:"condition"`
		ConditionVersion                   *string `json:"conditionVersion"`
		DelegatedManagedIdentityResourceID *string `json:"delegatedManagedIdentityResourceId"`
	} `json:"properties"`
}

func (s *mgmt) putRoleAssignment(w http.ResponseWriter, r *http.Request, c *caller, sc rbac.Scope, name string) {
	var b roleAssignmentBody
	if err := readBody(r, &b); err != nil {
		writeARMError(w, armError{400, "InvalidRequestContent", err.Error()})
		return
	}
	p := b.Properties
	switch {
	case p == nil:
		writeARMError(w, armError{400, "InvalidRequestContent", "The request content has no properties."})
		return
	case p.RoleDefinitionID == "":
		writeARMError(w, armError{400, "InvalidRoleDefinitionId", "The role definition ID is required."})
		return
	case !guidRE.MatchString(p.PrincipalID):
		writeARMError(w, armError{400, "InvalidPrincipalId", "A valid principal ID must be provided for role assignment."})
		return
	case p.Condition != nil && *p.Condition != "", p.ConditionVersion != nil && *p.ConditionVersion != "":
		// A condition narrows a grant; granting without evaluating it would
		// grant more than asked, so it is refused.
		writeARMError(w, armError{400, "InvalidCondition", "Role assignment conditions are not supported by podid sts."})
		return
	case p.DelegatedManagedIdentityResourceID != nil && *p.DelegatedManagedIdentityResourceID != "":
		writeARMError(w, armError{400, "InvalidRequestContent", "delegatedManagedIdentityResourceId is not supported by podid sts."})
		return
	}
	gid := rbac.DefinitionGUID(p.RoleDefinitionID)
	if gid == "" {
		writeARMError(w, armError{400, "InvalidRoleDefinitionId", "The role definition ID '" + truncate(p.RoleDefinitionID, 200) + "' is not valid."})
		return
	}
	desc := ""
	if p.Description != nil {
		desc = *p.Description
	}
	a, created, err := s.PutAzureRoleAssignment(r.Context(), AzureRoleAssignment{
		Name: name, TenantID: c.tenantID, Scope: sc.String(), Role: gid, PrincipalID: p.PrincipalID,
		PrincipalType: p.PrincipalType, Description: desc, CreatedBy: c.objectID,
	})
	switch {
	case errors.Is(err, ErrRoleDefinitionNotFound):
		writeARMError(w, armError{400, "RoleDefinitionDoesNotExist", "The specified role definition with ID '" + gid + "' does not exist."})
	case errors.Is(err, ErrPrincipalNotFound):
		writeARMError(w, armError{400, "PrincipalNotFound", "Principal " + strings.ToLower(p.PrincipalID) + " does not exist in the directory " + c.tenantID + ". Check that you have the correct principal ID."})
	case errors.Is(err, ErrPrincipalTypeMismatch):
		writeARMError(w, armError{400, "UnmatchedPrincipalType", "The PrincipalId '" + strings.ToLower(p.PrincipalID) + "' has type 'ServicePrincipal', which is different from specified PrincipalType '" + truncate(p.PrincipalType, 40) + "'."})
	case errors.Is(err, ErrAssignmentExists):
		writeARMError(w, armError{409, "RoleAssignmentExists", "The role assignment already exists."})
	case errors.Is(err, ErrAssignmentImmutable):
		writeARMError(w, armError{400, "RoleAssignmentUpdateNotPermitted", "Tenant ID, application ID, principal ID, and scope are not allowed to be updated."})
	case errors.Is(err, ErrConflict):
		writeARMError(w, armError{404, "SubscriptionNotFound", "The subscription '" + sc.Subscription() + "' could not be found."})
	case err != nil:
		writeARMError(w, armErrorFor(err))
	default:
		status := 200
		if created {
			status = 201
			s.log.Info("Azure role assignment created", "name", a.Name, "scope", a.Scope, "role", a.RoleID, "principal", a.PrincipalID, "by", c.clientID)
		}
		writeJSON(w, status, roleAssignmentJSON(&a))
	}
}

// roleAssignmentJSON is an assignment as ARM answers it.
func roleAssignmentJSON(a *store.RBACAssignment) map[string]any {
	sc, _ := rbac.ParseScope(a.Scope)
	on := a.CreatedOn.UTC().Format(time.RFC3339Nano)
	props := map[string]any{
		"roleDefinitionId":                   rbac.DefinitionID(sc, a.RoleID),
		"principalId":                        a.PrincipalID,
		"principalType":                      a.PrincipalType,
		"scope":                              a.Scope,
		"condition":                          nil,
		"conditionVersion":                   nil,
		"createdOn":                          on,
		"updatedOn":                          on,
		"createdBy":                          nilIfEmpty(a.CreatedBy),
		"updatedBy":                          nilIfEmpty(a.CreatedBy),
		"delegatedManagedIdentityResourceId": nil,
		"description":                        nilIfEmpty(a.Description),
	}
	return map[string]any{
		"id":         strings.TrimSuffix(a.Scope, "/") + rbac.AssignmentPath + a.Name,
		"name":       a.Name,
		"type":       rbac.RoleAssignmentType,
		"properties": props,
	}
}

func nilIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// roleDefinitionJSON is a built-in role as ARM answers it read at scope.
func roleDefinitionJSON(sc rbac.Scope, r rbac.Role) map[string]any {
	orEmpty := func(v []string) []string {
		if v == nil {
			return []string{}
		}
		return v
	}
	return map[string]any{
		"id":   rbac.DefinitionID(sc, r.ID),
		"name": r.ID,
		"type": rbac.RoleDefinitionType,
		"properties": map[string]any{
			"roleName":         r.Name,
			"type":             "BuiltInRole",
			"description":      r.Description,
			"assignableScopes": []string{"/"},
			"permissions": []map[string]any{{
				"actions": orEmpty(r.Actions), "notActions": orEmpty(r.NotActions),
				"dataActions": orEmpty(r.DataActions), "notDataActions": orEmpty(r.NotDataActions),
			}},
			"createdOn": nil, "updatedOn": nil, "createdBy": nil, "updatedBy": nil,
		},
	}
}

// filterRE matches one term of a $filter: name eq 'value', or fn('value'),
// or atScope().
var filterRE = regexp.MustCompile(`^(?i:(roleName|type|principalId)\s+eq\s+'([^']{1,512})'|(assignedTo)\('([^']{1,64})'\)|(atScope)\(\))$`)

var andRE = regexp.MustCompile(`(?i)\s+and\s+`)

// filterTerm is one parsed $filter term: its lower-case name and value.
type filterTerm struct{ name, value string }

// parseFilter splits a $filter on " and " and parses each term; allowed
// names the terms the route accepts.
func parseFilter(f string, allowed ...string) ([]filterTerm, *armError) {
	if f == "" {
		return nil, nil
	}
	if len(f) > 1024 {
		return nil, &armError{400, "InvalidFilterInQueryString", "The $filter is too long."}
	}
	var out []filterTerm
	for _, part := range andRE.Split(strings.TrimSpace(f), -1) {
		m := filterRE.FindStringSubmatch(strings.TrimSpace(part))
		if m == nil {
			return nil, &armError{400, "InvalidFilterInQueryString", "The filter '" + truncate(f, 200) + "' is not supported: use " + strings.Join(allowed, ", ") + "."}
		}
		t := filterTerm{}
		switch {
		case m[1] != "":
			t = filterTerm{strings.ToLower(m[1]), m[2]}
		case m[3] != "":
			t = filterTerm{"assignedto", m[4]}
		default:
			t = filterTerm{"atscope", ""}
		}
		ok := false
		for _, a := range allowed {
			if strings.HasPrefix(strings.ToLower(a), t.name) {
				ok = true
			}
		}
		if !ok {
			return nil, &armError{400, "InvalidFilterInQueryString", "The filter '" + truncate(f, 200) + "' is not supported: use " + strings.Join(allowed, ", ") + "."}
		}
		out = append(out, t)
	}
	return out, nil
}

func (s *mgmt) serveRoleDefinitions(w http.ResponseWriter, r *http.Request, sc rbac.Scope, name string, q url.Values) {
	if name != "" {
		role, ok := rbac.ByID(name)
		if !ok {
			writeARMError(w, armError{404, "RoleDefinitionDoesNotExist", "The specified role definition with ID '" + truncate(name, 64) + "' does not exist."})
			return
		}
		writeJSON(w, 200, roleDefinitionJSON(sc, role))
		return
	}
	terms, ae := parseFilter(q.Get("$filter"), "roleName eq '…'", "type eq 'BuiltInRole'")
	if ae != nil {
		writeARMError(w, *ae)
		return
	}
	items := []map[string]any{}
	for _, role := range rbac.BuiltIn {
		keep := true
		for _, t := range terms {
			switch t.name {
			case "rolename":
				keep = keep && strings.EqualFold(role.Name, t.value)
			case "type":
				keep = keep && strings.EqualFold(t.value, "BuiltInRole")
			}
		}
		if keep {
			items = append(items, roleDefinitionJSON(sc, role))
		}
	}
	s.writePage(w, r, items, q)
}

// listRoleAssignmentsAt lists the caller's tenant's assignments that apply
// at sc or below it, as ARM does: without atScope(), those at the scope,
// above it (inherited) and below it; with atScope(), those at the scope
// and above; principalId/assignedTo keep one principal's.
func (s *mgmt) listRoleAssignmentsAt(w http.ResponseWriter, r *http.Request, c *caller, sc rbac.Scope, q url.Values) {
	terms, ae := parseFilter(q.Get("$filter"), "atScope()", "principalId eq '…'", "assignedTo('…')")
	if ae != nil {
		writeARMError(w, *ae)
		return
	}
	atScope, principal := false, ""
	for _, t := range terms {
		switch t.name {
		case "atscope":
			atScope = true
		case "principalid", "assignedto":
			if principal != "" && !strings.EqualFold(principal, t.value) {
				writeARMError(w, armError{400, "InvalidFilterInQueryString", "The filter names two principals."})
				return
			}
			principal = strings.ToLower(t.value)
		}
	}
	all, err := s.AzureRoleAssignments(c.tenantID)
	if err != nil {
		writeARMError(w, armErrorFor(err))
		return
	}
	items := []map[string]any{}
	for i := range all {
		a := &all[i]
		as, err := rbac.ParseScope(a.Scope)
		if err != nil || (principal != "" && a.PrincipalID != principal) {
			continue
		}
		if as.Contains(sc) || (!atScope && sc.Contains(as)) {
			items = append(items, roleAssignmentJSON(a))
		}
	}
	s.writePage(w, r, items, q)
}
