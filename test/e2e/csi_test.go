package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/podid/podid/internal/cli"
	"github.com/podid/podid/test/e2e/framework"
)

// csiSeedSPC and csiSeedDeployment are seed 003's SecretProviderClass and
// Deployment as the article has them, with its shell variables.
const csiSeedSPC = `apiVersion: secrets-store.csi.x-k8s.io/v1
kind: SecretProviderClass
metadata:
  name: demo-secret
  namespace: default
spec:
  provider: azure
  secretObjects:
  - secretName: demosecret
    type: Opaque
    data:
    - objectName: "demosecret"
      key: demosecret
  parameters:
    usePodIdentity: "false"
    useVMManagedIdentity: "true"
    userAssignedIdentityID: "$CLIENT_ID"
    keyvaultName: "$KV"
    objects: |
      array:
        - |
          objectName: "demosecret"
          objectType: secret
    tenantId: "$AZURE_TENANT_ID"
`

const csiSeedDeployment = `apiVersion: apps/v1
kind: Deployment
metadata:
  labels:
    app: secretpods
  name: secretpods
spec:
  replicas: 1
  selector:
    matchLabels:
      app: secretpods
  template:
    metadata:
      labels:
        app: secretpods
    spec:
      containers:
      - image: nginx
        name: nginx
        env:
          - name:  demosecret
            valueFrom:
              secretKeyRef:
                name:  demosecret
                key:  demosecret
        volumeMounts:
          - name:  secret-store
            mountPath:  "mnt/secret-store"
            readOnly: true
      volumes:
        - name:  secret-store
          csi:
            driver: secrets-store.csi.k8s.io
            readOnly: true
            volumeAttributes:
              secretProviderClass: "demo-secret"
`

// csiRotation is the driver's rotation poll interval in this test.
const csiRotation = 15 * time.Second

