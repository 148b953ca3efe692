package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/spf13/cobra"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	podidv1 "github.com/podid/podid/api/v1"
	"github.com/podid/podid/internal/binding"
	"github.com/podid/podid/internal/workloadidentity"
)

// Plan is what migrate would change to move pod-identity workloads to
// workload identity.
type Plan struct {
	Issuer               string             `json:"issuer"`
	FederatedCredentials []PlannedFIC       `json:"federatedCredentials"`
	ServiceAccounts      []PlannedSA        `json:"serviceAccounts"`
	Workloads            []PlannedWorkload  `json:"workloads"`
	Problems             []MigrationProblem `json:"problems"`
}

// PlannedFIC is a federated credential an identity needs.
type PlannedFIC struct {
	AzureIdentity string `json:"azureIdentity"` // namespace/name
	ClientID      string `json:"clientId"`
	Subscription  string `json:"subscription"`
	ResourceGroup string `json:"resourceGroup"`
	Identity      string `json:"identity"` // ARM name
	Name          string `json:"name"`
	Subject       string `json:"subject"`
}

// PlannedSA is a ServiceAccount to annotate and label.
type PlannedSA struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	ClientID  string `json:"clientId"`
	TenantID  string `json:"tenantId,omitempty"`
}

// PlannedWorkload is a pod template to label.
type PlannedWorkload struct {
	Kind           string `json:"kind"`
	Namespace      string `json:"namespace"`
	Name           string `json:"name"`
	ServiceAccount string `json:"serviceAccount"`
	AzureIdentity  string `json:"azureIdentity"`
	// Rollout says how its pods pick the change up.
	Rollout string `json:"rollout"`
}

// MigrationProblem is something migrate will not do by itself.
type MigrationProblem struct {
	Object  string `json:"object"`
	Problem string `json:"problem"`
	Action  string `json:"action"`
}

type migrateOptions struct {
	s           scope
	namespace   string
	clusterWide bool
	apply       bool
	issuer      string
}

