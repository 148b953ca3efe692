package agent

import (
	"context"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	podidv1 "github.com/podid/podid/api/v1"
	"github.com/podid/podid/internal/binding"
	"github.com/podid/podid/internal/token"
	"github.com/podid/podid/internal/workloadidentity"
)

// DefaultClientIDAnnot is podid's own annotation; the workload-identity
// names the agent reads are in internal/workloadidentity.
const DefaultClientIDAnnot = "podid.dev/default-client-id"

// Decider says which identities a pod may use now. A refusal is a *Denial.
type Decider interface {
	Identities(ctx context.Context, pod *corev1.Pod) ([]token.Identity, error)
}

// BindingDecider applies the v1 rules of package binding (the same the
// controller applies) and the v2 service-account annotation. It reads from
// an informer-backed client.Reader with binding.IndexBindings applied.
type BindingDecider struct {
	Reader client.Reader
	Rules  binding.Rules
	// DefaultTenantID is used when an identity names no tenant.
	DefaultTenantID string
	// Authority is the configured identity provider; AllowedAuthorities lists
	// further hosts an AzureIdentity's adEndpoint may name. Anything else is refused.
	Authority          string
	AllowedAuthorities []string
	// BrokerClientIDs are the identities obtained through the podid broker
	// (the operator's choice, per identity); the service-account identity
	// of a pod annotated use-identity-binding: "true" is too.
	BrokerClientIDs []string
	// BrokerSecretIdentities: types 1/2 are obtained through the broker,
	// which reads their Secrets (the agent then needs none).
	BrokerSecretIdentities bool
}

// Identities implements Decider.
func (d *BindingDecider) Identities(ctx context.Context, pod *corev1.Pod) ([]token.Identity, error) {
	var (
		out      []token.Identity
		problems []string
	)
	if pod.Labels[podidv1.PodLabelKey] != "" {
		ids, probs, err := d.v1(ctx, pod)
		if err != nil {
			return nil, err
		}
		out, problems = append(out, ids...), append(problems, probs...)
	}
	if pod.Labels[workloadidentity.UseLabel] == "true" {
		id, prob, err := d.v2(ctx, pod)
		if err != nil {
			return nil, err
		}
		if prob != "" {
			problems = append(problems, prob)
		} else if !slices.ContainsFunc(out, func(o token.Identity) bool { return strings.EqualFold(o.ClientID, id.ClientID) }) {
			out = append(out, id)
		}
	}
	if len(out) == 0 {
		msg := fmt.Sprintf("no identity is assigned to pod %s/%s: label it %s=<selector> matching an AzureIdentityBinding in its namespace, or use a service account annotated %s with the pod labelled %s=true", pod.Namespace, pod.Name, podidv1.PodLabelKey, workloadidentity.ClientIDAnnotation, workloadidentity.UseLabel)
		if len(problems) > 0 {
			msg = fmt.Sprintf("no usable identity for pod %s/%s: %s", pod.Namespace, pod.Name, strings.Join(problems, "; "))
		}
		return nil, denied(DenyNoIdentity, "%s", msg)
	}
	for i := range out {
		out[i].Broker = out[i].Broker || slices.ContainsFunc(d.BrokerClientIDs, func(c string) bool { return strings.EqualFold(c, out[i].ClientID) }) ||
			(d.BrokerSecretIdentities && out[i].Kind != token.Federated)
	}
	return out, nil
}

func (d *BindingDecider) v1(ctx context.Context, pod *corev1.Pod) ([]token.Identity, []string, error) {
	if !binding.Eligible(pod) {
		return nil, []string{"pod is not eligible for pod identities (not scheduled, finished, being deleted or on the host network)"}, nil
	}
	in, err := d.Rules.Load(ctx, d.Reader, pod)
	if err != nil {
		return nil, nil, denied(DenyKubernetes, "cannot read pod-identity objects: %v", err)
	}
	if e := binding.ExceptedBy(pod, in.Exceptions); e != nil {
		// Policy: excepted pods get no pod identity and are not passed to
		// the node's metadata service either (there is nothing to pass to:
		// no identity is attached to the node).
		return nil, nil, denied(DenyExcepted, "pod %s/%s is excepted from pod identity by AzurePodIdentityException %s/%s: podid serves excepted pods no identity and never forwards them to the node's metadata service", pod.Namespace, pod.Name, e.Namespace, e.Name)
	}
	matches, probs := d.Rules.For(pod, in)
	var problems []string
	for _, p := range probs {
		problems = append(problems, p.Message)
	}
	var out []token.Identity
	for _, m := range matches {
		id, prob := d.fromSpec(m)
		if prob != "" {
			problems = append(problems, prob)
			continue
		}
		out = append(out, id)
	}
	return out, problems, nil
}

