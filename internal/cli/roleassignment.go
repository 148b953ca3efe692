package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/authorization/armauthorization/v2"
	"github.com/google/uuid"
	"github.com/spf13/cobra"

	"github.com/podid/podid/internal/rbac"
)

// RoleAssignment is an Azure role assignment as the CLI prints it (the
// fields az role assignment list shows).
type RoleAssignment struct {
	ID                 string `json:"id"`
	Name               string `json:"name"`
	Scope              string `json:"scope"`
	RoleDefinitionID   string `json:"roleDefinitionId"`
	RoleDefinitionName string `json:"roleDefinitionName"`
	PrincipalID        string `json:"principalId"`
	PrincipalType      string `json:"principalType"`
}

func raTable(ras ...RoleAssignment) table {
	t := table{header: []string{"NAME", "ROLE", "PRINCIPAL-ID", "SCOPE"}}
	for _, r := range ras {
		t.rows = append(t.rows, []string{r.Name, r.RoleDefinitionName, r.PrincipalID, r.Scope})
	}
	return t
}

// raFlags are the flags of the role-assignment verbs, az's names.
type raFlags struct {
	assignee, assigneeObjectID, role, scope, name string
}

func newRoleAssignmentCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "role-assignment",
		Short: "Grant Azure roles to identities (Microsoft.Authorization, on podid sts or Azure)",
	}
	var s scope
	s.bind(cmd.PersistentFlags())
	var f raFlags
	pf := cmd.PersistentFlags()
	pf.StringVar(&f.assignee, "assignee", "", "client id or principal (object) id, or the name of an identity in the resource group")
	pf.StringVar(&f.assigneeObjectID, "assignee-object-id", "", "the principal's object id, used as given")
	pf.StringVar(&f.role, "role", "", `role name ("Key Vault Administrator") or role definition GUID or id`)
	pf.StringVar(&f.scope, "scope", "", "ARM scope, e.g. /subscriptions/{id}/resourceGroups/{rg}/providers/Microsoft.KeyVault/vaults/{name} (default: the resource group)")
	create := &cobra.Command{
		Use:   "create --assignee ID|IDENTITY --role ROLE [--scope SCOPE]",
		Short: "Grant a role at a scope (an existing identical assignment is reported, not duplicated)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if f.role == "" || (f.assignee == "" && f.assigneeObjectID == "") {
				return errors.New("--role and --assignee (or --assignee-object-id) are required")
			}
			a, sc, err := f.connect(g, s)
			if err != nil {
				return err
			}
			ra, created, err := a.createRoleAssignment(cmd.Context(), f, sc)
			if err != nil {
				return err
			}
			if !created {
				fmt.Fprintf(cmd.ErrOrStderr(), "role assignment %s already grants %q at %s\n", ra.Name, ra.RoleDefinitionName, ra.Scope)
			}
			return g.print(cmd.OutOrStdout(), ra, raTable(ra))
		},
	}
	create.Flags().StringVar(&f.name, "name", "", "the assignment's name, a GUID (default: a new one)")
	list := &cobra.Command{
		Use:   "list [--assignee ID|IDENTITY] [--role ROLE] [--scope SCOPE]",
		Short: "List the role assignments that apply at the scope: there, inherited from above, and below it",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			a, sc, err := f.connect(g, s)
			if err != nil {
				return err
			}
			ras, err := a.listRoleAssignments(cmd.Context(), f, sc, false)
			if err != nil {
				return err
			}
			return g.print(cmd.OutOrStdout(), ras, raTable(ras...))
		},
	}
	del := &cobra.Command{
		Use:   "delete [NAME|ID] | --assignee ID|IDENTITY [--role ROLE] [--scope SCOPE]",
		Short: "Delete a role assignment by name or id, or the assignee's assignments at the scope",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 && f.assignee == "" && f.assigneeObjectID == "" {
				return errors.New("give the assignment's name or id, or --assignee")
			}
			a, sc, err := f.connect(g, s)
			if err != nil {
				return err
			}
			if len(args) == 1 {
				return a.deleteRoleAssignment(cmd.Context(), cmd.OutOrStdout(), args[0], sc)
			}
			n, err := a.deleteRoleAssignments(cmd.Context(), cmd.OutOrStdout(), f, sc)
			if err != nil {
				return err
			}
			if n == 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "no role assignment matched at %s\n", sc)
			}
			return nil
		},
	}
	cmd.AddCommand(create, list, del)
	return cmd
}

