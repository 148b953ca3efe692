package cli

import (
	"context"
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	podidv1 "github.com/podid/podid/api/v1"
	"github.com/podid/podid/internal/binding"
	"github.com/podid/podid/internal/workloadidentity"
)

// podIdentity walks the v1 chain: label → bindings → identity → exceptions
// → assignment → agent → federated credential → exchange.
func (d *doc) podIdentity(ctx context.Context, saName string) {
	pod, rep := d.pod, d.rep
	sel := pod.Labels[podidv1.PodLabelKey]
	rep.add("pod.binding-label", Pass, fmt.Sprintf("pod has label %s=%s", podidv1.PodLabelKey, sel), "")
	switch {
	case pod.Spec.HostNetwork:
		rep.add("pod.eligible", Fail, "pod uses hostNetwork: its traffic cannot be told from the node's, so it never gets a pod identity",
			"run the workload without hostNetwork, or use workload identity (podid migrate)")
		return
	case pod.Spec.NodeName == "":
		rep.add("pod.eligible", Fail, "pod is not scheduled yet", "kubectl describe pod "+pod.Name+" -n "+pod.Namespace+" (scheduling events)")
		return
	case pod.DeletionTimestamp != nil || pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed:
		rep.add("pod.eligible", Fail, "pod is finished or terminating", "")
		return
	}
	rep.add("pod.eligible", Pass, "pod is scheduled on node "+pod.Spec.NodeName+" and not hostNetwork", "")

	in, near, err := d.loadV1(ctx)
	if err != nil {
		rep.add("bindings", Fail, err.Error(), "")
		return
	}
	matches, problems := binding.Rules{ClusterWide: d.o.clusterWide}.For(pod, in)
	selecting := len(matches) + len(problems)
	if selecting == 0 {
		msg := fmt.Sprintf("no AzureIdentityBinding selects %s=%s", podidv1.PodLabelKey, sel)
		if !d.o.clusterWide {
			msg += " in namespace " + pod.Namespace
		}
		if len(near) > 0 {
			msg += " (" + strings.Join(near, "; ") + ")"
		}
		rep.add("bindings", Fail, msg, fmt.Sprintf(
			"kubectl apply -f - <<EOF\napiVersion: aadpodidentity.k8s.io/v1\nkind: AzureIdentityBinding\nmetadata: {name: %s-binding, namespace: %s}\nspec: {azureIdentity: <identity>, selector: %s}\nEOF", sel, pod.Namespace, sel))
		return
	}
	var names []string
	for _, m := range matches {
		names = append(names, m.Binding.Namespace+"/"+m.Binding.Name)
	}
	for _, p := range problems {
		names = append(names, p.Binding.Namespace+"/"+p.Binding.Name)
	}
	rep.add("bindings", Pass, fmt.Sprintf("binding(s) %s select the pod", strings.Join(names, ", ")), "")
	for _, p := range problems {
		rep.add("identity", Fail, p.Message, p.Message)
	}
	if len(matches) == 0 {
		return
	}
	for _, m := range matches {
		st := Pass
		msg := fmt.Sprintf("AzureIdentity %s/%s: %s, client id %s", m.Identity.Namespace, m.Identity.Name, m.Spec.Type, m.Spec.ClientID)
		if c := meta.FindStatusCondition(m.Identity.Status.Conditions, podidv1.ConditionValid); c != nil && c.Status != "True" {
			st, msg = Fail, msg+": controller says "+c.Message
		}
		rep.add("identity", st, msg, "")
	}
	if e := binding.ExceptedBy(pod, in.Exceptions); e != nil {
		rep.add("exception", Fail, fmt.Sprintf("AzurePodIdentityException %s/%s excepts the pod (labels %v)", e.Namespace, e.Name, e.Spec.Normalized()),
			fmt.Sprintf("remove the excepting label from the pod template, or kubectl -n %s delete azurepodidentityexception %s", e.Namespace, e.Name))
		return
	}
	rep.add("exception", Pass, "no AzurePodIdentityException excepts the pod", "")
	if !d.assignment(ctx, matches) {
		return
	}
	if !d.agent(ctx) {
		return
	}
	m := matches[0]
	if m.Spec.Type != podidv1.UserAssignedMSI {
		rep.add("federated-credential", Pass, fmt.Sprintf("identity %s/%s is a service principal (%s): no federated credential needed; the agent uses its Secret %s/%s",
			m.Identity.Namespace, m.Identity.Name, m.Spec.Type, m.Spec.ClientPassword.Namespace, m.Spec.ClientPassword.Name), "")
		return
	}
	if !d.federatedCredential(ctx, m.Spec.ClientID, saName) {
		return
	}
	d.sharedServiceAccount(ctx, in, m, saName)
	authority, tenant := d.agentAuthority(ctx, m.Spec)
	if authority == "" || tenant == "" {
		rep.add("exchange", Skip, "token exchange not tried: the agent's authority and tenant are unknown (no podid config, no readable "+agentConfigMap+")", "")
		return
	}
	if !d.authorityReachable(ctx, authority, tenant) {
		return
	}
	d.exchange(ctx, saName, authority, tenant, m.Spec.ClientID)
}