func (d *BindingDecider) fromSpec(m binding.Match) (token.Identity, string) {
	s := m.Spec
	origin := "AzureIdentity " + m.Identity.Namespace + "/" + m.Identity.Name
	id := token.Identity{ClientID: s.ClientID, TenantID: s.TenantID, ResourceID: s.ResourceID, Origin: origin}
	if id.TenantID == "" {
		id.TenantID = d.DefaultTenantID
	}
	if s.ADEndpoint != "" {
		a := strings.TrimRight(s.ADEndpoint, "/")
		if !strings.EqualFold(a, strings.TrimRight(d.Authority, "/")) && !slices.ContainsFunc(d.AllowedAuthorities, func(x string) bool { return strings.EqualFold(strings.TrimRight(x, "/"), a) }) {
			return id, fmt.Sprintf("%s names adEndpoint %q, which this agent is not configured to trust (--allowed-authority)", origin, s.ADEndpoint)
		}
		id.Authority = a
	}
	switch s.Type {
	case podidv1.UserAssignedMSI:
		id.Kind = token.Federated
	case podidv1.ServicePrincipal, podidv1.ServicePrincipalCertificate:
		id.Kind = token.Secret
		if s.Type == podidv1.ServicePrincipalCertificate {
			id.Kind = token.Certificate
		}
		ns := s.ClientPassword.Namespace
		if ns == "" {
			ns = m.Identity.Namespace
		}
		// A Secret in another namespace would let whoever writes this
		// AzureIdentity use credentials they cannot read.
		if ns != m.Identity.Namespace {
			return id, fmt.Sprintf("%s references Secret %s/%s in another namespace: podid only uses Secrets in the identity's own namespace", origin, ns, s.ClientPassword.Name)
		}
		id.SecretRef = types.NamespacedName{Namespace: ns, Name: s.ClientPassword.Name}
	}
	return id, ""
}

func (d *BindingDecider) v2(ctx context.Context, pod *corev1.Pod) (token.Identity, string, error) {
	name := pod.Spec.ServiceAccountName
	if name == "" {
		name = "default"
	}
	var sa corev1.ServiceAccount
	if err := d.Reader.Get(ctx, types.NamespacedName{Namespace: pod.Namespace, Name: name}, &sa); err != nil {
		if apierrors.IsNotFound(err) {
			return token.Identity{}, fmt.Sprintf("service account %s/%s does not exist", pod.Namespace, name), nil
		}
		return token.Identity{}, "", denied(DenyKubernetes, "cannot read service account %s/%s: %v", pod.Namespace, name, err)
	}
	cid := strings.TrimSpace(sa.Annotations[workloadidentity.ClientIDAnnotation])
	if cid == "" {
		return token.Identity{}, fmt.Sprintf("service account %s/%s has no %s annotation", pod.Namespace, name, workloadidentity.ClientIDAnnotation), nil
	}
	tid := strings.TrimSpace(sa.Annotations[workloadidentity.TenantIDAnnotation])
	if tid == "" {
		tid = d.DefaultTenantID
	}
	return token.Identity{Kind: token.Federated, ClientID: cid, TenantID: tid, Origin: "ServiceAccount " + pod.Namespace + "/" + name,
		Broker: pod.Annotations[workloadidentity.UseIdentityBindingAnnotation] == "true"}, "", nil
}

// choose picks the identity the caller asked for among those allowed.
func choose(pod *corev1.Pod, ids []token.Identity, sel selector) (token.Identity, error) {
	allowed := func() string {
		var s []string
		for _, id := range ids {
			s = append(s, id.ClientID)
		}
		return strings.Join(s, ", ")
	}
	switch {
	case sel.clientID != "":
		for _, id := range ids {
			if strings.EqualFold(id.ClientID, sel.clientID) {
				return id, nil
			}
		}
		return token.Identity{}, denied(DenyNotAllowed, "identity with client_id %s is not assigned to pod %s/%s (assigned: %s)", sel.clientID, pod.Namespace, pod.Name, allowed())
	case sel.resourceID != "":
		for _, id := range ids {
			if id.ResourceID != "" && strings.EqualFold(id.ResourceID, sel.resourceID) {
				return id, nil
			}
		}
		return token.Identity{}, denied(DenyNotAllowed, "identity with msi_res_id %s is not assigned to pod %s/%s (assigned client ids: %s)", sel.resourceID, pod.Namespace, pod.Name, allowed())
	case sel.objectID != "":
		return token.Identity{}, denied(DenyNotAllowed, "selecting an identity by object_id is not supported (AzureIdentity records no object id): use client_id (assigned: %s)", allowed())
	}
	if len(ids) == 1 {
		return ids[0], nil
	}
	if def := pod.Annotations[DefaultClientIDAnnot]; def != "" {
		for _, id := range ids {
			if strings.EqualFold(id.ClientID, def) {
				return id, nil
			}
		}
	}
	return token.Identity{}, denied(DenyChooseIdentity, "Multiple user assigned identities exist for pod %s/%s, please specify the clientId / resourceId of the identity in the token request (client_id one of: %s; or set the pod annotation %s)", pod.Namespace, pod.Name, allowed(), DefaultClientIDAnnot)
}