// connect opens the cloud and resolves the scope: --scope, or the
// configured resource group.
func (f *raFlags) connect(g *globals, s scope) (*azure, rbac.Scope, error) {
	if f.assignee != "" && f.assigneeObjectID != "" {
		return nil, rbac.Scope{}, errors.New("--assignee and --assignee-object-id exclude each other")
	}
	if f.assigneeObjectID != "" && !guidRE.MatchString(f.assigneeObjectID) {
		return nil, rbac.Scope{}, fmt.Errorf("--assignee-object-id %q is not a GUID", f.assigneeObjectID)
	}
	if f.name != "" && !guidRE.MatchString(f.name) {
		return nil, rbac.Scope{}, fmt.Errorf("--name %q is not a GUID (a role assignment's name is one)", f.name)
	}
	if strings.Contains(f.role, "'") || len(f.role) > 512 {
		return nil, rbac.Scope{}, fmt.Errorf("--role %q is not a role name", f.role)
	}
	var sc rbac.Scope
	if f.scope != "" {
		var err error
		if sc, err = parseScopeFlag(f.scope); err != nil {
			return nil, rbac.Scope{}, err
		}
	}
	a, err := g.connect(s, f.scope == "")
	if err != nil {
		return nil, rbac.Scope{}, err
	}
	if f.scope == "" {
		if sc, err = rbac.ParseScope("/subscriptions/" + a.sub + "/resourceGroups/" + a.rg); err != nil {
			return nil, rbac.Scope{}, err
		}
	}
	return a, sc, nil
}

// parseScopeFlag checks --scope, saying what an ARM scope is when it is
// not one (notably a resource URL, what token audiences look like).
func parseScopeFlag(s string) (rbac.Scope, error) {
	if strings.Contains(s, "://") {
		return rbac.Scope{}, fmt.Errorf("--scope %q is a URL, not an ARM scope: %s (Azure roles apply to resources, not to token audiences)", s, rbac.ScopeHelp)
	}
	sc, err := rbac.ParseScope(s)
	if err != nil {
		return rbac.Scope{}, fmt.Errorf("--scope: %w", err)
	}
	return sc, nil
}

func (a *azure) authorization() (*armauthorization.RoleAssignmentsClient, *armauthorization.RoleDefinitionsClient, error) {
	ras, err := armauthorization.NewRoleAssignmentsClient(a.sub, a.cred, a.armOpts)
	if err != nil {
		return nil, nil, fmt.Errorf("role assignment client: %w", err)
	}
	defs, err := armauthorization.NewRoleDefinitionsClient(a.cred, a.armOpts)
	if err != nil {
		return nil, nil, fmt.Errorf("role definition client: %w", err)
	}
	return ras, defs, nil
}

// assigneeID resolves --assignee to a principal (object) id: an identity
// name through the resource group; a GUID that is an identity's client id
// or principal id in the subscription to its principal id; any other GUID
// is taken as an object id (the cloud answers PrincipalNotFound if not).
func (a *azure) assigneeID(ctx context.Context, f raFlags) (string, error) {
	if f.assigneeObjectID != "" {
		return strings.ToLower(f.assigneeObjectID), nil
	}
	if !guidRE.MatchString(f.assignee) {
		if a.rg == "" {
			return "", fmt.Errorf("--assignee %q is not a GUID; to name an identity, pass --resource-group", f.assignee)
		}
		id, err := a.getIdentity(ctx, f.assignee)
		if err != nil {
			return "", err
		}
		return id.PrincipalID, nil
	}
	ids, err := a.listIdentities(ctx, true)
	if err != nil {
		return "", err
	}
	for _, id := range ids {
		if strings.EqualFold(id.ClientID, f.assignee) || strings.EqualFold(id.PrincipalID, f.assignee) {
			return id.PrincipalID, nil
		}
	}
	return strings.ToLower(f.assignee), nil
}

// roleDefinition resolves --role at the scope: a GUID or definition id as
// given, a name through the cloud's role definitions (roleName filter).
func (a *azure) roleDefinition(ctx context.Context, defs *armauthorization.RoleDefinitionsClient, role string, sc rbac.Scope) (id, name string, err error) {
	if g := rbac.DefinitionGUID(role); g != "" {
		d, err := defs.Get(ctx, sc.String(), g, nil)
		if err != nil {
			return "", "", cloudError("role definition "+g, err)
		}
		return str(d.ID), str(d.Properties.RoleName), nil
	}
	pg := defs.NewListPager(sc.String(), &armauthorization.RoleDefinitionsClientListOptions{Filter: to.Ptr("roleName eq '" + role + "'")})
	var found []*armauthorization.RoleDefinition
	for pg.More() {
		page, err := pg.NextPage(ctx)
		if err != nil {
			return "", "", cloudError("role definitions", err)
		}
		found = append(found, page.Value...)
	}
	if len(found) != 1 || found[0].Properties == nil {
		names := make([]string, 0, len(rbac.BuiltIn))
		for _, r := range rbac.BuiltIn {
			names = append(names, r.Name)
		}
		return "", "", fmt.Errorf("role %q not found at %s (podid sts knows: %s)", role, sc, strings.Join(names, ", "))
	}
	return str(found[0].ID), str(found[0].Properties.RoleName), nil
}

