package agent

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/podid/podid/internal/testenv"
	"github.com/podid/podid/internal/token"
	"github.com/podid/podid/internal/workloadidentity"
)

// applyManifest creates every object of a YAML file from deploy/.
func applyManifest(t *testing.T, e *testenv.Env, rel string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), rel))
	if err != nil {
		t.Fatal(err)
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(b), 4096)
	for {
		u := &unstructured.Unstructured{}
		if err := dec.Decode(&u.Object); err != nil {
			if errors.Is(err, io.EOF) {
				return
			}
			t.Fatalf("%s: %v", rel, err)
		}
		if len(u.Object) == 0 {
			continue
		}
		if err := e.Client.Create(t.Context(), u); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatalf("%s: create %s %s: %v", rel, u.GetKind(), u.GetName(), err)
		}
	}
}

// agentConfig applies the shipped namespace, RBAC and admission policy and
// returns a client config authenticated as the agent would be in its
// DaemonSet pod on node: a token bound to an agent pod on that node.
func agentConfig(t *testing.T, e *testenv.Env, node string) *rest.Config {
	t.Helper()
	ctx := t.Context()
	for _, f := range []string{"deploy/agent/namespace.yaml", "deploy/agent/rbac.yaml", "deploy/agent/token-policy.yaml"} {
		applyManifest(t, e, f)
	}
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{GenerateName: "podid-agent-", Namespace: "podid-system"},
		Spec: corev1.PodSpec{NodeName: node, ServiceAccountName: "podid-agent", Containers: []corev1.Container{{Name: "agent", Image: "localhost/podid:dev"}}}}
	if err := e.Client.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Client.Delete(context.Background(), p) })
	admin, err := kubernetes.NewForConfig(e.Config)
	if err != nil {
		t.Fatal(err)
	}
	exp := int64(3600)
	tr, err := admin.CoreV1().ServiceAccounts("podid-system").CreateToken(ctx, "podid-agent", &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		ExpirationSeconds: &exp, BoundObjectRef: &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: p.Name, UID: p.UID}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c := rest.AnonymousClientConfig(e.Config)
	c.BearerToken = tr.Status.Token
	c.QPS, c.Burst = 200, 400
	return c
}