// TestSecretsStoreCSI runs seed 003's Key Vault walkthrough on the real node:
// podid's chart with the Secrets Store CSI driver (built from the module
// proxy, registered with the kubelet by podid csi-registrar) and podid's
// provider; the vault, the secret and the role assignments made with podid's
// CLI as the article makes them with az; the article's SecretProviderClass
// and Deployment applied as written (only the image: nginx is not available
// here) with one grant for the Deployment's ServiceAccount.
//
//	01 helm install with csi.enabled; the kubelet lists the driver on the node
//	02 the seed's steps 2-3 with podid's CLI, and the grant
//	03 the seed's steps 4-6: the file holds demovalue, $demosecret too
//	04 a pod of a ServiceAccount without a grant is refused, its event names the grant
//	05 rotation: a new version reaches the file within the poll interval
//	06 the provider's RSS on the node
func TestSecretsStoreCSI(t *testing.T) {
	c := framework.Connect(t)
	helmPath := framework.Helm(t)
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	chart := filepath.Join(framework.RepoRoot(), "deploy", "chart", "podid")
	dir := t.TempDir()
	adminSecret := newUUID(t)
	must(t, os.WriteFile(filepath.Join(dir, "admin-secret"), []byte(adminSecret), 0o600))
	// The seed's step 3 identity (on AKS the add-on's) and the vault's name.
	identityID := newUUID(t)
	kv := "kvcsi" + strconv.FormatInt(time.Now().Unix()%100000, 10)
	values := csiValues(t, c, dir, adminSecret, identityID, kv)
	helm := func(args ...string) string {
		t.Helper()
		out, err := runHelm(ctx, helmPath, c.Kubeconfig, args...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	base := []string{"--namespace", stsNamespace, "-f", filepath.Join(chart, "values-local.yaml"), "-f", values}

	// 01: a clean slate, then the release with the CSI component.
	sv, err := c.Clientset.Discovery().ServerVersion()
	must(t, err)
	objs, err := framework.DecodeManifest([]byte(helm(append([]string{"template", helmRelease, chart, "--kube-version", sv.GitVersion}, base...)...)))
	must(t, err)
	// A release left on the node (podid up's) would make the install fail
	// ("cannot re-use a name"); then whatever of the chart's objects remain.
	_, _ = runHelm(ctx, helmPath, c.Kubeconfig, "uninstall", helmRelease, "--namespace", stsNamespace, "--wait")
	deleteAndWait(ctx, t, c, objs)
	privilegedNamespace(ctx, t, c, stsNamespace)
	rules := nodeInterceptor(t, c)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		for _, o := range seedObjects(t, "x", "x", "x") {
			_ = c.Client.Delete(ctx, o)
		}
		_ = c.Client.Delete(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "demosecret"}})
		_ = c.Client.Delete(ctx, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "nogrant"}})
		_ = c.Client.Delete(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "nogrant"}})
		if _, err := runHelm(ctx, helmPath, c.Kubeconfig, "uninstall", helmRelease, "--namespace", stsNamespace, "--wait"); err != nil {
			t.Errorf("helm uninstall: %v", err)
		}
		if err := rules.Uninstall(ctx); err != nil {
			t.Errorf("remove the agent's interception rules from the node: %v", err)
		}
	})
	t.Cleanup(func() { // runs before the uninstall: what a failure needs to be understood
		if !t.Failed() {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if evs, err := c.Clientset.CoreV1().Events("default").List(ctx, metav1.ListOptions{}); err == nil {
			for _, e := range evs.Items {
				t.Logf("event %s/%s %s: %s", e.InvolvedObject.Kind, e.InvolvedObject.Name, e.Reason, e.Message)
			}
		}
		for _, sel := range []struct{ label, container string }{
			{"app.kubernetes.io/name=secrets-store-csi-driver", "secrets-store"},
			{"app.kubernetes.io/name=secrets-store-csi-driver", "node-driver-registrar"},
			{"app.kubernetes.io/name=podid-csi-provider", "provider"},
		} {
			pods, err := c.Clientset.CoreV1().Pods(stsNamespace).List(ctx, metav1.ListOptions{LabelSelector: sel.label})
			if err != nil {
				continue
			}
			for _, p := range pods.Items {
				logs, _ := c.Logs(ctx, stsNamespace, p.Name, sel.container)
				t.Logf("--- %s/%s logs:\n%s", p.Name, sel.container, logs)
			}
		}
	})
	start := time.Now()
	helm(append([]string{"install", helmRelease, chart, "--wait", "--timeout", "5m"}, base...)...)
	t.Logf("helm install --wait (with the CSI driver and provider): %s", time.Since(start).Round(time.Millisecond))
	waitRegistered(ctx, t, c)
	// podid up's copy of the seed (the same names in default) goes before
	// the test's objects are created, now that a driver is there to unmount
	// its pod's volume (without one, that pod stays terminating).
	deleteAndWait(ctx, t, c, seedLeftovers(t, c))

	// 02: the vault, the secret and the grant with podid's CLI; the seed's
	// role assignments at the vault are in the sts's bootstrap (csiValues).
	caFile := filepath.Join(dir, "sts-ca.pem")
	must(t, os.WriteFile(caFile, []byte(chartCA(ctx, t, c)), 0o600))
	podid := func(args ...string) string { t.Helper(); return podidCLI(ctx, t, c, dir, args...) }
	podid("config", "set-cloud", "local", "--authority", "https://"+stsServiceIP, "--ca-file", caFile,
		"--tenant-id", wiTenantID, "--client-id", csiAdminClientID, "--client-secret-file", filepath.Join(dir, "admin-secret"),
		"--subscription", csiSubscription, "-g", "rg-csi", "--location", "westeurope")
	var vault struct {
		ID string `json:"id"`
	}
	must(t, json.Unmarshal([]byte(podid("keyvault", "create", kv, "-o", "json")), &vault))
	if vault.ID != csiVaultScope(kv) {
		t.Fatalf("vault id %q, want %q", vault.ID, csiVaultScope(kv))
	}
	podid("keyvault", "secret", "set", "--vault-name", kv, "--name", "demosecret", "--value", "demovalue")
	// The grant: the Deployment's pods (ServiceAccount default/default) may mount with this identity.
	podid("fic", "create", "--identity", "azurekeyvaultsecretsprovider-e2e", "--service-account", "default/default")

	// 03: the seed's SecretProviderClass and Deployment.
	for _, o := range seedObjects(t, identityID, kv, wiTenantID) {
		must(t, client.IgnoreAlreadyExists(c.Client.Create(ctx, o)))
	}
	pod := waitForPodOf(ctx, t, c, "default", "app=secretpods")
	if got := execOut(ctx, t, c, pod.Name, "cat", "/mnt/secret-store/demosecret"); got != "demovalue" {
		t.Fatalf("mounted demosecret = %q", got)
	}
	if got := execOut(ctx, t, c, pod.Name, "sh", "-c", "echo $demosecret"); got != "demovalue" {
		t.Fatalf("$demosecret = %q", got)
	}

	// 04: a ServiceAccount without a grant: the mount is refused, the event names the grant.
	_ = c.Client.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "nogrant"}})
	ng := seedDeployment(t)
	ng.Name, ng.Labels = "nogrant", map[string]string{"app": "nogrant"}
	ng.Spec.Selector.MatchLabels = map[string]string{"app": "nogrant"}
	ng.Spec.Template.Labels = map[string]string{"app": "nogrant"}
	ng.Spec.Template.Spec.ServiceAccountName = "nogrant"
	ng.Spec.Template.Spec.Containers[0].Env = nil // the synced Secret is not what is tested here
	must(t, c.Client.Create(ctx, ng))
	ev := waitForEvent(ctx, t, c, "default", "nogrant-", "FailedMount")
	for _, want := range []string{"NoSecretMountGrant", "ServiceAccount default/nogrant", identityID} {
		if !strings.Contains(ev, want) {
			t.Errorf("FailedMount event %q lacks %q", ev, want)
		}
	}

	// 05: rotation.
	podid("keyvault", "secret", "set", "--vault-name", kv, "--name", "demosecret", "--value", "demovalue-2")
	set := time.Now()
	// The kubelet republishes the volume on its pod sync (about every minute);
	// the driver then mounts again when its poll interval has passed.
	rotationBound := csiRotation + 2*time.Minute
	err = wait.PollUntilContextTimeout(ctx, time.Second, rotationBound, true, func(ctx context.Context) (bool, error) {
		out, _, err := c.Exec(ctx, "default", pod.Name, "", "cat", "/mnt/secret-store/demosecret")
		return err == nil && out == "demovalue-2", nil
	})
	if err != nil {
		t.Fatalf("the new version did not reach the mounted file within %s", rotationBound)
	}
	t.Logf("rotation: the new version was in the mounted file %s after it was set (poll interval %s)", time.Since(set).Round(time.Second), csiRotation)

	// 06: what the provider costs on the node.
	if rss, err := processRSS("csi-provider"); err == nil {
		t.Logf("podid csi-provider RSS on the node: %.1f MiB", float64(rss)/(1<<20))
	} else {
		t.Logf("provider RSS: %v", err)
	}
}