// roleNames maps role definition GUIDs to names, read once from the cloud.
func (a *azure) roleNames(ctx context.Context, defs *armauthorization.RoleDefinitionsClient, sc rbac.Scope) (map[string]string, error) {
	m := map[string]string{}
	for pg := defs.NewListPager(sc.String(), nil); pg.More(); {
		page, err := pg.NextPage(ctx)
		if err != nil {
			return nil, cloudError("role definitions", err)
		}
		for _, d := range page.Value {
			if d.Properties != nil {
				m[strings.ToLower(str(d.Name))] = str(d.Properties.RoleName)
			}
		}
	}
	return m, nil
}

func roleAssignmentOf(x *armauthorization.RoleAssignment, names map[string]string) RoleAssignment {
	ra := RoleAssignment{ID: str(x.ID), Name: str(x.Name)}
	if p := x.Properties; p != nil {
		ra.Scope, ra.RoleDefinitionID, ra.PrincipalID = str(p.Scope), str(p.RoleDefinitionID), str(p.PrincipalID)
		if p.PrincipalType != nil {
			ra.PrincipalType = string(*p.PrincipalType)
		}
		ra.RoleDefinitionName = names[rbac.DefinitionGUID(ra.RoleDefinitionID)]
	}
	return ra
}

// createRoleAssignment grants the role, unless an assignment of the same
// role to the same principal at the same scope exists: that one is
// returned with created false.
func (a *azure) createRoleAssignment(ctx context.Context, f raFlags, sc rbac.Scope) (RoleAssignment, bool, error) {
	ras, defs, err := a.authorization()
	if err != nil {
		return RoleAssignment{}, false, err
	}
	pid, err := a.assigneeID(ctx, f)
	if err != nil {
		return RoleAssignment{}, false, err
	}
	defID, roleName, err := a.roleDefinition(ctx, defs, f.role, sc)
	if err != nil {
		return RoleAssignment{}, false, err
	}
	names := map[string]string{rbac.DefinitionGUID(defID): roleName}
	existing := func() (*RoleAssignment, error) {
		list, err := a.listAt(ctx, ras, sc, "atScope() and assignedTo('"+pid+"')", names)
		if err != nil {
			return nil, err
		}
		for _, r := range list {
			if strings.EqualFold(r.Scope, sc.String()) && strings.EqualFold(r.PrincipalID, pid) && rbac.DefinitionGUID(r.RoleDefinitionID) == rbac.DefinitionGUID(defID) {
				return &r, nil
			}
		}
		return nil, nil
	}
	if r, err := existing(); err != nil || r != nil {
		return deref(r), false, err
	}
	name := f.name
	if name == "" {
		name = uuid.NewString()
	}
	resp, err := ras.Create(ctx, sc.String(), name, armauthorization.RoleAssignmentCreateParameters{Properties: &armauthorization.RoleAssignmentProperties{
		RoleDefinitionID: to.Ptr(defID), PrincipalID: to.Ptr(pid), PrincipalType: to.Ptr(armauthorization.PrincipalTypeServicePrincipal),
	}}, nil)
	var re *azcore.ResponseError
	if errors.As(err, &re) && re.StatusCode == http.StatusConflict && strings.EqualFold(re.ErrorCode, "RoleAssignmentExists") {
		// Made by someone else since we looked: report theirs.
		if r, err2 := existing(); err2 == nil && r != nil {
			return *r, false, nil
		}
	}
	if err != nil {
		return RoleAssignment{}, false, cloudError(fmt.Sprintf("assign %q at %s to %s", roleName, sc, pid), err)
	}
	return roleAssignmentOf(&resp.RoleAssignment, names), true, nil
}

func deref(r *RoleAssignment) RoleAssignment {
	if r == nil {
		return RoleAssignment{}
	}
	return *r
}

