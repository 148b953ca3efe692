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
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/podid/podid/internal/broker"
	"github.com/podid/podid/internal/workloadidentity"
)

// BrokerServiceAccount is the broker's service account name (the chart's).
const BrokerServiceAccount = "podid-broker"

// brokerFICName names the one federated credential of a brokered identity.
const brokerFICName = "podid-broker"

type bindOptions struct {
	s               *scope // the identity command's
	serviceAccounts []string
	brokerNamespace string
	issuer          string
}

// newBindCommand is `podid identity bind`: an identity served by the
// podid broker to service accounts of any number of namespaces, with one
// federated credential (docs/broker.md).
func newBindCommand(g *globals, s *scope) *cobra.Command {
	o := &bindOptions{s: s}
	cmd := &cobra.Command{
		Use:   "bind NAME --service-account NS/NAME...",
		Short: "Serve an identity through the podid broker: its one federated credential and the RBAC grants",
		Long: `Makes identity NAME usable by the given service accounts through the podid broker
(docs/broker.md), past Entra's limit of 20 federated credentials per identity:

  1. the identity's one federated credential "podid-broker": issuer the cluster's,
     subject system:serviceaccount:<broker namespace>:podid-broker (idempotent);
  2. ClusterRole podid-use-<client-id>: verb use-managed-identity on resource
     <client-id> in API group cid.wi.aks.azure.com (the AKS identity-binding model);
  3. per namespace, RoleBinding podid-use-<client-id> to it with the service accounts;
  4. each service account annotated with the identity's client and tenant ids
     (created when missing).

Pods then use it when annotated azure.workload.identity/use-identity-binding: "true"
(or when the chart lists the client id in broker.clientIDs).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.run(cmd.Context(), g, cmd.OutOrStdout(), args[0])
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&o.serviceAccounts, "service-account", nil, "NAMESPACE/NAME allowed to use the identity (repeatable; required)")
	f.StringVar(&o.brokerNamespace, "broker-namespace", "podid-system", "namespace the broker runs in (its service account is the credential's subject)")
	f.StringVar(&o.issuer, "issuer", "", "issuer (default: the cluster's, from its OIDC discovery)")
	return cmd
}

func (o *bindOptions) run(ctx context.Context, g *globals, out io.Writer, name string) error {
	if len(o.serviceAccounts) == 0 {
		return errors.New("--service-account NAMESPACE/NAME is required (repeatable)")
	}
	if errs := validation.IsDNS1123Label(o.brokerNamespace); len(errs) > 0 {
		return fmt.Errorf("--broker-namespace %q: %s", o.brokerNamespace, errs[0])
	}
	type sa struct{ ns, name string }
	var sas []sa
	for _, s := range o.serviceAccounts {
		ns, n, err := parseServiceAccount(s)
		if err != nil {
			return err
		}
		sas = append(sas, sa{ns, n})
	}
	k, err := g.kube()
	if err != nil {
		return err
	}
	a, err := g.connect(*o.s, true)
	if err != nil {
		return err
	}
	id, err := a.getIdentity(ctx, name)
	if err != nil {
		return err
	}
	issuer := o.issuer
	if issuer == "" {
		if issuer, err = k.issuer(ctx); err != nil {
			return err
		}
	}
	phase := func(p, format string, args ...any) { fmt.Fprintf(out, "[%s] %s\n", p, fmt.Sprintf(format, args...)) }

	subject := Subject(o.brokerNamespace, BrokerServiceAccount)
	f, created, err := a.putFIC(ctx, name, FederatedCredential{Name: brokerFICName, Issuer: issuer, Subject: subject, Audiences: []string{ExchangeAudience}})
	if err != nil {
		return err
	}
	if created {
		phase(PhaseFIC, "created %s on identity %s (issuer %s, subject %s)", f.Name, name, issuer, subject)
	} else {
		phase(PhaseFIC, "identity %s already trusts %s (%s)", name, subject, f.Name)
	}

	cid := strings.ToLower(id.ClientID)
	roleName := "podid-use-" + cid
	rule := rbacv1.PolicyRule{APIGroups: []string{broker.AccessGroup}, Resources: []string{cid}, Verbs: []string{broker.AccessVerb}}
	role := &rbacv1.ClusterRole{}
	switch err := k.c.Get(ctx, keyOf("", roleName), role); {
	case apierrors.IsNotFound(err):
		role = &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: roleName, Labels: map[string]string{"app.kubernetes.io/managed-by": "podid"}}, Rules: []rbacv1.PolicyRule{rule}}
		if err := k.c.Create(ctx, role); err != nil {
			return fmt.Errorf("create ClusterRole %s: %w", roleName, err)
		}
		phase("rbac", "created ClusterRole %s (%s %s in %s)", roleName, broker.AccessVerb, cid, broker.AccessGroup)
	case err != nil:
		return fmt.Errorf("read ClusterRole %s: %w", roleName, err)
	case len(role.Rules) == 1 && equalRule(role.Rules[0], rule):
		phase("rbac", "ClusterRole %s unchanged", roleName)
	default:
		role.Rules = []rbacv1.PolicyRule{rule}
		if err := k.c.Update(ctx, role); err != nil {
			return fmt.Errorf("update ClusterRole %s: %w", roleName, err)
		}
		phase("rbac", "updated ClusterRole %s", roleName)
	}

	for _, s := range sas {
		subj := rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Name: s.name, Namespace: s.ns}
		rb := &rbacv1.RoleBinding{}
		switch err := k.c.Get(ctx, keyOf(s.ns, roleName), rb); {
		case apierrors.IsNotFound(err):
			rb = &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: roleName, Namespace: s.ns, Labels: map[string]string{"app.kubernetes.io/managed-by": "podid"}},
				RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: roleName}, Subjects: []rbacv1.Subject{subj}}
			if err := k.c.Create(ctx, rb); err != nil {
				return fmt.Errorf("create RoleBinding %s/%s: %w", s.ns, roleName, err)
			}
			phase("rbac", "created RoleBinding %s/%s for %s", s.ns, roleName, Subject(s.ns, s.name))
		case err != nil:
			return fmt.Errorf("read RoleBinding %s/%s: %w", s.ns, roleName, err)
		case rb.RoleRef.Kind != "ClusterRole" || rb.RoleRef.Name != roleName:
			return fmt.Errorf("RoleBinding %s/%s exists and refers to %s %s, not ClusterRole %s: remove it or rename yours", s.ns, roleName, rb.RoleRef.Kind, rb.RoleRef.Name, roleName)
		case slices.ContainsFunc(rb.Subjects, func(x rbacv1.Subject) bool {
			return x.Kind == subj.Kind && x.Name == subj.Name && x.Namespace == subj.Namespace
		}):
			phase("rbac", "RoleBinding %s/%s already grants %s", s.ns, roleName, Subject(s.ns, s.name))
		default:
			rb.Subjects = append(rb.Subjects, subj)
			if err := k.c.Update(ctx, rb); err != nil {
				return fmt.Errorf("update RoleBinding %s/%s: %w", s.ns, roleName, err)
			}
			phase("rbac", "RoleBinding %s/%s now grants %s", s.ns, roleName, Subject(s.ns, s.name))
		}

		want := map[string]string{workloadidentity.ClientIDAnnotation: id.ClientID, workloadidentity.TenantIDAnnotation: id.TenantID}
		acc := &corev1.ServiceAccount{}
		switch err := k.c.Get(ctx, keyOf(s.ns, s.name), acc); {
		case apierrors.IsNotFound(err):
			acc = &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: s.name, Namespace: s.ns, Annotations: want}}
			if err := k.c.Create(ctx, acc); err != nil {
				return fmt.Errorf("create ServiceAccount %s/%s: %w", s.ns, s.name, err)
			}
			phase(PhaseServiceAccount, "created ServiceAccount %s/%s", s.ns, s.name)
		case err != nil:
			return fmt.Errorf("read ServiceAccount %s/%s: %w", s.ns, s.name, err)
		default:
			changed := false
			if acc.Annotations == nil {
				acc.Annotations = map[string]string{}
			}
			for k, v := range want {
				if acc.Annotations[k] != v {
					acc.Annotations[k], changed = v, true
				}
			}
			if !changed {
				phase(PhaseServiceAccount, "ServiceAccount %s/%s unchanged", s.ns, s.name)
				continue
			}
			if err := k.c.Update(ctx, acc); err != nil {
				return fmt.Errorf("update ServiceAccount %s/%s: %w", s.ns, s.name, err)
			}
			phase(PhaseServiceAccount, "updated ServiceAccount %s/%s", s.ns, s.name)
		}
	}
	fmt.Fprintf(out, "pods of these service accounts annotated %s: \"true\" now get identity %s (%s) through the podid broker\n",
		workloadidentity.UseIdentityBindingAnnotation, name, id.ClientID)
	return nil
}

func equalRule(a, b rbacv1.PolicyRule) bool {
	return slices.Equal(a.APIGroups, b.APIGroups) && slices.Equal(a.Resources, b.Resources) && slices.Equal(a.Verbs, b.Verbs) &&
		len(a.ResourceNames) == 0 && len(a.NonResourceURLs) == 0
}

func keyOf(ns, name string) client.ObjectKey { return client.ObjectKey{Namespace: ns, Name: name} }