const (
	csiAdminClientID = "04b07795-8ddb-461a-bbee-02f9e1bf7b46"
	csiSubscription  = "0b1f6471-1bf0-4dda-aec3-cb9272f09590"
)

func csiVaultScope(kv string) string {
	return "/subscriptions/" + csiSubscription + "/resourceGroups/rg-csi/providers/Microsoft.KeyVault/vaults/" + kv
}

// csiValues: the chart with the CSI component; in the sts, the operator
// (Owner, as the seed's reader is), the seed's identity, and the seed's two
// role assignments at the vault (Key Vault Administrator for both).
func csiValues(t *testing.T, c *framework.Cluster, dir, adminSecret, identityID, kv string) string {
	t.Helper()
	b, err := yaml.Marshal(map[string]any{
		"agent": map[string]any{"podCIDRs": []string{c.PodCIDR}},
		"sts": map[string]any{"saIssuer": c.Issuer, "bootstrap": map[string]any{"tenants": []any{map[string]any{
			"id": wiTenantID, "domains": []string{"podid.local"},
			"applications": []any{map[string]any{"clientId": csiAdminClientID, "displayName": "e2e-admin", "secrets": []any{map[string]any{"value": adminSecret}}}},
			"identities": []any{map[string]any{"subscription": csiSubscription, "resourceGroup": "rg-csi", "name": "azurekeyvaultsecretsprovider-e2e",
				"location": "westeurope", "clientId": identityID}},
			"roleAssignments": []any{
				map[string]any{"principal": csiAdminClientID, "resource": "https://management.azure.com", "role": "Owner"},
				map[string]any{"principal": csiAdminClientID, "scope": csiVaultScope(kv), "role": "Key Vault Administrator"},
				map[string]any{"principal": identityID, "scope": csiVaultScope(kv), "role": "Key Vault Administrator"},
			},
		}}}},
		"csi": map[string]any{"enabled": true, "kubeletRootDir": c.KubeletDir,
			"driver": map[string]any{"rotationPollInterval": csiRotation.String()}},
	})
	must(t, err)
	p := filepath.Join(dir, "values-csi.yaml")
	must(t, os.WriteFile(p, b, 0o600))
	return p
}

// seedLeftovers are the seed's objects in default that another run (podid
// up's seed-003-csi.yaml) may have left: the Deployment, the class (when its
// CRD is installed) and the synced Secret.
func seedLeftovers(t *testing.T, c *framework.Cluster) []*unstructured.Unstructured {
	t.Helper()
	obj := func(apiVersion, kind, name string) *unstructured.Unstructured {
		u := &unstructured.Unstructured{}
		u.SetAPIVersion(apiVersion)
		u.SetKind(kind)
		u.SetNamespace("default")
		u.SetName(name)
		return u
	}
	objs := []*unstructured.Unstructured{obj("apps/v1", "Deployment", "secretpods"), obj("v1", "Secret", "demosecret")}
	if _, err := c.Clientset.Discovery().ServerResourcesForGroupVersion("secrets-store.csi.x-k8s.io/v1"); err == nil {
		objs = append(objs, obj("secrets-store.csi.x-k8s.io/v1", "SecretProviderClass", "demo-secret"))
	}
	return objs
}

