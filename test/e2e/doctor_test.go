package e2e

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	podidv1 "github.com/podid/podid/api/v1"
	"github.com/podid/podid/test/e2e/framework"
)

// TestDoctorOnNode runs the podid binary's doctor, from the host, on real
// workload-identity pods: podid sts and webhook deployed as shipped, seed
// 003's ServiceAccount and Deployment. The pod whose identity trusts its
// ServiceAccount reports every link ✓ including a real token exchange (at
// the sts's ClusterIP, through kube-proxy); the one without a federated
// credential reports the exchange ✗ with AADSTS70021 explained.
func TestDoctorOnNode(t *testing.T) {
	c := framework.Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	ns := c.Namespace(t)
	workloads := []wiWorkload{
		{name: "works", sa: "sa-doctor", app: "doctor", fic: true},
		{name: "no-federated-credential", sa: "sa-doctor-nofic", app: "doctor-nofic"},
	}
	for i := range workloads {
		workloads[i].clientID = newUUID(t)
		workloads[i].subject = "system:serviceaccount:" + ns + ":" + workloads[i].sa
	}
	ensureNamespace(ctx, t, c, stsNamespace)
	stsPodIP := deploySTS(ctx, t, c, workloads)
	_, caPEM := stsClientTransport(ctx, t, stsPodIP)
	deployWebhook(ctx, t, c)
	c.Apply(ctx, t, ns, mustYAML(t, &corev1.ConfigMap{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: metav1.ObjectMeta{Name: "podid-sts-ca"},
		Data:       map[string]string{"ca.crt": string(caPEM)},
	}))

	podid := cliRunner(ctx, t, c)
	caFile := filepath.Join(t.TempDir(), "sts-ca.pem")
	if err := os.WriteFile(caFile, caPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	// The user knows the sts and its CA, not its admin secret: doctor says
	// it cannot look the identity up, and proves the link by the exchange.
	if out, code := podid("config", "set-cloud", "local", "--authority", strings.TrimSuffix(stsAuthority, "/"), "--ca-file", caFile,
		"--tenant-id", wiTenantID, "--client-id", newUUID(t)); code != 0 {
		t.Fatalf("config: %d %s", code, out)
	}

	for _, w := range workloads {
		t.Run(w.name, func(t *testing.T) {
			c.Apply(ctx, t, ns, mustYAML(t, &corev1.ServiceAccount{
				TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "ServiceAccount"},
				ObjectMeta: metav1.ObjectMeta{
					Name:        w.sa,
					Annotations: map[string]string{"azure.workload.identity/client-id": w.clientID},
					Labels:      map[string]string{"azure.workload.identity/use": "true"},
				},
			}))
			dep, _ := seed003Deployment(ctx, t, c, w.app, w.sa)
			c.Apply(ctx, t, ns, mustYAML(t, dep))
			pod := waitForPodOf(ctx, t, c, ns, "app="+w.app)
			out, code := podid("doctor", "pod/"+pod.Name, "-n", ns)
			t.Logf("podid doctor pod/%s:\n%s", pod.Name, out)
			want := []string{
				"✓ webhook injected AZURE_CLIENT_ID, AZURE_TENANT_ID, AZURE_AUTHORITY_HOST and a projected token (audience api://AzureADTokenExchange",
				"✓ authority " + stsAuthority + " serves tenant " + wiTenantID,
				"! federated credential not looked up",
			}
			wantCode := 0
			if w.fic {
				want = append(want, "✓ the identity provider issued a token for client "+w.clientID)
			} else {
				wantCode = 1
				want = append(want, "✗ the identity provider refused the exchange: AADSTS70021: no federated credential of the identity matches",
					"fix: check the federated credential of client "+w.clientID+": issuer = the cluster's, subject "+w.subject)
			}
			if code != wantCode {
				t.Errorf("exit %d, want %d", code, wantCode)
			}
			for _, s := range want {
				if !strings.Contains(out, s) {
					t.Errorf("doctor output lacks %q", s)
				}
			}
			if strings.Contains(out, "eyJ") {
				t.Error("doctor printed a JWT")
			}
		})
	}
}

// cliRunner builds the podid binary and returns a function running it
// against the cluster, with a config directory of its own; it returns the
// combined output and the exit code.
func cliRunner(ctx context.Context, t *testing.T, c *framework.Cluster) func(args ...string) (string, int) {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "podid")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/podid")
	build.Dir = framework.RepoRoot()
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build podid: %v\n%s", err, out)
	}
	home := t.TempDir()
	return func(args ...string) (string, int) {
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Env = []string{"HOME=" + home, "XDG_CONFIG_HOME=" + home, "KUBECONFIG=" + c.Kubeconfig, "PATH=/usr/bin:/bin"}
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return out.String(), ee.ExitCode()
		} else if err != nil {
			t.Fatalf("podid %v: %v", args, err)
		}
		return out.String(), 0
	}
}

