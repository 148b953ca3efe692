package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	podidv1 "github.com/podid/podid/api/v1"
	"github.com/podid/podid/internal/intercept"
	"github.com/podid/podid/test/e2e/framework"
)

const (
	agentNamespace  = "podid-system"
	agentDaemonSet  = "podid-agent"
	agentPort       = "2579" // deploy/agent/daemonset.yaml --port
	miClientImage   = "localhost/podid-miclient:dev"
	imdsTokenPath   = "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=" + wiResource
	agentV1Selector = "podid-e2e-v1"
	// agentAuthority is the sts as the agent (hostNetwork) reaches it: the
	// Service's ClusterIP, which kube-proxy also translates for host
	// processes, and which the sts certificate names.
	agentAuthority = "https://" + stsServiceIP
)

// TestAgent proves podid agent end to end on the real node: podid sts
// (deploy/sts) trusts the cluster's issuer; podid agent runs as
// deploy/agent ships it (the kustomization's resources in order, only its
// two ConfigMaps filled for this cluster, see deployAgent); pods running the
// unmodified azidentity.ManagedIdentityCredential (test/e2e/images/miclient,
// no endpoint override) reach http://169.254.169.254 only through the
// agent's interception rule, and the access tokens they get verify against
// the sts's JWKS.
//
// Steps: 00 sts, 01 CRDs, 02 agent (DaemonSet Ready), 03 identities and
// bindings, 04 cases: v1 binding, no binding, v2 service account,
// hostNetwork pod, and last agent gone (fail closed).
func TestAgent(t *testing.T) {
	c := framework.Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	if !nodeHasImage(ctx, t, c, miClientImage) {
		t.Fatalf("image %s not imported: run hack/image.sh miclient", miClientImage)
	}
	ns := c.Namespace(t)

	// Identities in the sts: each trusts exactly one service account of ns.
	v1 := wiWorkload{name: "v1", sa: "sa-v1", fic: true, clientID: newUUID(t)}
	v2 := wiWorkload{name: "v2", sa: "sa-v2", fic: true, clientID: newUUID(t)}
	for _, w := range []*wiWorkload{&v1, &v2} {
		w.subject = "system:serviceaccount:" + ns + ":" + w.sa
	}

	// 00: the sts.
	start := time.Now()
	ensureNamespace(ctx, t, c, stsNamespace)
	stsPodIP := deploySTS(ctx, t, c, []wiWorkload{v1, v2})
	stsTransport, caPEM := stsClientTransport(ctx, t, stsPodIP)
	t.Logf("00 sts ready at %s (%s)", stsPodIP, time.Since(start).Round(time.Millisecond))

	// 01: the pod-identity CRDs (no controller: the agent reads the objects).
	start = time.Now()
	applyKustomization(ctx, t, c, filepath.Join("deploy", "crds"), nil)
	for _, crd := range []string{"azureidentities", "azureidentitybindings", "azurepodidentityexceptions", "azureassignedidentities"} {
		if err := waitCRDEstablished(ctx, c, crd+".aadpodidentity.k8s.io"); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("01 CRDs established (%s)", time.Since(start).Round(time.Millisecond))

	// 02: the agent. Its interception rules outlive it by design; this test
	// removes them from the node (it runs on the node, as root) once the
	// agent is gone, so that no later test meets them.
	start = time.Now()
	rules := nodeInterceptor(t, c)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), framework.PodTimeout+30*time.Second)
		defer cancel()
		deleteAgent(ctx, t, c)
		if err := rules.Uninstall(ctx); err != nil {
			t.Errorf("remove the agent's interception rules from the node: %v", err)
		}
	})
	deployAgent(ctx, t, c, caPEM)
	if ok, err := rules.Check(ctx); err != nil || !ok {
		t.Fatalf("agent Ready but its interception rules are not on the node (ok=%v, err=%v)", ok, err)
	}
	t.Logf("02 agent DaemonSet ready (%s)", time.Since(start).Round(time.Millisecond))

	// 03: the v1 identity and binding, the service accounts.
	id := &podidv1.AzureIdentity{
		TypeMeta:   metav1.TypeMeta{APIVersion: podidv1.GroupVersion.String(), Kind: "AzureIdentity"},
		ObjectMeta: metav1.ObjectMeta{Name: "id-v1"},
		Spec:       podidv1.AzureIdentitySpec{Type: podidv1.UserAssignedMSI, ClientID: v1.clientID, TenantID: wiTenantID},
	}
	binding := &podidv1.AzureIdentityBinding{
		TypeMeta:   metav1.TypeMeta{APIVersion: podidv1.GroupVersion.String(), Kind: "AzureIdentityBinding"},
		ObjectMeta: metav1.ObjectMeta{Name: "id-v1-binding"},
		Spec:       podidv1.AzureIdentityBindingSpec{AzureIdentity: "id-v1", Selector: agentV1Selector},
	}
	c.Apply(ctx, t, ns, mustYAML(t, id))
	c.Apply(ctx, t, ns, mustYAML(t, binding))
	c.Apply(ctx, t, ns, mustYAML(t, &corev1.ServiceAccount{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "ServiceAccount"}, ObjectMeta: metav1.ObjectMeta{Name: v1.sa},
	}))
	c.Apply(ctx, t, ns, mustYAML(t, &corev1.ServiceAccount{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "ServiceAccount"},
		ObjectMeta: metav1.ObjectMeta{Name: v2.sa, Annotations: map[string]string{
			"azure.workload.identity/client-id": v2.clientID, "azure.workload.identity/tenant-id": wiTenantID,
		}},
	}))

	// 04: the cases, in order; "agent-gone" must stay last.
	cases := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"v1-binding", func(t *testing.T) {
			pod := miClientPod(ns, "v1-bound", v1.sa, map[string]string{podidv1.PodLabelKey: agentV1Selector})
			pod = c.CreatePod(ctx, t, pod)
			logs := waitForLog(ctx, t, c, ns, pod.Name, "miclient: token acquired")
			t.Logf("%s", lastLine(logs))
			access, _, err := c.Exec(ctx, ns, pod.Name, "", "/miclient", "cat", "/tmp/access-token")
			if err != nil {
				t.Fatalf("read access token: %v", err)
			}
			verifyAccessToken(ctx, t, stsTransport, strings.TrimSpace(access), v1.clientID)
		}},
		{"no-binding-denied", func(t *testing.T) {
			// Same service account (its FIC exists), no aadpodidbinding label:
			// the agent must refuse before any exchange.
			pod := miClientPod(ns, "unbound", v1.sa, nil, "-max-retries=-1")
			pod = c.CreatePod(ctx, t, pod)
			logs := waitForLog(ctx, t, c, ns, pod.Name, "no identity is assigned to pod "+ns+"/"+pod.Name)
			line := lineWith(logs, "no identity is assigned")
			if !strings.Contains(line, "404") {
				t.Errorf("denial is not a 404: %s", line)
			}
			if strings.Contains(logs, "miclient: token acquired") {
				t.Fatalf("a pod without binding got a token")
			}
			t.Logf("azidentity reported: %s", line)
		}},
		{"v2-service-account", func(t *testing.T) {
			pod := miClientPod(ns, "v2-wi", v2.sa, map[string]string{"azure.workload.identity/use": "true"})
			pod = c.CreatePod(ctx, t, pod)
			logs := waitForLog(ctx, t, c, ns, pod.Name, "miclient: token acquired")
			t.Logf("%s", lastLine(logs))
			access, _, err := c.Exec(ctx, ns, pod.Name, "", "/miclient", "cat", "/tmp/access-token")
			if err != nil {
				t.Fatalf("read access token: %v", err)
			}
			verifyAccessToken(ctx, t, stsTransport, strings.TrimSpace(access), v2.clientID)
		}},
		{"host-network-denied", func(t *testing.T) {
			// Labelled for the binding, but sharing the node's network: its
			// traffic is not in the pod CIDR, so it is not intercepted; it
			// calls the agent's listener directly and must get 403.
			pod := framework.TestClientPod(ns, "host-net")
			pod.Labels[podidv1.PodLabelKey] = agentV1Selector
			pod.Spec.HostNetwork = true
			pod.Spec.DeprecatedServiceAccount = v1.sa
			pod = c.CreatePod(ctx, t, pod)
			url := "http://" + c.NodeIP + ":" + agentPort + imdsTokenPath
			out, _, err := c.Exec(ctx, ns, pod.Name, "", "/testclient", "get", "-H", "Metadata: true", url)
			if err != nil {
				t.Fatalf("hostNetwork pod could not reach the agent: %v", err)
			}
			if !strings.HasPrefix(out, "status=403\n") || !strings.Contains(out, `"error"`) || strings.Contains(out, "access_token") {
				t.Fatalf("hostNetwork pod got %q, want status=403 with a JSON error and no token", firstLine(out))
			}
			t.Logf("hostNetwork pod: %s %s", firstLine(out), strings.TrimSpace(strings.TrimPrefix(out, firstLine(out))))
		}},
		{"agent-gone-fails-closed", func(t *testing.T) {
			pod := framework.TestClientPod(ns, "after-agent")
			pod.Labels[podidv1.PodLabelKey] = agentV1Selector
			pod.Spec.DeprecatedServiceAccount = v1.sa
			pod = c.CreatePod(ctx, t, pod)
			deleteAgent(ctx, t, c)
			if ok, err := rules.Check(ctx); err != nil || !ok {
				t.Fatalf("the interception rules did not outlive the agent (ok=%v, err=%v)", ok, err)
			}
			// The interception rules stay (the agent never removes them):
			// the DNAT now leads to a closed port, so the request is
			// refused at once rather than leaking anywhere else.
			t0 := time.Now()
			out, _, err := c.Exec(ctx, ns, pod.Name, "", "/testclient", "get", "-H", "Metadata: true", "http://169.254.169.254"+imdsTokenPath)
			took := time.Since(t0)
			if err == nil {
				t.Fatalf("with the agent gone the pod's request was answered: %q", firstLine(out))
			}
			if !strings.Contains(err.Error(), "connection refused") {
				t.Fatalf("with the agent gone the request failed, but not by refusal: %v", err)
			}
			if took > 5*time.Second {
				t.Errorf("refusal took %s, want well under 5s", took)
			}
			t.Logf("agent gone: request refused in %s", took.Round(time.Millisecond))
		}},
	}
	for _, tc := range cases {
		start := time.Now()
		ok := t.Run(tc.name, tc.run)
		t.Logf("case %s: pass=%v (%s)", tc.name, ok, time.Since(start).Round(time.Millisecond))
	}
}