// loadV1 reads the inputs binding.Rules decides on, and explains near
// misses: bindings whose selector differs only in case, or that live in
// another namespace.
func (d *doc) loadV1(ctx context.Context) (binding.Inputs, []string, error) {
	pod := d.pod
	sel := pod.Labels[podidv1.PodLabelKey]
	in := binding.Inputs{Identities: map[types.NamespacedName]*podidv1.AzureIdentity{}}
	var bl podidv1.AzureIdentityBindingList
	if err := d.k.c.List(ctx, &bl); err != nil {
		// Not allowed cluster-wide: the pod's namespace is what counts by default.
		if err := d.k.c.List(ctx, &bl, client.InNamespace(pod.Namespace)); err != nil {
			return in, nil, fmt.Errorf("list AzureIdentityBindings: %s", oneLine(err.Error()))
		}
	}
	var near []string
	for i := range bl.Items {
		b := &bl.Items[i]
		bs := b.Spec.Normalized()
		switch {
		case bs.Selector == sel:
			in.Bindings = append(in.Bindings, b)
			if !d.o.clusterWide && b.Namespace != pod.Namespace {
				near = append(near, fmt.Sprintf("binding %s/%s selects %q but is in namespace %s: bindings select pods of their own namespace", b.Namespace, b.Name, sel, b.Namespace))
			}
		case strings.EqualFold(bs.Selector, sel):
			near = append(near, fmt.Sprintf("binding %s/%s has selector %q: selectors are case-sensitive", b.Namespace, b.Name, bs.Selector))
		}
	}
	for _, b := range in.Bindings {
		k := types.NamespacedName{Namespace: b.Namespace, Name: b.Spec.Normalized().AzureIdentity}
		if _, done := in.Identities[k]; done || k.Name == "" {
			continue
		}
		var id podidv1.AzureIdentity
		if err := d.k.c.Get(ctx, k, &id); err == nil {
			in.Identities[k] = &id
		}
	}
	var exl podidv1.AzurePodIdentityExceptionList
	if err := d.k.c.List(ctx, &exl, client.InNamespace(pod.Namespace)); err != nil {
		return in, near, fmt.Errorf("list AzurePodIdentityExceptions: %s", oneLine(err.Error()))
	}
	for i := range exl.Items {
		in.Exceptions = append(in.Exceptions, &exl.Items[i])
	}
	return in, near, nil
}

// assignment checks the controller recorded an AzureAssignedIdentity for
// this pod (this UID) and each matched identity.
func (d *doc) assignment(ctx context.Context, matches []binding.Match) bool {
	pod := d.pod
	var l podidv1.AzureAssignedIdentityList
	if err := d.k.c.List(ctx, &l, client.InNamespace(pod.Namespace)); err != nil {
		d.rep.add("assignment", Fail, "list AzureAssignedIdentities: "+oneLine(err.Error()), "")
		return false
	}
	ok := true
	for _, m := range matches {
		var found *podidv1.AzureAssignedIdentity
		for i := range l.Items {
			a := &l.Items[i]
			if a.Spec.Pod == pod.Name && a.Spec.PodNamespace == pod.Namespace && (a.Spec.PodUID == "" || a.Spec.PodUID == string(pod.UID)) &&
				a.Spec.AzureIdentityRef != nil && a.Spec.AzureIdentityRef.Name == m.Identity.Name && a.Spec.AzureIdentityRef.Namespace == m.Identity.Namespace {
				found = a
			}
		}
		switch {
		case found == nil:
			d.rep.add("assignment", Fail, fmt.Sprintf("no AzureAssignedIdentity for the pod and identity %s/%s: podid controller has not assigned it", m.Identity.Namespace, m.Identity.Name),
				fmt.Sprintf("kubectl -n %s get deploy podid-controller; kubectl -n %s logs deploy/podid-controller", systemNamespace, systemNamespace))
			ok = false
		case found.Status.Status != "Assigned":
			d.rep.add("assignment", Fail, fmt.Sprintf("AzureAssignedIdentity %s is %q, not Assigned", found.Name, found.Status.Status),
				fmt.Sprintf("kubectl -n %s logs deploy/podid-controller", systemNamespace))
			ok = false
		default:
			d.rep.add("assignment", Pass, fmt.Sprintf("AzureAssignedIdentity %s is Assigned on node %s", found.Name, found.Spec.NodeName), "")
		}
	}
	return ok
}

