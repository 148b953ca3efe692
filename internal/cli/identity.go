package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/resourcemanager/msi/armmsi"
	"github.com/spf13/cobra"
)

// Identity is a user-assigned managed identity as the CLI prints it.
type Identity struct {
	Name          string            `json:"name"`
	ID            string            `json:"id"`
	ResourceGroup string            `json:"resourceGroup"`
	Location      string            `json:"location"`
	ClientID      string            `json:"clientId"`
	PrincipalID   string            `json:"principalId"`
	TenantID      string            `json:"tenantId"`
	Tags          map[string]string `json:"tags,omitempty"`
}

func identityOf(x armmsi.Identity) Identity {
	id := Identity{Name: str(x.Name), ID: str(x.ID), Location: str(x.Location)}
	if p := x.Properties; p != nil {
		id.ClientID, id.PrincipalID, id.TenantID = str(p.ClientID), str(p.PrincipalID), str(p.TenantID)
	}
	if len(x.Tags) > 0 {
		id.Tags = map[string]string{}
		for k, v := range x.Tags {
			id.Tags[k] = str(v)
		}
	}
	// /subscriptions/{s}/resourceGroups/{rg}/providers/…
	if parts := strings.Split(id.ID, "/"); len(parts) > 4 && strings.EqualFold(parts[3], "resourceGroups") {
		id.ResourceGroup = parts[4]
	}
	return id
}

func identityTable(ids ...Identity) table {
	t := table{header: []string{"NAME", "RESOURCE-GROUP", "LOCATION", "CLIENT-ID", "PRINCIPAL-ID"}}
	for _, i := range ids {
		t.rows = append(t.rows, []string{i.Name, i.ResourceGroup, i.Location, i.ClientID, i.PrincipalID})
	}
	return t
}

func newIdentityCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "identity", Short: "Manage user-assigned managed identities"}
	var s scope
	s.bind(cmd.PersistentFlags())
	var location string
	var tags []string
	create := &cobra.Command{
		Use:   "create NAME",
		Short: "Create (or update) an identity",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			a, err := g.connect(s, true)
			if err != nil {
				return err
			}
			loc := location
			if loc == "" {
				loc = a.cfg.Location
			}
			if loc == "" {
				return errors.New("no location: pass --location or record one with podid config set-cloud … --location")
			}
			tm := map[string]*string{}
			for _, kv := range tags {
				k, v, ok := strings.Cut(kv, "=")
				if !ok || k == "" {
					return fmt.Errorf("--tag %q: want key=value", kv)
				}
				tm[k] = to.Ptr(v)
			}
			id, err := a.createIdentity(cmd.Context(), args[0], loc, tm)
			if err != nil {
				return err
			}
			return g.print(cmd.OutOrStdout(), id, identityTable(id))
		},
	}
	create.Flags().StringVarP(&location, "location", "l", "", "location (default: from the config)")
	create.Flags().StringArrayVar(&tags, "tag", nil, "tag key=value (repeatable)")
	show := &cobra.Command{
		Use:   "show NAME",
		Short: "Show an identity",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			a, err := g.connect(s, true)
			if err != nil {
				return err
			}
			id, err := a.getIdentity(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return g.print(cmd.OutOrStdout(), id, identityTable(id))
		},
	}
	list := &cobra.Command{
		Use:   "list",
		Short: "List identities of the resource group (or of the subscription with --all)",
		Args:  cobra.NoArgs,
	}
	all := list.Flags().Bool("all", false, "every resource group of the subscription")
	list.RunE = func(cmd *cobra.Command, _ []string) error {
		a, err := g.connect(s, !*all)
		if err != nil {
			return err
		}
		ids, err := a.listIdentities(cmd.Context(), *all)
		if err != nil {
			return err
		}
		return g.print(cmd.OutOrStdout(), ids, identityTable(ids...))
	}
	del := &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete an identity (and its federated credentials)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			a, err := g.connect(s, true)
			if err != nil {
				return err
			}
			if err := validIdentityName(args[0]); err != nil {
				return err
			}
			c, err := a.identities()
			if err != nil {
				return err
			}
			if _, err := c.Delete(cmd.Context(), a.rg, args[0], nil); err != nil {
				return cloudError("delete identity "+args[0], err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "identity %s deleted\n", args[0])
			return nil
		},
	}
	cmd.AddCommand(create, show, list, del, newBindCommand(g, &s))
	return cmd
}

func (a *azure) createIdentity(ctx context.Context, name, location string, tags map[string]*string) (Identity, error) {
	if err := validIdentityName(name); err != nil {
		return Identity{}, err
	}
	c, err := a.identities()
	if err != nil {
		return Identity{}, err
	}
	r, err := c.CreateOrUpdate(ctx, a.rg, name, armmsi.Identity{Location: to.Ptr(location), Tags: tags}, nil)
	if err != nil {
		return Identity{}, cloudError("create identity "+name, err)
	}
	return identityOf(r.Identity), nil
}

func (a *azure) getIdentity(ctx context.Context, name string) (Identity, error) {
	if err := validIdentityName(name); err != nil {
		return Identity{}, err
	}
	c, err := a.identities()
	if err != nil {
		return Identity{}, err
	}
	r, err := c.Get(ctx, a.rg, name, nil)
	if err != nil {
		return Identity{}, cloudError("identity "+name+" in resource group "+a.rg, err)
	}
	return identityOf(r.Identity), nil
}

func (a *azure) listIdentities(ctx context.Context, all bool) ([]Identity, error) {
	c, err := a.identities()
	if err != nil {
		return nil, err
	}
	out := []Identity{}
	if all {
		p := c.NewListBySubscriptionPager(nil)
		for p.More() {
			pg, err := p.NextPage(ctx)
			if err != nil {
				return nil, cloudError("list identities", err)
			}
			for _, x := range pg.Value {
				out = append(out, identityOf(*x))
			}
		}
		return out, nil
	}
	p := c.NewListByResourceGroupPager(a.rg, nil)
	for p.More() {
		pg, err := p.NextPage(ctx)
		if err != nil {
			return nil, cloudError("list identities in resource group "+a.rg, err)
		}
		for _, x := range pg.Value {
			out = append(out, identityOf(*x))
		}
	}
	return out, nil
}

// identityByClientID finds the identity with clientID anywhere in the
// subscription.
func (a *azure) identityByClientID(ctx context.Context, clientID string) (Identity, error) {
	ids, err := a.listIdentities(ctx, true)
	if err != nil {
		return Identity{}, err
	}
	for _, id := range ids {
		if strings.EqualFold(id.ClientID, clientID) {
			return id, nil
		}
	}
	return Identity{}, &NotFoundError{What: "identity with client id " + clientID + " in subscription " + a.sub}
}

// str dereferences an SDK string pointer.
func str(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}
