// Package tokenguard is a validating admission endpoint that scopes the
// node agent's credential to its node: a TokenRequest by the agent is
// admitted only for a pod on the agent's own node, bound to that pod by
// name and UID and of the pod's service account. The webhook process
// serves it at Path next to the mutating webhook; its RBAC is its own
// (deploy/webhook/rbac-tokenguard.yaml: get pods).
package tokenguard

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	sigsjson "sigs.k8s.io/json"

	"github.com/podid/podid/internal/admission"
	"github.com/podid/podid/internal/workloadidentity"
)

// Path is where the guard serves AdmissionReviews.
const Path = "/validate-agent-token-request"

// Outcomes of a reviewed TokenRequest (label values of the admission metric).
const (
	OutcomeAllowed admission.Outcome = "token_allowed" // agent's TokenRequest admitted
	OutcomeDenied  admission.Outcome = "token_denied"  // agent's TokenRequest denied
)

// NodeNameExtra is the user-info extra the API server sets for a request
// authenticated with a service-account token bound to a pod on a node.
const NodeNameExtra = "authentication.kubernetes.io/node-name"

// Pods reads a pod as the API server has it now.
type Pods interface {
	// Pod returns the pod, or an error satisfying apierrors.IsNotFound.
	Pod(ctx context.Context, namespace, name string) (*corev1.Pod, error)
}

// LivePods reads pods with a GET per call: the guard needs the pod's
// current node and UID, not a cache's view of them, and a cluster-wide pod
// informer would cost the webhook far more than the agent's token requests
// (one per identity per pod and token lifetime) cost the API server.
type LivePods struct{ Client kubernetes.Interface }

// Pod implements Pods.
func (l LivePods) Pod(ctx context.Context, namespace, name string) (*corev1.Pod, error) {
	return l.Client.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
}

// Guard is a validating admission endpoint for `create
// serviceaccounts/token` by the node agent (the webhook configuration's
// matchConditions select the agent's requests; nothing else reaches it).
// It admits a TokenRequest only if the requester authenticated with a
// token bound to a pod on node N and the TokenRequest is bound, by name
// and UID, to a pod that runs on N with that service account. So the
// agent's credential, stolen from one node, cannot mint tokens for pods on
// other nodes — which neither RBAC nor a ValidatingAdmissionPolicy can
// express, because admission of serviceaccounts/token runs before the API
// server looks the bound pod up.
type Guard struct {
	pods    Pods
	timeout time.Duration
	obs     admission.Observer
	log     *slog.Logger
}

// Config assembles a Guard.
type Config struct {
	Pods Pods
	// Timeout bounds the pod lookup (default 3s: inside the webhook
	// configuration's 5s timeoutSeconds, so a slow lookup denies clearly
	// instead of the API server timing the call out).
	Timeout  time.Duration
	Observer admission.Observer // optional: records each answer
	Logger   *slog.Logger       // optional
}

// New assembles a Guard; it does no I/O.
func New(c Config) *Guard {
	g := &Guard{pods: c.Pods, timeout: c.Timeout, obs: c.Observer, log: c.Logger}
	if g.timeout <= 0 {
		g.timeout = 3 * time.Second
	}
	if g.log == nil {
		g.log = slog.New(slog.DiscardHandler)
	}
	return g
}

func (g *Guard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	admission.Serve(w, r, g.obs, g.log, g.Review)
}

var (
	tokenRequestKind = metav1.GroupVersionKind{Group: "authentication.k8s.io", Version: "v1", Kind: "TokenRequest"}
	saResource       = metav1.GroupVersionResource{Version: "v1", Resource: "serviceaccounts"}
)

// Review answers one admission request. Anything but CREATE of
// serviceaccounts/token is denied: the guard is only ever configured for
// that, and a misrouted request should be loud, not silently admitted.
func (g *Guard) Review(ctx context.Context, req *admissionv1.AdmissionRequest) (*admissionv1.AdmissionResponse, admission.Outcome) {
	resp := &admissionv1.AdmissionResponse{UID: req.UID, Allowed: true}
	denied := func(code int32, format string, args ...any) (*admissionv1.AdmissionResponse, admission.Outcome) {
		return admission.Deny(resp, code, "podid token guard: "+fmt.Sprintf(format, args...)), OutcomeDenied
	}
	if req.Kind != tokenRequestKind || req.Resource != saResource || req.SubResource != "token" || req.Operation != admissionv1.Create {
		return denied(http.StatusBadRequest, "only CREATE of serviceaccounts/token (authentication.k8s.io/v1 TokenRequest) is reviewed here, got %s %s/%s %s",
			req.Operation, admission.Truncate(req.Resource.Resource), admission.Truncate(req.SubResource), admission.Truncate(req.Kind.Kind))
	}
	user := admission.Truncate(req.UserInfo.Username)
	nodes := req.UserInfo.Extra[NodeNameExtra]
	if len(nodes) != 1 || nodes[0] == "" {
		return denied(http.StatusForbidden, "%s must authenticate with the service-account token bound to its own pod on a node (no %s in its credential)", user, NodeNameExtra)
	}
	node := nodes[0]
	var tr authenticationv1.TokenRequest
	if err := sigsjson.UnmarshalCaseSensitivePreserveInts(req.Object.Raw, &tr); err != nil {
		return denied(http.StatusBadRequest, "decode TokenRequest: %v", err)
	}
	ref := tr.Spec.BoundObjectRef
	if ref == nil || ref.Kind != "Pod" || (ref.APIVersion != "" && ref.APIVersion != "v1") || ref.Name == "" || ref.UID == "" {
		return denied(http.StatusForbidden, "%s may only request tokens bound to a pod by name and UID", user)
	}
	pctx, cancel := context.WithTimeout(ctx, g.timeout)
	defer cancel()
	pod, err := g.pods.Pod(pctx, req.Namespace, ref.Name)
	switch {
	case apierrors.IsNotFound(err):
		// NotFound and Conflict (below) as the API server itself answers a
		// token bound to a gone or replaced pod, so the agent tells "the
		// caller's pod is gone" from a refusal.
		return denied(http.StatusNotFound, "pod %s/%s does not exist", req.Namespace, admission.Truncate(ref.Name))
	case err != nil:
		g.log.Error("token guard: read pod", "namespace", req.Namespace, "pod", ref.Name, "err", err)
		return denied(http.StatusServiceUnavailable, "could not read pod %s/%s to check its node; retry", req.Namespace, admission.Truncate(ref.Name))
	}
	if pod.UID != ref.UID {
		return denied(http.StatusConflict, "pod %s/%s is %s, not %s (deleted and replaced)", req.Namespace, pod.Name, pod.UID, admission.Truncate(string(ref.UID)))
	}
	if pod.Spec.NodeName != node {
		where := "is not scheduled"
		if pod.Spec.NodeName != "" {
			where = "runs on node " + pod.Spec.NodeName
		}
		return denied(http.StatusForbidden, "pod %s/%s %s; %s on node %s may only request tokens for pods on its own node", req.Namespace, pod.Name, where, user, node)
	}
	if sa := workloadidentity.ServiceAccountName(pod); sa != req.Name {
		return denied(http.StatusForbidden, "pod %s/%s runs as service account %q, not %q", req.Namespace, pod.Name, sa, admission.Truncate(req.Name))
	}
	return resp, OutcomeAllowed
}

var _ Pods = LivePods{}