// miClientPod is a pod running miclient as sa with extra labels and args.
func miClientPod(ns, name, sa string, labels map[string]string, args ...string) *corev1.Pod {
	l := map[string]string{"app": name}
	for k, v := range labels {
		l[k] = v
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: l},
		Spec: corev1.PodSpec{
			DeprecatedServiceAccount:      sa,
			TerminationGracePeriodSeconds: ptr.To[int64](1),
			Containers: []corev1.Container{{
				Name: "client", Image: miClientImage, ImagePullPolicy: corev1.PullNever,
				Command: append([]string{"/miclient"}, args...),
			}},
		},
	}
}

// applyKustomization applies the resources a kustomization.yaml lists, in
// order (the kustomizations podid ships have neither patches nor
// generators), after patch has adjusted each object.
func applyKustomization(ctx context.Context, t *testing.T, c *framework.Cluster, dir string, patch func(*unstructured.Unstructured)) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(framework.RepoRoot(), dir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var k struct {
		Resources []string `json:"resources"`
	}
	if err := yaml.Unmarshal(b, &k); err != nil {
		t.Fatalf("%s/kustomization.yaml: %v", dir, err)
	}
	var raw map[string]any
	must(t, yaml.Unmarshal(b, &raw))
	for key := range raw {
		if key != "apiVersion" && key != "kind" && key != "resources" {
			t.Fatalf("%s/kustomization.yaml uses %q: applyKustomization handles only resources", dir, key)
		}
	}
	for _, f := range k.Resources {
		objs := readManifest(t, filepath.Join(dir, f))
		var rest []*unstructured.Unstructured
		for _, o := range objs {
			if patch != nil {
				patch(o)
			}
			if o.GetKind() == "Namespace" {
				// Shared with the sts (and whoever else): applied, never deleted.
				ob, err := yaml.Marshal(o.Object)
				must(t, err)
				nsObj, err := framework.DecodeManifest(ob)
				must(t, err)
				if err := c.Client.Patch(ctx, nsObj[0], client.Apply, client.FieldOwner(framework.FieldOwner), client.ForceOwnership); err != nil {
					t.Fatalf("apply namespace %s: %v", o.GetName(), err)
				}
				continue
			}
			rest = append(rest, o)
		}
		applyObjects(ctx, t, c, rest)
	}
}

