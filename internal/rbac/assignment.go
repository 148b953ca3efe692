package rbac

import "strings"

// Assignment is what evaluation needs of a role assignment: who, which
// role, where.
type Assignment struct {
	PrincipalID string // the principal's object id
	RoleID      string // a built-in role definition GUID
	Scope       Scope
}

// Permitted reports whether the assignments give principal (an object id)
// action at scope: some assignment of the principal at scope or one of its
// ancestors names a role whose Actions (data false) or DataActions (data
// true) match the action and whose NotActions/NotDataActions do not.
// Assignments naming an unknown role grant nothing. This is Azure's
// evaluation without deny assignments, groups or conditions, which podid
// does not have.
func Permitted(as []Assignment, principalID, action string, scope Scope, data bool) bool {
	if action == "" || principalID == "" || scope.canonical == "" {
		return false
	}
	for _, a := range as {
		if !strings.EqualFold(a.PrincipalID, principalID) || !a.Scope.Contains(scope) {
			continue
		}
		if r, ok := ByID(a.RoleID); ok && r.Permits(action, data) {
			return true
		}
	}
	return false
}