// agent checks a ready podid agent runs on the pod's node (ready means its
// caches are synced and its interception rules installed).
func (d *doc) agent(ctx context.Context) bool {
	node := d.pod.Spec.NodeName
	var pods corev1.PodList
	if err := d.k.c.List(ctx, &pods, client.InNamespace(systemNamespace), client.MatchingLabels{appNameLabel: agentAppLabel}); err != nil {
		d.rep.add("agent", Fail, "list agent pods: "+oneLine(err.Error()), "")
		return false
	}
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.Spec.NodeName != node {
			continue
		}
		if !podReady(p) {
			d.rep.add("agent", Fail, fmt.Sprintf("agent %s/%s on node %s is not ready (caches not synced or interception rules not installed)", p.Namespace, p.Name, node),
				fmt.Sprintf("kubectl -n %s logs %s; kubectl -n %s describe pod %s", p.Namespace, p.Name, p.Namespace, p.Name))
			return false
		}
		d.rep.add("agent", Pass, fmt.Sprintf("agent %s/%s is ready on node %s", p.Namespace, p.Name, node), "")
		return true
	}
	d.rep.add("agent", Fail, "no podid agent runs on node "+node,
		fmt.Sprintf("kubectl -n %s get daemonset podid-agent (its tolerations and nodeSelector must admit node %s); kubectl apply -k deploy/agent", systemNamespace, node))
	return false
}

// agentAuthority is what the agent uses for an identity: the identity's
// tenant, else the agent's; the agent's authority. It reads the agent's
// ConfigMap and falls back to the CLI config.
func (d *doc) agentAuthority(ctx context.Context, s podidv1.AzureIdentitySpec) (authority, tenant string) {
	var cm corev1.ConfigMap
	if err := d.k.c.Get(ctx, types.NamespacedName{Namespace: systemNamespace, Name: agentConfigMap}, &cm); err == nil {
		authority, tenant = cm.Data["AUTHORITY"], cm.Data["AZURE_TENANT_ID"]
	}
	if d.cfg != nil {
		if authority == "" {
			authority = d.cfg.Authority
		}
		if tenant == "" {
			tenant = d.cfg.TenantID
		}
	}
	if s.TenantID != "" {
		tenant = s.TenantID
	}
	return authority, tenant
}

// sharedServiceAccount warns when pods that the binding does not select run
// as the same ServiceAccount: the federated credential trusts the account,
// not the binding, so each of them can exchange its own projected token for
// this identity directly (docs/agent.md, "The real boundary of a v1 identity
// under federation").
func (d *doc) sharedServiceAccount(ctx context.Context, in binding.Inputs, m binding.Match, saName string) {
	var pods corev1.PodList
	if err := d.k.c.List(ctx, &pods, client.InNamespace(d.pod.Namespace)); err != nil {
		d.rep.add("serviceaccount.shared", Warn, "pods of ServiceAccount "+saName+" not listed: "+err.Error(), "")
		return
	}
	var others []string
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.UID == d.pod.UID || workloadidentity.ServiceAccountName(p) != saName {
			continue
		}
		selected := false
		matches, _ := binding.Rules{ClusterWide: d.o.clusterWide}.For(p, in)
		for _, pm := range matches {
			if pm.Identity.UID == m.Identity.UID {
				selected = true
			}
		}
		if !selected {
			others = append(others, p.Name)
		}
	}
	if len(others) == 0 {
		d.rep.add("serviceaccount.shared", Pass, fmt.Sprintf("no pod outside the binding runs as ServiceAccount %s/%s", d.pod.Namespace, saName), "")
		return
	}
	sort.Strings(others)
	if len(others) > 5 {
		others = append(others[:5], fmt.Sprintf("and %d more", len(others)-5))
	}
	d.rep.add("serviceaccount.shared", Warn, fmt.Sprintf(
		"pods the binding does not select also run as ServiceAccount %s/%s (%s): the federated credential lets each of them exchange its own token for identity %s; give the bound workload a ServiceAccount of its own",
		d.pod.Namespace, saName, strings.Join(others, ", "), m.Spec.ClientID),
		fmt.Sprintf("give the bound workload a ServiceAccount of its own (kubectl -n %s create serviceaccount <name>, set serviceAccountName) and federate that one", d.pod.Namespace))
}
