package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"

	"github.com/podid/podid/test/e2e/framework"
)

// TestSmoke proves the node runs real pods the way podid needs them: a pod from a
// locally built image starts, reads its projected service-account token for the
// token-exchange audience (bound to the pod, signed by the issuer whose discovery
// document anyone can read), and reaches a server on the node with its own IP as
// source, both at the bridge address and at the node address.
func TestSmoke(t *testing.T) {
	c := framework.Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	ns := c.Namespace(t)
	srv := framework.StartHostServer(t)

	pod := framework.TestClientPod(ns, "smoke")
	framework.AddProjectedToken(pod, framework.TokenExchangeAudience)
	start := time.Now()
	pod = c.CreatePod(ctx, t, pod)
	t.Logf("pod %s/%s Ready in %v, IP %s", ns, pod.Name, time.Since(start).Round(time.Millisecond), pod.Status.PodIP)
	podIP, err := framework.PodIP(pod)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("projected token", func(t *testing.T) {
		jwt, _, err := c.Exec(ctx, ns, pod.Name, "", "cat", framework.AzureTokenFile)
		if err != nil {
			t.Fatal(err)
		}
		claims, err := c.VerifyToken(ctx, jwt)
		if err != nil {
			t.Fatalf("token read in the pod does not verify against the issuer: %v", err)
		}
		if !claims.Audience.Contains(framework.TokenExchangeAudience) {
			t.Errorf("aud = %v, want %s", claims.Audience, framework.TokenExchangeAudience)
		}
		if claims.Issuer != c.Issuer {
			t.Errorf("iss = %q, want %q", claims.Issuer, c.Issuer)
		}
		if want := "system:serviceaccount:" + ns + ":default"; claims.Subject != want {
			t.Errorf("sub = %q, want %q", claims.Subject, want)
		}
		if p := claims.Kubernetes.Pod; p == nil || p.Name != pod.Name || p.UID != string(pod.UID) {
			t.Errorf("kubernetes.io.pod = %+v, want %s (%s)", p, pod.Name, pod.UID)
		}
		if n := claims.Kubernetes.Node; n == nil || n.Name != c.NodeName {
			t.Errorf("kubernetes.io.node = %+v, want %s", n, c.NodeName)
		}
		// The test client's own decoder agrees (later tests rely on it).
		out, _, err := c.Exec(ctx, ns, pod.Name, "", "/testclient", "claims", framework.AzureTokenFile)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, framework.TokenExchangeAudience) {
			t.Errorf("testclient claims = %s, want the audience in it", out)
		}
	})

	for _, host := range []struct{ name, ip string }{{"bridge", c.BridgeIP}, {"node", c.NodeIP}} {
		t.Run("pod to node server at "+host.name+" address", func(t *testing.T) {
			path := "/from-pod/" + host.name
			out, _, err := c.Exec(ctx, ns, pod.Name, "", "/testclient", "get", srv.URL(host.ip, path))
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(out, "status=200\n") {
				t.Fatalf("GET %s from the pod: %q", srv.URL(host.ip, path), out)
			}
			wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
			defer wcancel()
			req, err := srv.WaitForRequest(wctx, path)
			if err != nil {
				t.Fatal(err)
			}
			if req.SourceIP != podIP {
				t.Errorf("server saw source %s, want the pod IP %s", req.SourceIP, podIP)
			}
		})
	}

	t.Run("busybox", func(t *testing.T) {
		out, _, err := c.Exec(ctx, ns, pod.Name, "", "sh", "-c", "wget -qO- "+srv.URL(c.BridgeIP, "/busybox")+" && cat /etc/passwd")
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("hello %s /busybox", podIP); !strings.Contains(out, want) || !strings.Contains(out, "root:x:0:0") {
			t.Errorf("output %q, want %q and /etc/passwd", out, want)
		}
	})
}

// TestIssuerDiscoveryIsAnonymous: an identity provider on the node can read the
// service-account issuer's discovery document and keys without credentials.
func TestIssuerDiscoveryIsAnonymous(t *testing.T) {
	c := framework.Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := c.Discovery(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d.Issuer != c.Issuer || d.JWKSURI != c.Issuer+"/openid/v1/jwks" {
		t.Errorf("discovery = %+v, want issuer %s and its /openid/v1/jwks", d, c.Issuer)
	}
}

// TestValidatingAdmissionPolicy: admissionregistration.k8s.io/v1
// ValidatingAdmissionPolicy is served and enforced (podid's least-privilege rules use it).
func TestValidatingAdmissionPolicy(t *testing.T) {
	c := framework.Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ns := c.Namespace(t)
	name := "podid-e2e-" + ns
	policy := &admissionregistrationv1.ValidatingAdmissionPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: admissionregistrationv1.ValidatingAdmissionPolicySpec{
			FailurePolicy: ptr.To(admissionregistrationv1.Fail),
			MatchConstraints: &admissionregistrationv1.MatchResources{ResourceRules: []admissionregistrationv1.NamedRuleWithOperations{{
				RuleWithOperations: admissionregistrationv1.RuleWithOperations{
					Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
					Rule:       admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"configmaps"}},
				},
			}}},
			Validations: []admissionregistrationv1.Validation{{
				Expression: `!has(object.metadata.labels) || !('deny' in object.metadata.labels)`,
				Message:    "denied by podid e2e policy",
			}},
		},
	}
	binding := &admissionregistrationv1.ValidatingAdmissionPolicyBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: admissionregistrationv1.ValidatingAdmissionPolicyBindingSpec{
			PolicyName:        name,
			ValidationActions: []admissionregistrationv1.ValidationAction{admissionregistrationv1.Deny},
			MatchResources: &admissionregistrationv1.MatchResources{NamespaceSelector: &metav1.LabelSelector{
				MatchLabels: map[string]string{corev1.LabelMetadataName: ns},
			}},
		},
	}
	if err := c.Client.Create(ctx, policy); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Client.Delete(context.Background(), policy) })
	if err := c.Client.Create(ctx, binding); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Client.Delete(context.Background(), binding) })

	// Policies take effect asynchronously: retry until the denial shows.
	i := 0
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		i++
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("denied-%d", i), Labels: map[string]string{"deny": "yes"}}}
		err := c.Client.Create(ctx, cm)
		if err == nil {
			return false, nil
		}
		if (apierrors.IsInvalid(err) || apierrors.IsForbidden(err)) && strings.Contains(err.Error(), "denied by podid e2e policy") {
			return true, nil
		}
		return false, err
	})
	if err != nil {
		t.Fatalf("policy never denied a labelled ConfigMap: %v", err)
	}
	allowed := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "allowed"}}
	if err := c.Client.Create(ctx, allowed); err != nil {
		t.Errorf("unlabelled ConfigMap: %v", err)
	}
}
