package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/podid/podid/internal/rbac"
	"github.com/podid/podid/internal/webhook"
	"github.com/podid/podid/internal/workloadidentity"
)

// Phases of serviceaccount create/delete, in create order.
const (
	PhaseServiceAccount = "serviceaccount"
	PhaseFIC            = "federated-identity-credential"
	PhaseRoleAssignment = "role-assignment"
)

var phases = []string{PhaseServiceAccount, PhaseFIC, PhaseRoleAssignment}

type saOptions struct {
	s                  scope
	name, namespace    string
	identity, clientID string
	tenantID, issuer   string
	ficName            string
	role, roleScope    string
	tokenExpiration    string
	skip               []string
}

func (o *saOptions) skipped(p string) bool { return slices.Contains(o.skip, p) }

func (o *saOptions) check() error {
	if o.name == "" {
		return errors.New("--name is required")
	}
	for _, p := range o.skip {
		if !slices.Contains(phases, p) {
			return fmt.Errorf("--skip-phases: unknown phase %q (phases: %s)", p, strings.Join(phases, ", "))
		}
	}
	if _, _, err := parseServiceAccount(o.namespace + "/" + o.name); err != nil {
		return err
	}
	if o.clientID != "" && !guidRE.MatchString(o.clientID) {
		return fmt.Errorf("--client-id %q is not a GUID", o.clientID)
	}
	if o.tenantID != "" && !guidRE.MatchString(o.tenantID) {
		return fmt.Errorf("--tenant-id %q is not a GUID", o.tenantID)
	}
	if o.roleScope != "" {
		if o.role == "" {
			return errors.New("--role-scope needs --role")
		}
		if _, err := parseScopeFlag(o.roleScope); err != nil {
			return fmt.Errorf("--role-scope: %w", err)
		}
	}
	return nil
}

func newServiceAccountCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "serviceaccount", Aliases: []string{"sa"}, Short: "Set up a Kubernetes service account for workload identity"}
	o := &saOptions{}
	f := cmd.PersistentFlags()
	o.s.bind(f)
	f.StringVar(&o.name, "name", "", "service account name (required)")
	f.StringVarP(&o.namespace, "namespace", "n", "", "namespace (default: the kubeconfig's)")
	f.StringVar(&o.identity, "identity", "", "identity name in the resource group (its client id and tenant are read)")
	f.StringVar(&o.ficName, "federated-credential-name", "", "federated credential name (default: kubernetes-<ns>-<name>)")
	f.StringVar(&o.role, "role", "", "role to grant the identity (role-assignment phase; optional)")
	f.StringVar(&o.roleScope, "role-scope", "", "ARM scope of the role (default: the resource group)")
	f.StringSliceVar(&o.skip, "skip-phases", nil, "phases to skip: "+strings.Join(phases, ", "))
	create := &cobra.Command{
		Use:   "create --name NAME --identity ID",
		Short: "Create the service account, its federated credential and (optionally) a role assignment",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.run(cmd.Context(), g, cmd.OutOrStdout(), true)
		},
	}
	cf := create.Flags()
	cf.StringVar(&o.clientID, "client-id", "", "client id, when --identity is not given (skips the cloud lookup)")
	cf.StringVar(&o.tenantID, "tenant-id", "", "tenant id annotation (default: the identity's)")
	cf.StringVar(&o.issuer, "issuer", "", "issuer (default: the cluster's, from its OIDC discovery)")
	cf.StringVar(&o.tokenExpiration, "service-account-token-expiration", "", "projected token lifetime annotation in seconds (3600-86400)")
	del := &cobra.Command{
		Use:   "delete --name NAME --identity ID",
		Short: "Delete the role assignment, the federated credential and the service account",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.run(cmd.Context(), g, cmd.OutOrStdout(), false)
		},
	}
	cmd.AddCommand(create, del)
	return cmd
}