// deployAgent applies deploy/agent as shipped, with the ConfigMaps filled
// for this cluster — the only change:
//   - podid-agent-config: POD_CIDR = the node's pod CIDR, AUTHORITY = the
//     sts at its ClusterIP (reachable from the host network through
//     kube-proxy, and named by its certificate), AZURE_TENANT_ID = the sts
//     tenant;
//   - podid-sts-ca: ca.pem = the sts CA;
//
// plus a pod-template annotation with their digest, so that a DaemonSet left
// by an interrupted run restarts with this configuration. The DaemonSet's
// args are as shipped. It waits until the DaemonSet is Ready (its readiness
// probe: caches synced, rules installed).
func deployAgent(ctx context.Context, t *testing.T, c *framework.Cluster, caPEM []byte) {
	t.Helper()
	config := map[string]any{"POD_CIDR": c.PodCIDR, "AUTHORITY": agentAuthority, "AZURE_TENANT_ID": wiTenantID}
	sum := sha256.Sum256([]byte(fmt.Sprintf("%v\n%s", config, caPEM)))
	applyKustomization(ctx, t, c, filepath.Join("deploy", "agent"), func(o *unstructured.Unstructured) {
		switch {
		case o.GetKind() == "ConfigMap" && o.GetName() == "podid-agent-config":
			must(t, unstructured.SetNestedField(o.Object, config, "data"))
		case o.GetKind() == "ConfigMap" && o.GetName() == "podid-sts-ca":
			must(t, unstructured.SetNestedField(o.Object, string(caPEM), "data", "ca.pem"))
		case o.GetKind() == "DaemonSet":
			must(t, unstructured.SetNestedField(o.Object, hex.EncodeToString(sum[:8]), "spec", "template", "metadata", "annotations", "podid.dev/e2e-config"))
		}
	})
	var ds appsv1.DaemonSet
	err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 2*framework.PodTimeout, true, func(ctx context.Context) (bool, error) {
		if err := c.Client.Get(ctx, client.ObjectKey{Namespace: agentNamespace, Name: agentDaemonSet}, &ds); err != nil {
			return false, client.IgnoreNotFound(err)
		}
		s := ds.Status
		return s.ObservedGeneration >= ds.Generation && s.DesiredNumberScheduled >= 1 &&
			s.UpdatedNumberScheduled == s.DesiredNumberScheduled && s.NumberReady == s.DesiredNumberScheduled &&
			s.NumberAvailable == s.DesiredNumberScheduled, nil
	})
	if err != nil {
		if p := agentPodLogs(ctx, c); p != "" {
			t.Logf("agent logs:\n%s", p)
		}
		t.Fatalf("DaemonSet %s/%s not Ready (status %+v): %v", agentNamespace, agentDaemonSet, ds.Status, err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			if p := agentPodLogs(ctx, c); p != "" {
				t.Logf("agent logs (tail):\n%s", p)
			}
		}
	})
}

