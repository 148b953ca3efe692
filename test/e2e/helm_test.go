package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/podid/podid/internal/sts"
	"github.com/podid/podid/test/e2e/framework"
)

const helmRelease = "podid"

// upgradeRefusedWindow bounds how long a pod's token requests may fail while
// an upgrade rolls the agent (deploy/chart/podid/README.md, the agent's rolling update).
const upgradeRefusedWindow = 5 * time.Second

// TestHelmLifecycle installs podid with its chart (values-local.yaml, as
// hack/up.sh does) on the real node and takes it through a release's life:
//
//	00 remove what other tests applied from deploy/ (same names, not the release's)
//	01 helm install --wait; a seed-003 pod gets an access token from the sts;
//	   helm test (the chart's hook pod gets one too)
//	02 helm upgrade with a changed value (the agent and webhook roll): the
//	   token issued before still verifies, the sts CA is unchanged, a new pod
//	   gets a token
//	03 helm rollback to revision 1: CA unchanged, a new pod gets a token
//	04 helm uninstall: no object of the release is left but the CRDs.
//
// The times of install, upgrade and rollback (each with --wait) are logged.
func TestHelmLifecycle(t *testing.T) {
	c := framework.Connect(t)
	helmPath := framework.Helm(t)
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	ns := c.Namespace(t)
	chart := filepath.Join(framework.RepoRoot(), "deploy", "chart", "podid")

	w := wiWorkload{name: "seed-003", sa: "sademo", app: "azcli", fic: true, clientID: newUUID(t)}
	w.subject = "system:serviceaccount:" + ns + ":" + w.sa
	values := helmValues(t, c, w)
	helm := func(args ...string) string {
		t.Helper()
		out, err := runHelm(ctx, helmPath, c.Kubeconfig, args...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	base := []string{"--namespace", stsNamespace, "-f", filepath.Join(chart, "values-local.yaml"), "-f", values}

	// 00: a clean slate. The release's objects are what the chart renders.
	sv, err := c.Clientset.Discovery().ServerVersion()
	must(t, err)
	rendered := helm(append([]string{"template", helmRelease, chart, "--kube-version", sv.GitVersion}, base...)...)
	objs, err := framework.DecodeManifest([]byte(rendered))
	must(t, err)
	deleteAndWait(ctx, t, c, objs)
	privilegedNamespace(ctx, t, c, stsNamespace)
	// The agent's interception rules outlive it by design (README of the
	// chart); removed from the node once the release is gone, so that no later
	// test meets them. Registered first: runs last.
	rules := nodeInterceptor(t, c)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := rules.Uninstall(ctx); err != nil {
			t.Errorf("remove the agent's interception rules from the node: %v", err)
		}
	})
	t.Cleanup(func() {
		// A failed run must not leave a release that blocks the next one.
		if t.Failed() {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			_, _ = runHelm(ctx, helmPath, c.Kubeconfig, "uninstall", helmRelease, "--namespace", stsNamespace, "--wait")
		}
	})

	// 01: install.
	start := time.Now()
	helm(append([]string{"install", helmRelease, chart, "--wait", "--timeout", "5m"}, base...)...)
	installTook := time.Since(start)
	t.Logf("helm install --wait: %s", installTook.Round(time.Millisecond))
	caBefore := chartCA(ctx, t, c)
	stsPod := waitForPodOf(ctx, t, c, stsNamespace, "app.kubernetes.io/name=podid-sts")
	tr, servedCA := stsClientTransport(ctx, t, stsPod.Status.PodIP)
	if !bytes.Equal(bytes.TrimSpace(servedCA), bytes.TrimSpace([]byte(caBefore))) {
		t.Fatalf("the sts serves under a CA other than the chart's ConfigMap podid-sts-ca")
	}
	c.Apply(ctx, t, ns, mustYAML(t, &corev1.ConfigMap{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: metav1.ObjectMeta{Name: "podid-sts-ca"},
		Data:       map[string]string{"ca.crt": caBefore},
	}))
	c.Apply(ctx, t, ns, mustYAML(t, &corev1.ServiceAccount{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ServiceAccount"},
		ObjectMeta: metav1.ObjectMeta{Name: w.sa, Annotations: map[string]string{"azure.workload.identity/client-id": w.clientID}},
	}))
	token := func(step string) string {
		t.Helper()
		dep, cmd := seed003Deployment(ctx, t, c, w.app, w.sa)
		dep.Name = w.app + "-" + step
		dep.Spec.Selector.MatchLabels["step"] = step
		dep.Spec.Template.Labels["step"] = step
		c.Apply(ctx, t, ns, mustYAML(t, dep))
		pod := waitForPodOf(ctx, t, c, ns, "app="+w.app+",step="+step)
		assertInjected(t, pod, w.clientID, publicAuthority) // values-local: the local cloud
		waitForLog(ctx, t, c, ns, pod.Name, "wiclient: token acquired")
		access, _, err := c.Exec(ctx, ns, pod.Name, "", append(cmd, "cat", "/tmp/access-token")...)
		if err != nil {
			t.Fatalf("%s: read access token: %v", step, err)
		}
		verifyAccessToken(ctx, t, tr, strings.TrimSpace(access), w.clientID)
		return strings.TrimSpace(access)
	}
	first := token("install")
	start = time.Now()
	helm("test", helmRelease, "--namespace", stsNamespace, "--timeout", "2m")
	t.Logf("helm test (a pod gets a token with the Azure SDK): %s", time.Since(start).Round(time.Millisecond))
	// 01: seed 003's azcli pod logs in with the Azure CLI, unchanged.
	start = time.Now()
	azureCLILogins(ctx, t, c, ns, w, tr)
	t.Logf("az login (federated token, identity) and get-access-token in a pod: %s", time.Since(start).Round(time.Millisecond))

	// 02: upgrade with a changed value that rolls the agent and the webhook,
	// while a pod asks the agent for a token every 100 ms.
	agentBefore := waitForPodOf(ctx, t, c, stsNamespace, "app.kubernetes.io/name=podid-agent")
	lp := &loadPod{name: "upgrade-load", sa: w.sa, want: w.clientID}
	loadPodSpec := framework.TestClientPod(ns, lp.name)
	loadPodSpec.Labels["azure.workload.identity/use"] = "true"
	loadPodSpec.Spec.ServiceAccountName = lp.sa
	c.CreatePod(ctx, t, loadPodSpec)
	stop := make(chan struct{})
	stopLoad := sync.OnceFunc(func() { close(stop) })
	var wg sync.WaitGroup
	defer func() { stopLoad(); wg.Wait() }()
	loadStarted := time.Now()
	wg.Add(1)
	go func() { defer wg.Done(); lp.run(ctx, stop, c, ns, accessTokenVerifier(t, tr)) }()
	waitAllServedAfter(ctx, t, []*loadPod{lp}, loadStarted, "before the upgrade")
	start = time.Now()
	helm(append([]string{"upgrade", helmRelease, chart, "--wait", "--timeout", "5m",
		"--set-string", "agent.podAnnotations.podid\\.dev/revision=2", "--set-string", "webhook.podAnnotations.podid\\.dev/revision=2"}, base...)...)
	upgradeTook := time.Since(start)
	t.Logf("helm upgrade --wait: %s", upgradeTook.Round(time.Millisecond))
	waitAllServedAfter(ctx, t, []*loadPod{lp}, time.Now(), "after the upgrade")
	stopLoad()
	wg.Wait()
	// The refused window: from the first request without a token to the first
	// token after it. The agent has no surge (one per node): its rollout is a
	// restart, and the interception rules stay, so requests meanwhile fail
	// (connection refused) rather than reaching anything else.
	var firstMiss, recovered time.Time
	var total, misses int
	for _, r := range lp.results {
		total++
		if r.wrong != nil {
			t.Errorf("during the upgrade the pod got a token that is not its identity's: %v", r.wrong)
		}
		if r.a.status == http.StatusOK && r.wrong == nil {
			if !firstMiss.IsZero() && recovered.IsZero() {
				recovered = r.start
			}
			continue
		}
		misses++
		if firstMiss.IsZero() {
			firstMiss = r.start
		}
	}
	window := recovered.Sub(firstMiss)
	t.Logf("FIGURES helm upgrade under load: %d requests every 100 ms, %d without a token, refused window %s",
		total, misses, window.Round(time.Millisecond))
	if window > upgradeRefusedWindow {
		t.Errorf("requests were refused for %s during the agent's rollout, more than the documented %s", window, upgradeRefusedWindow)
	}
	agentAfter := waitForPodOf(ctx, t, c, stsNamespace, "app.kubernetes.io/name=podid-agent")
	if agentAfter.UID == agentBefore.UID {
		t.Fatal("the upgrade did not roll the agent")
	}
	for _, cond := range agentAfter.Status.Conditions {
		if cond.Type == corev1.PodReady {
			// The node's window without an agent is at most this plus the old
			// pod's termination (second resolution).
			t.Logf("agent rollout: new agent pod created→Ready in %s", cond.LastTransitionTime.Sub(agentAfter.CreationTimestamp.Time))
		}
	}
	if got := chartCA(ctx, t, c); got != caBefore {
		t.Fatal("helm upgrade replaced the sts CA")
	}
	verifyAccessToken(ctx, t, tr, first, w.clientID)
	token("upgrade")

	// 03: rollback.
	start = time.Now()
	helm("rollback", helmRelease, "1", "--namespace", stsNamespace, "--wait", "--timeout", "5m")
	rollbackTook := time.Since(start)
	t.Logf("helm rollback --wait: %s", rollbackTook.Round(time.Millisecond))
	if got := chartCA(ctx, t, c); got != caBefore {
		t.Fatal("helm rollback replaced the sts CA")
	}
	verifyAccessToken(ctx, t, tr, first, w.clientID)
	token("rollback")
	if h := helm("history", helmRelease, "--namespace", stsNamespace, "-o", "yaml"); strings.Count(h, "revision:") != 3 {
		t.Fatalf("history after install, upgrade, rollback:\n%s", h)
	}

	// 04: uninstall leaves none of the release's objects (the CRDs stay:
	// helm never deletes a chart's crds/, and the users' objects live in them).
	start = time.Now()
	helm("uninstall", helmRelease, "--namespace", stsNamespace, "--wait", "--timeout", "5m")
	t.Logf("helm uninstall --wait: %s", time.Since(start).Round(time.Millisecond))
	for _, o := range objs {
		if o.GetKind() == "CustomResourceDefinition" {
			continue
		}
		err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
			err := c.Client.Get(ctx, client.ObjectKeyFromObject(o), o.DeepCopy())
			return apierrors.IsNotFound(err), client.IgnoreNotFound(err)
		})
		if err != nil {
			t.Errorf("after helm uninstall %s %s/%s is still there: %v", o.GetKind(), o.GetNamespace(), o.GetName(), err)
		}
	}
	for _, n := range []string{"podid-sts-ca-key", "podid-webhook-cert"} {
		if err := c.Client.Get(ctx, client.ObjectKey{Namespace: stsNamespace, Name: n}, &corev1.Secret{}); !apierrors.IsNotFound(err) {
			t.Errorf("after helm uninstall Secret %s: %v", n, err)
		}
	}
	t.Logf("FIGURES helm (values-local, --wait): install %s, upgrade %s, rollback %s",
		installTook.Round(time.Millisecond), upgradeTook.Round(time.Millisecond), rollbackTook.Round(time.Millisecond))
}

