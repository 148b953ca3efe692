package cli

import (
	"context"
	"fmt"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/podid/podid/internal/broker"
	"github.com/podid/podid/internal/workloadidentity"
)

// identityBinding walks the chain of a pod served through the podid broker
// (annotated use-identity-binding, docs/broker.md): what the webhook
// injected, the RBAC grant the broker requires, the broker itself and the
// identity's one federated credential, naming the fix of the first break.
func (d *doc) identityBinding(ctx context.Context, saName, clientID string) {
	pod, rep := d.pod, d.rep
	var missing []string
	for _, c := range pod.Spec.Containers {
		got := ""
		for _, e := range c.Env {
			if e.Name == workloadidentity.EnvClientID {
				got = e.Value
			}
		}
		if got != clientID {
			missing = append(missing, fmt.Sprintf("container %s has %s=%q", c.Name, workloadidentity.EnvClientID, got))
		}
	}
	if len(missing) > 0 {
		rep.add("webhook.injected", Fail, "identity-binding pod without the identity's client id: "+strings.Join(missing, "; "),
			"recreate the pod with the webhook running (it injects "+workloadidentity.EnvClientID+" for the IMDS endpoint)")
		return
	}
	rep.add("webhook.injected", Pass, fmt.Sprintf("webhook injected %s=%s; the SDK asks the IMDS endpoint (no token file)", workloadidentity.EnvClientID, clientID), "")

	user := Subject(pod.Namespace, saName)
	sar, err := d.k.cs.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User: user, Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + pod.Namespace, "system:authenticated"},
		ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: pod.Namespace, Group: broker.AccessGroup, Resource: strings.ToLower(clientID), Verb: broker.AccessVerb},
	}}, metav1.CreateOptions{})
	switch {
	case err != nil:
		rep.add("broker.grant", Warn, "could not ask the authorizer whether "+user+" may use the identity: "+oneLine(err.Error()), "")
	case !sar.Status.Allowed || sar.Status.Denied:
		rep.add("broker.grant", Fail, fmt.Sprintf("the broker refuses this pod: %s may not %s resource %s in API group %s", user, broker.AccessVerb, strings.ToLower(clientID), broker.AccessGroup),
			fmt.Sprintf("podid identity bind <identity> --service-account %s/%s   (a ClusterRole with that rule and a RoleBinding in %s)", pod.Namespace, saName, pod.Namespace))
		return
	default:
		rep.add("broker.grant", Pass, fmt.Sprintf("%s may %s %s (RBAC)", user, broker.AccessVerb, strings.ToLower(clientID)), "")
	}

	var dep appsv1.Deployment
	err = d.k.c.Get(ctx, types.NamespacedName{Namespace: systemNamespace, Name: "podid-broker"}, &dep)
	switch {
	case apierrors.IsNotFound(err):
		rep.add("broker", Fail, "the podid broker is not installed in "+systemNamespace+": the agent answers this pod 503",
			"helm upgrade podid deploy/chart/podid -n "+systemNamespace+" --reuse-values --set broker.enabled=true")
		return
	case err != nil:
		rep.add("broker", Warn, "could not read the broker's Deployment: "+oneLine(err.Error()), "")
	case dep.Status.ReadyReplicas == 0:
		rep.add("broker", Fail, "no ready podid broker replica: the agent answers new token requests 503",
			fmt.Sprintf("kubectl -n %s describe pods -l %s=podid-broker", systemNamespace, appNameLabel))
		return
	default:
		rep.add("broker", Pass, fmt.Sprintf("podid broker: %d of %d replicas ready", dep.Status.ReadyReplicas, dep.Status.Replicas), "")
	}
	d.federatedCredentialFor(ctx, clientID, systemNamespace, BrokerServiceAccount)
}