func (o *saOptions) run(ctx context.Context, g *globals, out io.Writer, create bool) error {
	if o.namespace == "" {
		o.namespace = g.namespace()
	}
	if err := o.check(); err != nil {
		return err
	}
	k, err := g.kube()
	if err != nil {
		return err
	}
	needCloud := !o.skipped(PhaseFIC) || (o.role != "" && !o.skipped(PhaseRoleAssignment)) || (create && o.clientID == "")
	var a *azure
	var id Identity
	if needCloud {
		if o.identity == "" {
			return errors.New("--identity is required (or --client-id with --skip-phases " + PhaseFIC + ")")
		}
		if a, err = g.connect(o.s, true); err != nil {
			return err
		}
		if id, err = a.getIdentity(ctx, o.identity); err != nil {
			return err
		}
	}
	if o.clientID == "" {
		o.clientID = id.ClientID
	}
	if o.tenantID == "" {
		o.tenantID = id.TenantID
	}
	ficName := o.ficName
	if ficName == "" {
		ficName = defaultFICName(o.namespace, o.name)
	}
	phase := func(p, msg string) { fmt.Fprintf(out, "[%s] %s\n", p, msg) }
	if !create {
		if o.role != "" && !o.skipped(PhaseRoleAssignment) {
			sc, err := o.roleScopeOf(a)
			if err != nil {
				return err
			}
			n, err := a.deleteRoleAssignments(ctx, io.Discard, raFlags{assigneeObjectID: id.PrincipalID, role: o.role}, sc)
			if err != nil {
				return err
			}
			phase(PhaseRoleAssignment, fmt.Sprintf("deleted %d role assignment(s)", n))
		}
		if !o.skipped(PhaseFIC) {
			if err := a.deleteFIC(ctx, o.identity, ficName); err != nil {
				return err
			}
			phase(PhaseFIC, "deleted "+ficName+" of identity "+o.identity)
		}
		if !o.skipped(PhaseServiceAccount) {
			err := k.cs.CoreV1().ServiceAccounts(o.namespace).Delete(ctx, o.name, metav1.DeleteOptions{})
			switch {
			case apierrors.IsNotFound(err):
				phase(PhaseServiceAccount, "ServiceAccount "+o.namespace+"/"+o.name+" already absent")
			case err != nil:
				return fmt.Errorf("delete ServiceAccount %s/%s: %s", o.namespace, o.name, oneLine(err.Error()))
			default:
				phase(PhaseServiceAccount, "deleted ServiceAccount "+o.namespace+"/"+o.name)
			}
		}
		return nil
	}
	if !o.skipped(PhaseServiceAccount) {
		msg, err := o.ensureServiceAccount(ctx, k)
		if err != nil {
			return err
		}
		phase(PhaseServiceAccount, msg)
	}
	if !o.skipped(PhaseFIC) {
		issuer := o.issuer
		if issuer == "" {
			if issuer, err = k.issuer(ctx); err != nil {
				return err
			}
		}
		f, created, err := a.putFIC(ctx, o.identity, FederatedCredential{Name: ficName, Issuer: issuer, Subject: Subject(o.namespace, o.name), Audiences: []string{ExchangeAudience}})
		if err != nil {
			return err
		}
		if created {
			phase(PhaseFIC, "created "+f.Name+" on identity "+o.identity+" (issuer "+issuer+", subject "+f.Subject+")")
		} else {
			phase(PhaseFIC, "identity "+o.identity+" already trusts "+f.Subject+" (credential "+f.Name+")")
		}
	}
	if o.role != "" && !o.skipped(PhaseRoleAssignment) {
		sc, err := o.roleScopeOf(a)
		if err != nil {
			return err
		}
		ra, created, err := a.createRoleAssignment(ctx, raFlags{assigneeObjectID: id.PrincipalID, role: o.role}, sc)
		if err != nil {
			return err
		}
		if created {
			phase(PhaseRoleAssignment, fmt.Sprintf("%q at %s granted to %s (%s)", ra.RoleDefinitionName, ra.Scope, o.identity, ra.Name))
		} else {
			phase(PhaseRoleAssignment, fmt.Sprintf("%q at %s already granted to %s (%s)", ra.RoleDefinitionName, ra.Scope, o.identity, ra.Name))
		}
	}
	return nil
}

// roleScopeOf is --role-scope, or the identity's resource group.
func (o *saOptions) roleScopeOf(a *azure) (rbac.Scope, error) {
	if o.roleScope != "" {
		return parseScopeFlag(o.roleScope)
	}
	return rbac.ParseScope("/subscriptions/" + a.sub + "/resourceGroups/" + a.rg)
}

// ensureServiceAccount creates the ServiceAccount or merges the annotations
// and label into an existing one, writing only when something differs.
func (o *saOptions) ensureServiceAccount(ctx context.Context, k *kube) (string, error) {
	if o.clientID == "" {
		return "", errors.New("no client id: pass --identity or --client-id")
	}
	want := map[string]string{workloadidentity.ClientIDAnnotation: o.clientID}
	if o.tenantID != "" {
		want[workloadidentity.TenantIDAnnotation] = o.tenantID
	}
	if o.tokenExpiration != "" {
		want[workloadidentity.TokenExpirationAnnotation] = o.tokenExpiration
		if _, err := webhook.TokenExpiration(&corev1.Pod{}, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Annotations: want}}); err != nil {
			return "", err
		}
	}
	key := types.NamespacedName{Namespace: o.namespace, Name: o.name}
	var sa corev1.ServiceAccount
	err := k.c.Get(ctx, key, &sa)
	if apierrors.IsNotFound(err) {
		sa = corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: o.namespace, Name: o.name, Annotations: want,
			Labels: map[string]string{workloadidentity.UseLabel: "true"}}}
		if err := k.c.Create(ctx, &sa); err != nil {
			return "", fmt.Errorf("create ServiceAccount %s: %s", key, oneLine(err.Error()))
		}
		return "created ServiceAccount " + key.String(), nil
	}
	if err != nil {
		return "", fmt.Errorf("get ServiceAccount %s: %s", key, oneLine(err.Error()))
	}
	changed := false
	if sa.Annotations == nil {
		sa.Annotations = map[string]string{}
	}
	for k, v := range want {
		if sa.Annotations[k] != v {
			sa.Annotations[k], changed = v, true
		}
	}
	if sa.Labels[workloadidentity.UseLabel] != "true" {
		if sa.Labels == nil {
			sa.Labels = map[string]string{}
		}
		sa.Labels[workloadidentity.UseLabel], changed = "true", true
	}
	if !changed {
		return "ServiceAccount " + key.String() + " unchanged", nil
	}
	if err := k.c.Update(ctx, &sa); err != nil {
		return "", fmt.Errorf("update ServiceAccount %s: %s", key, oneLine(err.Error()))
	}
	return "updated ServiceAccount " + key.String() + " (pods started before this need a restart)", nil
}