// agentPodLogs returns the last lines of the agent pods' logs (never tokens:
// the agent does not log them).
func agentPodLogs(ctx context.Context, c *framework.Cluster) string {
	pods, err := c.Clientset.CoreV1().Pods(agentNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=podid-agent"})
	if err != nil {
		return ""
	}
	var b strings.Builder
	tail := int64(40)
	for _, p := range pods.Items {
		l, err := c.Clientset.CoreV1().Pods(agentNamespace).GetLogs(p.Name, &corev1.PodLogOptions{TailLines: &tail}).DoRaw(ctx)
		if err == nil {
			fmt.Fprintf(&b, "--- %s\n%s", p.Name, l)
		}
	}
	return b.String()
}

// deleteAgent deletes the agent DaemonSet and waits until its pods are gone.
func deleteAgent(ctx context.Context, t *testing.T, c *framework.Cluster) {
	t.Helper()
	ds := &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Namespace: agentNamespace, Name: agentDaemonSet}}
	if err := c.Client.Delete(ctx, ds, client.PropagationPolicy(metav1.DeletePropagationForeground)); client.IgnoreNotFound(err) != nil {
		t.Fatalf("delete DaemonSet: %v", err)
	}
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, framework.PodTimeout, true, func(ctx context.Context) (bool, error) {
		pods, err := c.Clientset.CoreV1().Pods(agentNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=podid-agent"})
		if err != nil {
			return false, err
		}
		return len(pods.Items) == 0, nil
	})
	if err != nil {
		t.Fatalf("agent pods still present: %v", err)
	}
}