// TestDoctorPodIdentityOnNode runs doctor from the host on a pod-identity
// (v1) pod that works: podid sts, webhook (the agent's token guard), agent
// and controller deployed as shipped; the pod (unmodified
// ManagedIdentityCredential) gets its token through the agent, and doctor
// reports every link ✓ — the controller's assignment, the agent ready on the
// node, the exchange at the agent's authority.
func TestDoctorPodIdentityOnNode(t *testing.T) {
	c := framework.Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	if !nodeHasImage(ctx, t, c, miClientImage) {
		t.Fatalf("image %s not imported: run hack/image.sh miclient", miClientImage)
	}
	ns := c.Namespace(t)
	v1 := wiWorkload{name: "v1", sa: "sa-doctor-v1", fic: true, clientID: newUUID(t)}
	v1.subject = "system:serviceaccount:" + ns + ":" + v1.sa
	ensureNamespace(ctx, t, c, stsNamespace)
	stsPodIP := deploySTS(ctx, t, c, []wiWorkload{v1})
	stsTransport, caPEM := stsClientTransport(ctx, t, stsPodIP)
	applyCRDs(ctx, t, c)
	rules := nodeInterceptor(t, c)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), framework.PodTimeout+30*time.Second)
		defer cancel()
		deleteAgent(ctx, t, c)
		if err := rules.Uninstall(ctx); err != nil {
			t.Errorf("remove the agent's interception rules from the node: %v", err)
		}
	})
	deployWebhook(ctx, t, c)
	deployAgent(ctx, t, c, caPEM)
	applyKustomization(ctx, t, c, filepath.Join("deploy", "controller"), nil)
	t.Cleanup(func() {
		_ = c.Client.Delete(context.Background(), &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "podid-system", Name: "podid-controller"}})
	})
	if err := waitDeploymentAvailable(ctx, c, "podid-system", "podid-controller"); err != nil {
		t.Fatal(err)
	}

	const selector = "podid-e2e-doctor-v1"
	applyV1Identity(ctx, t, c, ns, "id-doctor", v1.clientID, selector)
	applyServiceAccount(ctx, t, c, ns, v1.sa, nil)
	pod := c.CreatePod(ctx, t, miClientPod(ns, "v1-doctor", v1.sa, map[string]string{podidv1.PodLabelKey: selector}))
	verifyPodToken(ctx, t, c, stsTransport, pod, v1.clientID)
	// The agent serves the pod without waiting for the controller, which
	// records the assignment on its own schedule; doctor checks that record,
	// so a working pod is one whose AzureAssignedIdentity exists.
	if err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, framework.PodTimeout, true, func(ctx context.Context) (bool, error) {
		var l podidv1.AzureAssignedIdentityList
		if err := c.Client.List(ctx, &l, client.InNamespace(ns)); err != nil {
			return false, err
		}
		for _, a := range l.Items {
			if a.Spec.Pod == pod.Name && a.Spec.PodUID == string(pod.UID) {
				return true, nil
			}
		}
		return false, nil
	}); err != nil {
		t.Fatalf("podid controller assigned no AzureAssignedIdentity to %s/%s: %v", ns, pod.Name, err)
	}

	podid := cliRunner(ctx, t, c)
	caFile := filepath.Join(t.TempDir(), "sts-ca.pem")
	if err := os.WriteFile(caFile, caPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, code := podid("config", "set-cloud", "local", "--authority", strings.TrimSuffix(stsAuthority, "/"), "--ca-file", caFile,
		"--tenant-id", wiTenantID, "--client-id", newUUID(t)); code != 0 {
		t.Fatalf("config: %d %s", code, out)
	}
	out, code := podid("doctor", "pod/"+pod.Name, "-n", ns)
	t.Logf("podid doctor pod/%s:\n%s", pod.Name, out)
	for _, want := range []string{
		"pod " + ns + "/" + pod.Name + " (pod-identity)",
		"✓ binding(s) " + ns + "/id-doctor-binding select the pod",
		"✓ AzureAssignedIdentity ",
		"✓ agent podid-system/podid-agent-",
		"✓ the identity provider issued a token for client " + v1.clientID,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("doctor output lacks %q", want)
		}
	}
	if code != 0 || strings.Contains(out, "✗") {
		t.Errorf("doctor exit %d on a working pod", code)
	}
}