// listAt lists assignments at sc with an ARM $filter ("" for none).
func (a *azure) listAt(ctx context.Context, ras *armauthorization.RoleAssignmentsClient, sc rbac.Scope, filter string, names map[string]string) ([]RoleAssignment, error) {
	var opts *armauthorization.RoleAssignmentsClientListForScopeOptions
	if filter != "" {
		opts = &armauthorization.RoleAssignmentsClientListForScopeOptions{Filter: to.Ptr(filter)}
	}
	out := []RoleAssignment{}
	for pg := ras.NewListForScopePager(sc.String(), opts); pg.More(); {
		page, err := pg.NextPage(ctx)
		if err != nil {
			return nil, cloudError("role assignments at "+sc.String(), err)
		}
		for _, x := range page.Value {
			out = append(out, roleAssignmentOf(x, names))
		}
	}
	return out, nil
}

// listRoleAssignments lists what applies at sc (atScope: at and above
// only), of --assignee and --role when given.
func (a *azure) listRoleAssignments(ctx context.Context, f raFlags, sc rbac.Scope, atScope bool) ([]RoleAssignment, error) {
	ras, defs, err := a.authorization()
	if err != nil {
		return nil, err
	}
	var terms []string
	if atScope {
		terms = append(terms, "atScope()")
	}
	if f.assignee != "" || f.assigneeObjectID != "" {
		pid, err := a.assigneeID(ctx, f)
		if err != nil {
			return nil, err
		}
		terms = append(terms, "assignedTo('"+pid+"')")
	}
	names, err := a.roleNames(ctx, defs, sc)
	if err != nil {
		return nil, err
	}
	list, err := a.listAt(ctx, ras, sc, strings.Join(terms, " and "), names)
	if err != nil {
		return nil, err
	}
	if f.role != "" {
		want := rbac.DefinitionGUID(f.role)
		if want == "" {
			defID, _, err := a.roleDefinition(ctx, defs, f.role, sc)
			if err != nil {
				return nil, err
			}
			want = rbac.DefinitionGUID(defID)
		}
		list = slices.DeleteFunc(list, func(r RoleAssignment) bool { return rbac.DefinitionGUID(r.RoleDefinitionID) != want })
	}
	return list, nil
}

// deleteRoleAssignment deletes one assignment by full id, or by name at sc.
func (a *azure) deleteRoleAssignment(ctx context.Context, out io.Writer, ref string, sc rbac.Scope) error {
	ras, _, err := a.authorization()
	if err != nil {
		return err
	}
	var deleted *armauthorization.RoleAssignment
	switch {
	case guidRE.MatchString(ref):
		var resp armauthorization.RoleAssignmentsClientDeleteResponse
		resp, err = ras.Delete(ctx, sc.String(), ref, nil)
		deleted = &resp.RoleAssignment
	case strings.Contains(strings.ToLower(ref), strings.ToLower(rbac.AssignmentPath)):
		i := strings.LastIndex(strings.ToLower(ref), strings.ToLower(rbac.AssignmentPath))
		if !guidRE.MatchString(ref[i+len(rbac.AssignmentPath):]) {
			return fmt.Errorf("role assignment id %q does not end in a GUID", ref)
		}
		if i > 0 {
			if _, err := parseScopeFlag(ref[:i]); err != nil {
				return fmt.Errorf("role assignment id %q: %w", ref, err)
			}
		}
		var resp armauthorization.RoleAssignmentsClientDeleteByIDResponse
		resp, err = ras.DeleteByID(ctx, ref, nil)
		deleted = &resp.RoleAssignment
	default:
		return fmt.Errorf("%q is neither a role assignment name (a GUID) nor an id (…%s{GUID})", ref, rbac.AssignmentPath)
	}
	if err != nil {
		return cloudError("delete role assignment "+ref, err)
	}
	if deleted.ID == nil { // 204: ARM's answer for an assignment that is not there
		fmt.Fprintf(out, "role assignment %s does not exist (nothing to delete)\n", ref)
		return nil
	}
	fmt.Fprintf(out, "role assignment %s deleted\n", str(deleted.ID))
	return nil
}

// deleteRoleAssignments deletes the assignee's assignments (of --role)
// made exactly at sc, and returns how many.
func (a *azure) deleteRoleAssignments(ctx context.Context, out io.Writer, f raFlags, sc rbac.Scope) (int, error) {
	list, err := a.listRoleAssignments(ctx, f, sc, true)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, r := range list {
		if !strings.EqualFold(r.Scope, sc.String()) {
			continue // inherited: delete it where it was made
		}
		if err := a.deleteRoleAssignment(ctx, out, r.ID, sc); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}
