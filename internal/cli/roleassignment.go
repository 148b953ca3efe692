package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/spf13/cobra"
)

// RoleAssignment grants Role on Scope to a principal. Against podid sts the
// scope is the resource (token audience) the role appears in, e.g.
// https://vault.azure.net; roles show up in that resource's tokens.
type RoleAssignment struct {
	ID        string `json:"id"`
	Principal string `json:"principal"`
	Scope     string `json:"resource"`
	Role      string `json:"role"`
}

// ErrRoleAssignmentsOnAzure: the CLI manages role assignments on podid sts
// only; on Azure the authorization API is a different product surface.
var ErrRoleAssignmentsOnAzure = errors.New("role assignments on Azure are not managed by podid yet: use az role assignment create --assignee <client id> --role <role> --scope <scope>")

func newRoleAssignmentCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "role-assignment", Short: "Grant roles to identities (podid sts)"}
	var s scope
	s.bind(cmd.PersistentFlags())
	var assignee, role, scopeFlag string
	create := &cobra.Command{
		Use:   "create --assignee CLIENT-ID|IDENTITY --role ROLE --scope RESOURCE",
		Short: "Grant a role",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if assignee == "" || role == "" || scopeFlag == "" {
				return errors.New("--assignee, --role and --scope are required")
			}
			a, err := g.connect(s, false)
			if err != nil {
				return err
			}
			ra, err := a.createRoleAssignment(cmd.Context(), assignee, role, scopeFlag)
			if err != nil {
				return err
			}
			return g.print(cmd.OutOrStdout(), ra, raTable(ra))
		},
	}
	create.Flags().StringVar(&assignee, "assignee", "", "client id, or the name of an identity in the resource group")
	create.Flags().StringVar(&role, "role", "", "role name, e.g. \"Key Vault Administrator\"")
	create.Flags().StringVar(&scopeFlag, "scope", "", "resource the role applies to, e.g. https://vault.azure.net")
	list := &cobra.Command{
		Use:   "list",
		Short: "List role assignments (of --assignee when given)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			a, err := g.connect(s, false)
			if err != nil {
				return err
			}
			ras, err := a.listRoleAssignments(cmd.Context())
			if err != nil {
				return err
			}
			if assignee != "" {
				p, err := a.principal(cmd.Context(), assignee)
				if err != nil {
					return err
				}
				var keep []RoleAssignment
				for _, r := range ras {
					if r.Principal == p {
						keep = append(keep, r)
					}
				}
				ras = keep
			}
			if ras == nil {
				ras = []RoleAssignment{}
			}
			return g.print(cmd.OutOrStdout(), ras, raTable(ras...))
		},
	}
	list.Flags().StringVar(&assignee, "assignee", "", "client id or identity name")
	del := &cobra.Command{
		Use:   "delete ID",
		Short: "Delete a role assignment",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			a, err := g.connect(s, false)
			if err != nil {
				return err
			}
			if err := a.deleteRoleAssignment(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "role assignment %s deleted\n", args[0])
			return nil
		},
	}
	cmd.AddCommand(create, list, del)
	return cmd
}

func raTable(ras ...RoleAssignment) table {
	t := table{header: []string{"ID", "PRINCIPAL", "ROLE", "SCOPE"}}
	for _, r := range ras {
		t.rows = append(t.rows, []string{r.ID, r.Principal, r.Role, r.Scope})
	}
	return t
}

// principal resolves a client id (GUID) or an identity name to a client id.
func (a *azure) principal(ctx context.Context, assignee string) (string, error) {
	if guidRE.MatchString(assignee) {
		return assignee, nil
	}
	if a.rg == "" {
		return "", fmt.Errorf("assignee %q is not a client id; to name an identity, pass --resource-group", assignee)
	}
	id, err := a.getIdentity(ctx, assignee)
	if err != nil {
		return "", err
	}
	return id.ClientID, nil
}

// admin calls podid sts's management API with an ARM token of the admin.
func (a *azure) admin(ctx context.Context, method, path string, in, out any) error {
	if a.cfg.Cloud != CloudLocal {
		return ErrRoleAssignmentsOnAzure
	}
	tok, err := a.cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{armResource + "/.default"}})
	if err != nil {
		return cloudError("sign in to "+a.cfg.Authority, err)
	}
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.cfg.Authority+"/podid/v1/tenants/"+url.PathEscape(a.cfg.TenantID)+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+tok.Token)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := a.http.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %s", method, a.cfg.Authority, oneLine(err.Error()))
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return fmt.Errorf("read answer: %w", err)
	}
	if resp.StatusCode >= 300 {
		var e struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		if json.Unmarshal(b, &e) == nil && e.Error.Code != "" {
			return fmt.Errorf("%s: %s (HTTP %d)", e.Error.Code, oneLine(e.Error.Message), resp.StatusCode)
		}
		return fmt.Errorf("HTTP %d from %s", resp.StatusCode, a.cfg.Authority)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("decode answer: %w", err)
		}
	}
	return nil
}

func (a *azure) createRoleAssignment(ctx context.Context, assignee, role, scope string) (RoleAssignment, error) {
	p, err := a.principal(ctx, assignee)
	if err != nil {
		return RoleAssignment{}, err
	}
	var ra RoleAssignment
	err = a.admin(ctx, http.MethodPost, "/roleAssignments", RoleAssignment{Principal: p, Scope: scope, Role: role}, &ra)
	if err != nil {
		return RoleAssignment{}, fmt.Errorf("assign role %q on %s to %s: %w", role, scope, p, err)
	}
	return ra, nil
}

func (a *azure) listRoleAssignments(ctx context.Context) ([]RoleAssignment, error) {
	var out struct {
		Value []RoleAssignment `json:"value"`
	}
	if err := a.admin(ctx, http.MethodGet, "/roleAssignments", nil, &out); err != nil {
		return nil, fmt.Errorf("list role assignments: %w", err)
	}
	return out.Value, nil
}

func (a *azure) deleteRoleAssignment(ctx context.Context, id string) error {
	if id == "" || len(id) > 200 {
		return fmt.Errorf("role assignment id %q is malformed", id)
	}
	if err := a.admin(ctx, http.MethodDelete, "/roleAssignments/"+url.PathEscape(id), nil, nil); err != nil {
		return fmt.Errorf("delete role assignment %s: %w", id, err)
	}
	return nil
}