// nodeInterceptor is the agent's interception as configured by deployAgent,
// driven with this machine's (the node's) iptables: to check and, at the
// end, remove the rules the agent installed.
func nodeInterceptor(t *testing.T, c *framework.Cluster) *intercept.Interceptor {
	t.Helper()
	cidr, err := netip.ParsePrefix(c.PodCIDR)
	must(t, err)
	node, err := netip.ParseAddr(c.NodeIP)
	must(t, err)
	port, err := netip.ParseAddrPort("0.0.0.0:" + agentPort)
	must(t, err)
	ic, err := intercept.New(intercept.Config{PodCIDRs: []netip.Prefix{cidr}, Target: netip.AddrPortFrom(node, port.Port())})
	if err != nil {
		t.Fatalf("interceptor: %v", err)
	}
	return ic
}

// waitCRDEstablished polls until the CRD reports Established.
func waitCRDEstablished(ctx context.Context, c *framework.Cluster, name string) error {
	crd := &unstructured.Unstructured{}
	crd.SetAPIVersion("apiextensions.k8s.io/v1")
	crd.SetKind("CustomResourceDefinition")
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		if err := c.Client.Get(ctx, client.ObjectKey{Name: name}, crd); err != nil {
			return false, client.IgnoreNotFound(err)
		}
		conds, _, _ := unstructured.NestedSlice(crd.Object, "status", "conditions")
		for _, x := range conds {
			m, _ := x.(map[string]any)
			if m["type"] == "Established" && m["status"] == "True" {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("CRD %s not established: %w", name, err)
	}
	return nil
}

func firstLine(s string) string { l, _, _ := strings.Cut(s, "\n"); return l }

// lineWith returns the last line of s containing sub.
func lineWith(s, sub string) string {
	lines := strings.Split(s, "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.Contains(lines[i], sub) {
			return lines[i]
		}
	}
	return ""
}