func runHelm(ctx context.Context, helm, kubeconfig string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, helm, append(args, "--kubeconfig", kubeconfig)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("helm %s: %w\n%s", strings.Join(args, " "), err, errb.String())
	}
	return out.String(), nil
}

// helmValues writes the site values of this cluster: its issuer, and a
// bootstrap whose identity trusts the workload's ServiceAccount.
func helmValues(t *testing.T, c *framework.Cluster, w wiWorkload) string {
	t.Helper()
	boot := sts.Bootstrap{Tenants: []sts.BootstrapTenant{{ID: wiTenantID, Domains: []string{"podid.local"}, Identities: []sts.BootstrapIdentity{{
		Subscription: wiSubscription, ResourceGroup: "e2e", Name: w.sa, Location: "local", ClientID: w.clientID,
		FederatedCreds: []sts.BootstrapFederatedIdentity{{
			Name: "k8s-" + w.sa, Issuer: c.Issuer, Subject: w.subject, Audiences: []string{framework.TokenExchangeAudience},
		}},
	}},
		// Reader on the subscription, as seed 003 grants it (az role assignment create
		// --role Reader --scope /subscriptions/…): `az login` lists that subscription.
		RoleAssignments: []sts.BootstrapRoleAssignment{{Principal: w.clientID, Scope: "/subscriptions/" + wiSubscription, Role: "Reader"}},
	}}}
	bj, err := yaml.Marshal(boot)
	must(t, err)
	var bootstrap map[string]any
	must(t, yaml.Unmarshal(bj, &bootstrap))
	b, err := yaml.Marshal(map[string]any{
		"agent": map[string]any{"podCIDRs": []string{c.PodCIDR}},
		"sts":   map[string]any{"saIssuer": c.Issuer, "bootstrap": bootstrap},
		// helm test: the chart's own token check, with the e2e wiclient image.
		"helmTest": map[string]any{"enabled": true, "image": wiClientImage, "clientID": newUUID(t)},
	})
	must(t, err)
	p := filepath.Join(t.TempDir(), "values-e2e.yaml")
	must(t, os.WriteFile(p, b, 0o600))
	return p
}