// The shipped RBAC and ValidatingAdmissionPolicy hold: the agent, with its
// pod-bound credential, can mint only pod-bound, short-lived tokens for the
// exchange audience, and nothing with a credential that is not bound to a
// pod on a node.
func TestAgentTokenPolicy(t *testing.T) {
	e := env.Need(t)
	ctx := t.Context()
	for _, f := range []string{"deploy/agent/namespace.yaml", "deploy/agent/rbac.yaml", "deploy/agent/token-policy.yaml"} {
		applyManifest(t, e, f)
	}
	admin, err := kubernetes.NewForConfig(e.Config)
	if err != nil {
		t.Fatal(err)
	}
	mkPod := func(ns, name, sa, node string) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec: corev1.PodSpec{NodeName: node, ServiceAccountName: sa, Containers: []corev1.Container{{Name: "c", Image: "x"}}}}
		if err := e.Client.Create(ctx, p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	exp := int64(3600)
	agentPod := mkPod("podid-system", "podid-agent-"+strings.ToLower(t.Name()[:8]), "podid-agent", "node-1")
	t.Cleanup(func() { _ = e.Client.Delete(ctx, agentPod) })
	// The agent's credential as the kubelet would project it: bound to its pod.
	bound, err := admin.CoreV1().ServiceAccounts("podid-system").CreateToken(ctx, "podid-agent", &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		ExpirationSeconds: &exp, BoundObjectRef: &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: agentPod.Name, UID: agentPod.UID}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// A credential of the same service account that is not bound to a pod.
	unbound, err := admin.CoreV1().ServiceAccounts("podid-system").CreateToken(ctx, "podid-agent", &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &exp}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	as := func(tok string) *kubernetes.Clientset {
		c := rest.AnonymousClientConfig(e.Config)
		c.BearerToken = tok
		cs, err := kubernetes.NewForConfig(c)
		if err != nil {
			t.Fatal(err)
		}
		return cs
	}
	agent, stolen := as(bound.Status.Token), as(unbound.Status.Token)

	ns := e.Namespace(t)
	if err := e.Client.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "app", Namespace: ns}}); err != nil {
		t.Fatal(err)
	}
	target := mkPod(ns, "p", "app", "node-1")

	req := func(aud []string, ref *authenticationv1.BoundObjectReference, secs int64) *authenticationv1.TokenRequest {
		return &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{Audiences: aud, BoundObjectRef: ref, ExpirationSeconds: &secs}}
	}
	podRef := &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: target.Name, UID: target.UID}
	exch := []string{workloadidentity.TokenAudience}

	// The policy becomes effective asynchronously.
	waitUntil(t, 30*time.Second, func() bool {
		_, err := agent.CoreV1().ServiceAccounts(ns).CreateToken(ctx, "app", req([]string{"https://kubernetes.default.svc"}, podRef, 600), metav1.CreateOptions{})
		return apierrors.IsForbidden(err) && strings.Contains(err.Error(), "audience")
	})

	// Allowed: exactly what the agent does.
	kr := token.KubeTokenRequester{Client: agent}
	if _, err := kr.RequestToken(ctx, token.Pod{Namespace: ns, Name: target.Name, UID: target.UID, ServiceAccount: "app"}, workloadidentity.TokenAudience, 600); err != nil {
		t.Fatalf("the agent's own TokenRequest was refused: %v", err)
	}
	// And for the podid broker (docs/broker.md), still bound to the pod.
	if _, err := kr.RequestToken(ctx, token.Pod{Namespace: ns, Name: target.Name, UID: target.UID, ServiceAccount: "app"}, token.BrokerAudience, 600); err != nil {
		t.Fatalf("the agent's TokenRequest for the broker was refused: %v", err)
	}

	for _, tt := range []struct {
		name string
		cs   *kubernetes.Clientset
		req  *authenticationv1.TokenRequest
		want string
	}{
		{"Kubernetes API audience", agent, req([]string{"https://kubernetes.default.svc"}, podRef, 600), "audience"},
		{"default audience", agent, req(nil, podRef, 600), "audience"},
		{"extra audience", agent, req([]string{workloadidentity.TokenAudience, "other"}, podRef, 600), "audience"},
		{"both audiences", agent, req([]string{workloadidentity.TokenAudience, token.BrokerAudience}, podRef, 600), "audience"},
		{"broker audience, not bound", agent, req([]string{token.BrokerAudience}, nil, 600), "bound to a pod"},
		{"not bound", agent, req(exch, nil, 600), "bound to a pod"},
		{"bound without UID", agent, req(exch, &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: target.Name}, 600), "bound to a pod"},
		{"bound to a secret", agent, req(exch, &authenticationv1.BoundObjectReference{Kind: "Secret", APIVersion: "v1", Name: "s", UID: types.UID("u")}, 600), "bound to a pod"},
		{"long-lived", agent, req(exch, podRef, 7200), "3600"},
		{"credential not bound to a pod", stolen, req(exch, podRef, 600), "bound to its own pod"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, "app", tt.req, metav1.CreateOptions{})
			if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want Forbidden mentioning %q", err, tt.want)
			}
		})
	}

	// The API server refuses a token for a pod that was replaced (UID
	// mismatch): the agent reports the pod as gone.
	_, err = kr.RequestToken(ctx, token.Pod{Namespace: ns, Name: target.Name, UID: "00000000-0000-0000-0000-000000000000", ServiceAccount: "app"}, workloadidentity.TokenAudience, 600)
	if token.ReasonOf(err) != token.ReasonPodGone {
		t.Fatalf("stale UID: %v", err)
	}

	// RBAC: no Secrets, no writes.
	if _, err := agent.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("agent listed Secrets: %v", err)
	}
	if _, err := agent.CoreV1().Secrets(ns).Get(ctx, "x", metav1.GetOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("agent read a Secret: %v", err)
	}
	if err := agent.CoreV1().Pods(ns).Delete(ctx, target.Name, metav1.DeleteOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("agent deleted a pod: %v", err)
	}
	// Reading the pods of its node works (with the field selector it uses).
	if _, err := agent.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=node-1"}); err != nil {
		t.Fatalf("agent cannot list its node's pods: %v", err)
	}
}
