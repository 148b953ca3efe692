package webhook_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/podid/podid/internal/token"
	"github.com/podid/podid/internal/workloadidentity"
)

// TestIntegrationTokenGuard proves the node scoping of the agent's
// credential in the cluster: the real API server calls the token guard
// (deploy/webhook/validatingwebhookconfiguration.yaml as shipped, the
// webhook under its shipped RBAC) for the agent's TokenRequests, authenticated with a token bound to an agent pod
// on node-a (deploy/agent/rbac.yaml as shipped). Tokens for pods on node-a
// are issued; for a pod on node-b, an unscheduled pod, a replaced pod or a
// pod of another service account they are not. Other callers are not
// affected (matchConditions).
func TestIntegrationTokenGuard(t *testing.T) {
	e := env.Need(t)
	ctx := t.Context()
	ns := e.Namespace(t)
	ensureNamespace(t, certNS)
	applyManifest(t, "deploy/agent/rbac.yaml")
	applyManifest(t, "deploy/webhook/rbac.yaml")
	applyManifest(t, "deploy/webhook/rbac-tokenguard.yaml")
	applyManifest(t, "deploy/webhook/secret.yaml") // the shipped RBAC may update it, not create it
	startWebhookWith(t, ns, asWebhookServiceAccount(e))

	admin, err := kubernetes.NewForConfig(e.Config)
	if err != nil {
		t.Fatal(err)
	}
	mkPod := func(ns, name, sa, node string) *corev1.Pod {
		t.Helper()
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec: corev1.PodSpec{NodeName: node, ServiceAccountName: sa, Containers: []corev1.Container{{Name: "c", Image: "x"}}}}
		if err := e.Client.Create(ctx, p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	agentPod := mkPod(certNS, "podid-agent-guard", "podid-agent", "node-a")
	t.Cleanup(func() { _ = e.Client.Delete(ctx, agentPod) })
	exp := int64(3600)
	// The agent's credential as the kubelet projects it: bound to its pod.
	cred, err := admin.CoreV1().ServiceAccounts(certNS).CreateToken(ctx, "podid-agent", &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		ExpirationSeconds: &exp, BoundObjectRef: &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: agentPod.Name, UID: agentPod.UID}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rc := rest.AnonymousClientConfig(e.Config)
	rc.BearerToken = cred.Status.Token
	agent, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	for _, sa := range []string{"app", "other"} {
		createSA(t, ns, sa, nil)
	}
	here := mkPod(ns, "here", "app", "node-a")
	there := mkPod(ns, "there", "app", "node-b")
	pending := mkPod(ns, "pending", "app", "")
	otherSA := mkPod(ns, "other-sa", "other", "node-a")

	request := func(cs *kubernetes.Clientset, sa, name string, uid types.UID) error {
		secs := int64(600)
		_, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
			Audiences: []string{workloadidentity.TokenAudience}, ExpirationSeconds: &secs,
			BoundObjectRef: &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: name, UID: uid},
		}}, metav1.CreateOptions{})
		return err
	}
	// The API server picks up the configuration asynchronously.
	eventually(t, 30*time.Second, func() error {
		if err := request(agent, "app", there.Name, there.UID); !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "token guard") {
			return err
		}
		return nil
	})

	// Allowed: exactly what the agent does for a pod on its node.
	kr := token.KubeTokenRequester{Client: agent}
	if _, err := kr.RequestToken(ctx, token.Pod{Namespace: ns, Name: here.Name, UID: here.UID, ServiceAccount: "app"}, workloadidentity.TokenAudience, 600); err != nil {
		t.Fatalf("the agent's TokenRequest for a pod on its own node was refused: %v", err)
	}
	// Not the agent: not sent to the guard (the kubelet of node-b, say).
	if err := request(admin, "app", there.Name, there.UID); err != nil {
		t.Fatalf("a TokenRequest by someone other than the agent was refused: %v", err)
	}

	for _, tt := range []struct {
		name     string
		sa, pod  string
		uid      types.UID
		wantCode int32
		want     string
	}{
		{"pod on another node", "app", there.Name, there.UID, 403, "runs on node node-b; system:serviceaccount:podid-system:podid-agent on node node-a may only request tokens for pods on its own node"},
		{"unscheduled pod", "app", pending.Name, pending.UID, 403, "is not scheduled"},
		{"replaced pod", "app", here.Name, "00000000-0000-0000-0000-000000000000", 409, "deleted and replaced"},
		{"pod that does not exist", "app", "nope", "00000000-0000-0000-0000-000000000001", 404, "does not exist"},
		{"pod of another service account", "app", otherSA.Name, otherSA.UID, 403, `runs as service account "other", not "app"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := request(agent, tt.sa, tt.pod, tt.uid)
			if err == nil {
				t.Fatal("token issued, want a denial")
			}
			if !strings.Contains(err.Error(), "podid token guard") || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("denial = %v, want the guard's message containing %q", err, tt.want)
			}
			var st apierrors.APIStatus
			if !errors.As(err, &st) || st.Status().Code != tt.wantCode {
				t.Fatalf("denial code = %v, want %d", err, tt.wantCode)
			}
		})
	}

	// The agent reads the guard's answers for a gone or replaced pod as
	// "the caller's pod is gone" (a 404 to the caller), not as a failure.
	for _, p := range []token.Pod{
		{Namespace: ns, Name: "nope", UID: "00000000-0000-0000-0000-000000000001", ServiceAccount: "app"},
		{Namespace: ns, Name: here.Name, UID: "00000000-0000-0000-0000-000000000000", ServiceAccount: "app"},
	} {
		_, err := kr.RequestToken(ctx, p, workloadidentity.TokenAudience, 600)
		var te *token.Error
		if !errors.As(err, &te) || te.Reason != token.ReasonPodGone {
			t.Errorf("agent's TokenRequest for %s/%s (uid %s): %v, want reason %s", p.Namespace, p.Name, p.UID, err, token.ReasonPodGone)
		}
	}
}