// chartCA is the sts CA the chart handed out (ConfigMap podid-sts-ca).
func chartCA(ctx context.Context, t *testing.T, c *framework.Cluster) string {
	t.Helper()
	var cm corev1.ConfigMap
	must(t, c.Client.Get(ctx, client.ObjectKey{Namespace: stsNamespace, Name: "podid-sts-ca"}, &cm))
	if cm.Data["ca.pem"] == "" {
		t.Fatal("ConfigMap podid-sts-ca has no CA")
	}
	return cm.Data["ca.pem"]
}

// privilegedNamespace creates the release's namespace at the privileged Pod
// Security level (the agent: hostNetwork, NET_ADMIN), as the chart README says.
func privilegedNamespace(ctx context.Context, t *testing.T, c *framework.Cluster, name string) {
	t.Helper()
	var n corev1.Namespace
	err := c.Client.Get(ctx, client.ObjectKey{Name: name}, &n)
	if apierrors.IsNotFound(err) {
		ensureNamespace(ctx, t, c, name)
		must(t, c.Client.Get(ctx, client.ObjectKey{Name: name}, &n))
	} else {
		must(t, err)
	}
	if n.Labels == nil {
		n.Labels = map[string]string{}
	}
	n.Labels["pod-security.kubernetes.io/enforce"] = "privileged"
	must(t, c.Client.Update(ctx, &n))
}

// deleteAndWait deletes objs (but CRDs and Namespaces) in the foreground and
// waits until they are gone.
func deleteAndWait(ctx context.Context, t *testing.T, c *framework.Cluster, objs []*unstructured.Unstructured) {
	t.Helper()
	fg := metav1.DeletePropagationForeground
	for _, o := range objs {
		if o.GetKind() == "CustomResourceDefinition" || o.GetKind() == "Namespace" {
			continue
		}
		if err := c.Client.Delete(ctx, o.DeepCopy(), &client.DeleteOptions{PropagationPolicy: &fg}); client.IgnoreNotFound(err) != nil {
			t.Fatalf("delete %s %s: %v", o.GetKind(), o.GetName(), err)
		}
	}
	for _, o := range objs {
		if o.GetKind() == "CustomResourceDefinition" || o.GetKind() == "Namespace" {
			continue
		}
		err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
			err := c.Client.Get(ctx, client.ObjectKeyFromObject(o), o.DeepCopy())
			return apierrors.IsNotFound(err), client.IgnoreNotFound(err)
		})
		if err != nil {
			t.Fatalf("%s %s not deleted: %v", o.GetKind(), o.GetName(), err)
		}
	}
}