// seedObjects are the seed's two manifests with the article's variables
// set; the Deployment's image is the e2e client (nginx is not available).
func seedObjects(t *testing.T, clientID, kv, tenant string) []client.Object {
	t.Helper()
	spc := strings.NewReplacer("$CLIENT_ID", clientID, "$KV", kv, "$AZURE_TENANT_ID", tenant).Replace(csiSeedSPC)
	var u unstructured.Unstructured
	must(t, yaml.Unmarshal([]byte(spc), &u.Object))
	return []client.Object{&u, seedDeployment(t)}
}

func seedDeployment(t *testing.T) *appsv1.Deployment {
	t.Helper()
	var d appsv1.Deployment
	must(t, yaml.UnmarshalStrict([]byte(csiSeedDeployment), &d))
	d.Namespace = "default"
	ct := &d.Spec.Template.Spec.Containers[0]
	ct.Image, ct.ImagePullPolicy, ct.Command = framework.TestClientImage, corev1.PullNever, []string{"/testclient", "sleep"}
	d.Spec.Template.Spec.TerminationGracePeriodSeconds = new(int64)
	return &d
}

// podidCLI runs podid's CLI in process, with its config in dir.
func podidCLI(ctx context.Context, t *testing.T, c *framework.Cluster, dir string, args ...string) string {
	t.Helper()
	root := &cobra.Command{Use: "podid", SilenceUsage: true, SilenceErrors: true}
	root.AddCommand(cli.NewCommands()...)
	var out, errb bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errb)
	root.SetArgs(append(args, "--podid-config", filepath.Join(dir, "podid.yaml"), "--kubeconfig", c.Kubeconfig))
	if err := root.ExecuteContext(ctx); err != nil {
		t.Fatalf("podid %s: %v %s", strings.Join(args, " "), err, errb.String())
	}
	return out.String()
}

// waitRegistered waits until the kubelet lists the driver on the node.
func waitRegistered(ctx context.Context, t *testing.T, c *framework.Cluster) {
	t.Helper()
	start := time.Now()
	err := wait.PollUntilContextTimeout(ctx, time.Second, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		n, err := c.Clientset.StorageV1().CSINodes().Get(ctx, c.NodeName, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		for _, d := range n.Spec.Drivers {
			if d.Name == "secrets-store.csi.k8s.io" {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatal("the kubelet did not register secrets-store.csi.k8s.io on the node (CSINode)")
	}
	t.Logf("driver registered with the kubelet %s after the install", time.Since(start).Round(time.Millisecond))
}

func execOut(ctx context.Context, t *testing.T, c *framework.Cluster, pod string, cmd ...string) string {
	t.Helper()
	out, stderr, err := c.Exec(ctx, "default", pod, "", cmd...)
	if err != nil {
		t.Fatalf("exec %v: %v %s", cmd, err, stderr)
	}
	return strings.TrimSpace(out)
}

// waitForEvent waits for an event of reason on an existing pod whose name
// starts with prefix and returns its message. Events of pods that are gone
// (an earlier run's, kept for an hour) do not count.
func waitForEvent(ctx context.Context, t *testing.T, c *framework.Cluster, ns, prefix, reason string) string {
	t.Helper()
	var msg string
	err := wait.PollUntilContextTimeout(ctx, time.Second, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		evs, err := c.Clientset.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "reason=" + reason})
		if err != nil {
			return false, nil
		}
		pods, err := c.Clientset.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil
		}
		live := map[types.UID]bool{}
		for _, p := range pods.Items {
			live[p.UID] = true
		}
		for _, e := range evs.Items {
			if strings.HasPrefix(e.InvolvedObject.Name, prefix) && live[e.InvolvedObject.UID] {
				msg = e.Message
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("no %s event for pod %s*", reason, prefix)
	}
	return msg
}

// processRSS is the resident set of the node's process whose command line
// contains arg.
func processRSS(arg string) (int64, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		cmd, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !bytes.Contains(cmd, []byte(arg)) || !bytes.HasPrefix(cmd, []byte("/podid")) {
			continue
		}
		st, err := os.ReadFile(filepath.Join("/proc", e.Name(), "status"))
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(st), "\n") {
			if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
				kb, err := strconv.ParseInt(f[1], 10, 64)
				return kb << 10, err
			}
		}
	}
	return 0, fmt.Errorf("no process %q", arg)
}