func newMigrateCommand(g *globals) *cobra.Command {
	o := &migrateOptions{}
	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "Move pod-identity (v1) workloads to workload identity; dry run unless --apply",
		Long: `migrate reads AzureIdentities, AzureIdentityBindings and the pods using them
and plans the workload-identity equivalent: the federated credential each
identity needs for each ServiceAccount, the ServiceAccount's client-id and
tenant-id annotations and use label, and the use label on each workload's pod
template. -o yaml prints the plan. --apply creates the federated credentials
(through ARM, as podid federated-credential does), then annotates the
ServiceAccounts, then labels the pod templates, so new pods find everything in
place; it says which workloads roll out and which need you.

The aadpodidbinding labels, bindings and identities are left as they are:
remove them once the workloads run on workload identity.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			k, err := g.kube()
			if err != nil {
				return err
			}
			// The dry run works without the cloud (identities without a
			// resourceID are then reported); --apply needs it.
			a, err := g.connect(o.s, false)
			if err != nil {
				if o.apply {
					return err
				}
				a = nil
			}
			p, err := plan(cmd.Context(), k, a, o)
			if err != nil {
				return err
			}
			if !o.apply {
				return printPlan(g, cmd.OutOrStdout(), p)
			}
			return applyPlan(cmd.Context(), k, a, p, cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	o.s.bind(f)
	f.StringVarP(&o.namespace, "namespace", "n", "", "only this namespace (default: all)")
	f.BoolVar(&o.clusterWide, "cluster-wide", false, "bindings select pods of every namespace (as the controller's --cluster-wide)")
	f.BoolVar(&o.apply, "apply", false, "perform the plan")
	f.StringVar(&o.issuer, "issuer", "", "issuer (default: the cluster's, from its OIDC discovery)")
	return cmd
}

// parseResourceID splits a user-assigned identity's ARM id.
func parseResourceID(id string) (sub, rg, name string, ok bool) {
	p := strings.Split(id, "/")
	if len(p) != 9 || p[0] != "" || !strings.EqualFold(p[1], "subscriptions") || !strings.EqualFold(p[3], "resourceGroups") ||
		!strings.EqualFold(p[5], "providers") || !strings.EqualFold(p[6], "Microsoft.ManagedIdentity") || !strings.EqualFold(p[7], "userAssignedIdentities") {
		return "", "", "", false
	}
	return p[2], p[4], p[8], true
}

type workloadKey struct{ kind, ns, name string }

// owner finds the workload whose pod template made the pod.
func owner(ctx context.Context, c client.Client, pod *corev1.Pod) (workloadKey, error) {
	ref := metav1.GetControllerOf(pod)
	if ref == nil {
		return workloadKey{"Pod", pod.Namespace, pod.Name}, nil
	}
	if ref.Kind == "ReplicaSet" {
		var rs appsv1.ReplicaSet
		if err := c.Get(ctx, types.NamespacedName{Namespace: pod.Namespace, Name: ref.Name}, &rs); err != nil {
			return workloadKey{}, fmt.Errorf("get ReplicaSet %s/%s: %s", pod.Namespace, ref.Name, oneLine(err.Error()))
		}
		if d := metav1.GetControllerOf(&rs); d != nil && d.Kind == "Deployment" {
			return workloadKey{"Deployment", pod.Namespace, d.Name}, nil
		}
	}
	return workloadKey{ref.Kind, pod.Namespace, ref.Name}, nil
}

type workloadUse struct {
	key        workloadKey
	sa         string
	identities map[string]binding.Match // by AzureIdentity ns/name
}

func plan(ctx context.Context, k *kube, a *azure, o *migrateOptions) (*Plan, error) {
	p := &Plan{Issuer: o.issuer, FederatedCredentials: []PlannedFIC{}, ServiceAccounts: []PlannedSA{}, Workloads: []PlannedWorkload{}, Problems: []MigrationProblem{}}
	if p.Issuer == "" {
		var err error
		if p.Issuer, err = k.issuer(ctx); err != nil {
			return nil, err
		}
	}
	var opts []client.ListOption
	if o.namespace != "" {
		opts = append(opts, client.InNamespace(o.namespace))
	}
	var pods corev1.PodList
	if err := k.c.List(ctx, &pods, opts...); err != nil {
		return nil, fmt.Errorf("list pods: %s", oneLine(err.Error()))
	}
	// Bindings and identities of every namespace: with --cluster-wide a
	// binding elsewhere may select these pods.
	var bl podidv1.AzureIdentityBindingList
	var il podidv1.AzureIdentityList
	var el podidv1.AzurePodIdentityExceptionList
	for _, l := range []client.ObjectList{&bl, &il, &el} {
		if err := k.c.List(ctx, l); err != nil {
			return nil, fmt.Errorf("list pod-identity objects: %s", oneLine(err.Error()))
		}
	}
	in := binding.Inputs{Identities: map[types.NamespacedName]*podidv1.AzureIdentity{}}
	for i := range bl.Items {
		in.Bindings = append(in.Bindings, &bl.Items[i])
	}
	for i := range il.Items {
		id := &il.Items[i]
		in.Identities[types.NamespacedName{Namespace: id.Namespace, Name: id.Name}] = id
	}
	rules := binding.Rules{ClusterWide: o.clusterWide}
	uses := map[workloadKey]*workloadUse{}
	problem := func(obj, prob, action string) {
		p.Problems = append(p.Problems, MigrationProblem{Object: obj, Problem: prob, Action: action})
	}
	for i := range pods.Items {
		pod := &pods.Items[i]
		if pod.Labels[podidv1.PodLabelKey] == "" || pod.DeletionTimestamp != nil {
			continue
		}
		pin := in
		pin.Exceptions = nil
		for j := range el.Items {
			if el.Items[j].Namespace == pod.Namespace {
				pin.Exceptions = append(pin.Exceptions, &el.Items[j])
			}
		}
		if binding.ExceptedBy(pod, pin.Exceptions) != nil {
			continue
		}
		matches, probs := rules.For(pod, pin)
		for _, pr := range probs {
			problem("pod/"+pod.Namespace+"/"+pod.Name, pr.Message, "fix the binding or identity, then run migrate again")
		}
		if len(matches) == 0 {
			continue
		}
		wk, err := owner(ctx, k.c, pod)
		if err != nil {
			return nil, err
		}
		u := uses[wk]
		if u == nil {
			u = &workloadUse{key: wk, sa: workloadidentity.ServiceAccountName(pod), identities: map[string]binding.Match{}}
			uses[wk] = u
		}
		for _, m := range matches {
			u.identities[m.Identity.Namespace+"/"+m.Identity.Name] = m
		}
	}
	keys := make([]workloadKey, 0, len(uses))
	for wk := range uses {
		keys = append(keys, wk)
	}
	sort.Slice(keys, func(i, j int) bool {
		return keys[i].ns+"/"+keys[i].kind+"/"+keys[i].name < keys[j].ns+"/"+keys[j].kind+"/"+keys[j].name
	})
	saClient := map[types.NamespacedName]string{} // SA → client id planned
	seenFIC := map[string]bool{}
	for _, wk := range keys {
		u := uses[wk]
		obj := strings.ToLower(wk.kind) + "/" + wk.ns + "/" + wk.name
		if len(u.identities) > 1 {
			var names []string
			for n := range u.identities {
				names = append(names, n)
			}
			sort.Strings(names)
			problem(obj, fmt.Sprintf("holds %d identities (%s); a ServiceAccount names one client id", len(names), strings.Join(names, ", ")),
				"split the workload, or keep one identity for it (its bindings) and run migrate again")
			continue
		}
		var m binding.Match
		var idName string
		for n, x := range u.identities { // exactly one
			idName, m = n, x
		}
		if m.Spec.Type != podidv1.UserAssignedMSI {
			problem(obj, fmt.Sprintf("uses AzureIdentity %s, a service principal with a %s in Secret %s/%s", idName,
				map[podidv1.IdentityType]string{podidv1.ServicePrincipal: "client secret", podidv1.ServicePrincipalCertificate: "certificate"}[m.Spec.Type],
				m.Spec.ClientPassword.Namespace, m.Spec.ClientPassword.Name),
				fmt.Sprintf("workload identity needs no secret: add a federated credential to app %s (az ad app federated-credential create --id %s with issuer %s, subject %s, audience %s), annotate ServiceAccount %s/%s with %s=%s and %s=%s, label the pod template %s=true, then delete the Secret",
					m.Spec.ClientID, m.Spec.ClientID, p.Issuer, Subject(wk.ns, u.sa), ExchangeAudience, wk.ns, u.sa, workloadidentity.ClientIDAnnotation, m.Spec.ClientID, workloadidentity.TenantIDAnnotation, m.Spec.TenantID, workloadidentity.UseLabel))
			continue
		}
		if u.sa == "default" {
			problem(obj, fmt.Sprintf("runs as ServiceAccount %s/default: trusting it would give identity %s to every pod of the namespace that runs as default", wk.ns, idName),
				"give the workload its own ServiceAccount (spec.template.spec.serviceAccountName), then run migrate again")
			continue
		}
		switch wk.kind {
		case "Job", "CronJob":
			problem(obj, "a Job's pod template cannot be changed", fmt.Sprintf("add the label %s: \"true\" to the Job's manifest for its next run", workloadidentity.UseLabel))
		}
		saKey := types.NamespacedName{Namespace: wk.ns, Name: u.sa}
		if prev, ok := saClient[saKey]; ok && prev != m.Spec.ClientID {
			problem(obj, fmt.Sprintf("shares ServiceAccount %s with a workload of another identity (client %s)", saKey, prev),
				"give each workload its own ServiceAccount, then run migrate again")
			continue
		}
		var sa corev1.ServiceAccount
		if err := k.c.Get(ctx, saKey, &sa); err == nil {
			if cur := sa.Annotations[workloadidentity.ClientIDAnnotation]; cur != "" && cur != m.Spec.ClientID {
				problem(obj, fmt.Sprintf("ServiceAccount %s already names client id %s, not %s", saKey, cur, m.Spec.ClientID),
					"decide which identity the ServiceAccount stands for, then run migrate again")
				continue
			}
		}
		fic := PlannedFIC{AzureIdentity: idName, ClientID: m.Spec.ClientID, Subject: Subject(wk.ns, u.sa), Name: defaultFICName(wk.ns, u.sa)}
		if sub, rg, name, ok := parseResourceID(m.Spec.ResourceID); ok {
			fic.Subscription, fic.ResourceGroup, fic.Identity = sub, rg, name
		} else if a != nil {
			id, err := a.identityByClientID(ctx, m.Spec.ClientID)
			if err != nil {
				problem(obj, fmt.Sprintf("AzureIdentity %s has no resourceID and its client id is not found: %v", idName, err), "set spec.resourceID, then run migrate again")
				continue
			}
			fic.Subscription, fic.ResourceGroup, fic.Identity = a.sub, id.ResourceGroup, id.Name
		} else {
			problem(obj, "AzureIdentity "+idName+" has no resourceID", "set spec.resourceID or configure the cloud (podid config set-cloud), then run migrate again")
			continue
		}
		if k := fic.Subscription + "/" + fic.ResourceGroup + "/" + fic.Identity + "|" + fic.Subject; !seenFIC[strings.ToLower(k)] {
			seenFIC[strings.ToLower(k)] = true
			p.FederatedCredentials = append(p.FederatedCredentials, fic)
		}
		if _, ok := saClient[saKey]; !ok {
			saClient[saKey] = m.Spec.ClientID
			p.ServiceAccounts = append(p.ServiceAccounts, PlannedSA{Namespace: wk.ns, Name: u.sa, ClientID: m.Spec.ClientID, TenantID: m.Spec.TenantID})
		}
		rollout := "rolls out when its pod template changes"
		switch wk.kind {
		case "Pod":
			rollout = "bare pod: recreate it from its manifest with the label " + workloadidentity.UseLabel + ": \"true\""
		case "ReplicaSet":
			rollout = "ReplicaSet: template updated; delete its pods so they are recreated"
		case "Job", "CronJob":
			continue
		}
		p.Workloads = append(p.Workloads, PlannedWorkload{Kind: wk.kind, Namespace: wk.ns, Name: wk.name, ServiceAccount: u.sa, AzureIdentity: idName, Rollout: rollout})
	}
	return p, nil
}

func printPlan(g *globals, w io.Writer, p *Plan) error {
	if g.output != "table" {
		return g.print(w, p, table{})
	}
	fmt.Fprintf(w, "dry run (apply with --apply); issuer %s\n", p.Issuer)
	for _, f := range p.FederatedCredentials {
		fmt.Fprintf(w, "federated credential %s on identity %s (resource group %s): subject %s\n", f.Name, f.Identity, f.ResourceGroup, f.Subject)
	}
	for _, s := range p.ServiceAccounts {
		fmt.Fprintf(w, "serviceaccount %s/%s: %s=%s, label %s=true\n", s.Namespace, s.Name, workloadidentity.ClientIDAnnotation, s.ClientID, workloadidentity.UseLabel)
	}
	for _, wl := range p.Workloads {
		fmt.Fprintf(w, "%s %s/%s: pod template label %s=true (%s)\n", strings.ToLower(wl.Kind), wl.Namespace, wl.Name, workloadidentity.UseLabel, wl.Rollout)
	}
	for _, pr := range p.Problems {
		fmt.Fprintf(w, "needs you: %s: %s\n    do: %s\n", pr.Object, pr.Problem, pr.Action)
	}
	if len(p.FederatedCredentials)+len(p.ServiceAccounts)+len(p.Workloads)+len(p.Problems) == 0 {
		fmt.Fprintln(w, "nothing to migrate: no pod uses a pod identity")
	}
	return nil
}

// applyPlan performs p in dependency order: credentials, then
// ServiceAccounts, then pod templates.
func applyPlan(ctx context.Context, k *kube, a *azure, p *Plan, w io.Writer) error {
	for _, f := range p.FederatedCredentials {
		s := *a
		s.sub, s.rg = f.Subscription, f.ResourceGroup
		got, created, err := s.putFIC(ctx, f.Identity, FederatedCredential{Name: f.Name, Issuer: p.Issuer, Subject: f.Subject, Audiences: []string{ExchangeAudience}})
		if err != nil {
			return err
		}
		verb := "exists"
		if created {
			verb = "created"
		}
		fmt.Fprintf(w, "federated credential %s on identity %s: %s\n", got.Name, f.Identity, verb)
	}
	for _, s := range p.ServiceAccounts {
		o := &saOptions{namespace: s.Namespace, name: s.Name, clientID: s.ClientID, tenantID: s.TenantID}
		msg, err := o.ensureServiceAccount(ctx, k)
		if err != nil {
			return err
		}
		fmt.Fprintln(w, msg)
	}
	for _, wl := range p.Workloads {
		if wl.Kind == "Pod" {
			fmt.Fprintf(w, "pod %s/%s: needs you: %s\n", wl.Namespace, wl.Name, wl.Rollout)
			continue
		}
		patch, _ := json.Marshal(map[string]any{"spec": map[string]any{"template": map[string]any{"metadata": map[string]any{"labels": map[string]string{workloadidentity.UseLabel: "true"}}}}})
		var obj client.Object
		switch wl.Kind {
		case "Deployment":
			obj = &appsv1.Deployment{}
		case "StatefulSet":
			obj = &appsv1.StatefulSet{}
		case "DaemonSet":
			obj = &appsv1.DaemonSet{}
		case "ReplicaSet":
			obj = &appsv1.ReplicaSet{}
		default:
			fmt.Fprintf(w, "%s %s/%s: needs you: add the label %s: \"true\" to its pod template\n", strings.ToLower(wl.Kind), wl.Namespace, wl.Name, workloadidentity.UseLabel)
			continue
		}
		obj.SetNamespace(wl.Namespace)
		obj.SetName(wl.Name)
		if err := k.c.Patch(ctx, obj, client.RawPatch(types.MergePatchType, patch)); err != nil {
			return fmt.Errorf("label the pod template of %s %s/%s: %s", wl.Kind, wl.Namespace, wl.Name, oneLine(err.Error()))
		}
		fmt.Fprintf(w, "%s %s/%s: pod template labelled; %s\n", strings.ToLower(wl.Kind), wl.Namespace, wl.Name, wl.Rollout)
	}
	for _, pr := range p.Problems {
		fmt.Fprintf(w, "needs you: %s: %s\n    do: %s\n", pr.Object, pr.Problem, pr.Action)
	}
	return nil
}
