package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
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

	podidv1 "github.com/podid/podid/api/v1"
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
//	05 clientID (workload identity): the pod of the federated ServiceAccount
//	   mounts a secret, a certificate, its public key and its secret (PEM);
//	   a pod of another ServiceAccount is refused, its event says why
//	06 usePodIdentity: the pod of the v1 binding mounts through the node
//	   agent; a pod the binding does not select is refused, its event says why
//	07 a namespace grant (podid fic create --namespace): a pod of any
//	   ServiceAccount of it mounts; a pod of another namespace is refused
//	08 rotation: a new version reaches the file within the poll interval
//	09 the provider's RSS on the node
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
	// The identities of the clientID and usePodIdentity pods (05, 06).
	wiID, v1ID := newUUID(t), newUUID(t)
	kv := "kvcsi" + strconv.FormatInt(time.Now().Unix()%100000, 10)
	values := csiValues(t, c, dir, adminSecret, kv, map[string]string{
		"azurekeyvaultsecretsprovider-e2e": identityID, csiWIIdentity: wiID, csiV1Identity: v1ID})
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
	// The seed's Deployment or class that another run left in default
	// (with its own image or vault) would be used instead of this test's:
	// remove them now; their pods can only go once a driver unmounts their
	// volumes (after the install below).
	bg := metav1.DeletePropagationBackground
	for _, o := range []client.Object{
		&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "secretpods"}},
		&unstructured.Unstructured{Object: map[string]any{"apiVersion": "secrets-store.csi.x-k8s.io/v1", "kind": "SecretProviderClass",
			"metadata": map[string]any{"namespace": "default", "name": "demo-secret"}}},
	} {
		_ = c.Client.Delete(ctx, o, &client.DeleteOptions{PropagationPolicy: &bg})
	}
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
		for _, o := range csiModeObjects {
			_ = c.Client.Delete(ctx, o)
		}
		// The driver must outlive the pods that mount with it: without it
		// the kubelet cannot unmount their volumes and they never go.
		if err := wait.PollUntilContextTimeout(ctx, time.Second, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
			pods, err := c.Clientset.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
			return err == nil && !slices.ContainsFunc(pods.Items, mountsSecretsStore), nil
		}); err != nil {
			t.Errorf("pods mounting secrets-store.csi.k8s.io volumes are still there: %v", err)
		}
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
	// The leftovers' pods are gone once the driver has unmounted them.
	err = wait.PollUntilContextTimeout(ctx, time.Second, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		pods, err := c.Clientset.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=secretpods"})
		return err == nil && len(pods.Items) == 0, nil
	})
	if err != nil {
		t.Fatal("pods app=secretpods that another run left in default did not go")
	}

	// The sts's pod is Ready (helm --wait), but kube-proxy programs its
	// Service a moment later: the CLI's first call must not race that.
	if err := framework.WaitAccepts(ctx, net.JoinHostPort(stsServiceIP, "443"), time.Minute); err != nil {
		t.Fatalf("the sts's Service after the install: %v", err)
	}

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

	// 05: clientID. The identity trusts ServiceAccount default/csi-wi only;
	// its class mounts a certificate too: the certificate, its public key
	// and its secret (key and certificate), as the Azure provider writes them.
	certPEM, keyPEM := csiCertificate(t)
	certFile := filepath.Join(dir, "democert.pem")
	must(t, os.WriteFile(certFile, []byte(certPEM+keyPEM), 0o600))
	podid("keyvault", "certificate", "import", "--vault-name", kv, "--name", "democert", "--file", certFile)
	podid("fic", "create", "--identity", csiWIIdentity, "--service-account", "default/csi-wi")
	wiClass := csiSPC(t, "wi-secret", kv, map[string]string{"clientID": wiID})
	p := wiClass.(*unstructured.Unstructured).Object["spec"].(map[string]any)["parameters"].(map[string]any)
	p["objects"] = p["objects"].(string) +
		"  - |\n    objectName: democert\n    objectType: cert\n    objectAlias: democert.crt\n" +
		"  - |\n    objectName: democert\n    objectType: key\n    objectAlias: democert.pub\n" +
		"  - |\n    objectName: democert\n    objectType: secret\n    objectAlias: democert.pem\n"
	csiCreate(ctx, t, c, wiClass, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "csi-wi"}})
	csiCreate(ctx, t, c, csiPod(t, "wi-secret", "csi-wi", "wi-secret", nil))
	csiMounted(ctx, t, c, "wi-secret")
	if got := execOut(ctx, t, c, "wi-secret", "cat", "/mnt/secret-store/democert.crt"); got != strings.TrimSpace(certPEM) {
		t.Errorf("democert.crt = %q, want the certificate", got)
	}
	if got := execOut(ctx, t, c, "wi-secret", "cat", "/mnt/secret-store/democert.pub"); !strings.HasPrefix(got, "-----BEGIN PUBLIC KEY-----") {
		t.Errorf("democert.pub = %q, want the public key", got)
	}
	if got := execOut(ctx, t, c, "wi-secret", "cat", "/mnt/secret-store/democert.pem"); got != strings.TrimSpace(keyPEM+certPEM) {
		t.Errorf("democert.pem = %q, want the private key and the certificate", got)
	}
	csiCreate(ctx, t, c, csiPod(t, "wi-refused", "nogrant", "wi-secret", nil))
	ev = waitForEvent(ctx, t, c, "default", "wi-refused", "FailedMount")
	for _, want := range []string{"ServiceAccount default/nogrant is not allowed this identity", "system:serviceaccount:default:nogrant", "AADSTS70021"} {
		if !strings.Contains(ev, want) {
			t.Errorf("clientID: FailedMount event %q lacks %q", ev, want)
		}
	}
	t.Logf("clientID refused: %s", ev)

	// 06: usePodIdentity. The v1 binding selects pods labelled
	// aadpodidbinding=csi-v1; the agent exchanges the pod's own token, so
	// the identity also trusts the pod's ServiceAccount.
	podid("fic", "create", "--identity", csiV1Identity, "--service-account", "default/csi-v1")
	csiCreate(ctx, t, c, csiSPC(t, "v1-secret", kv, map[string]string{"usePodIdentity": "true"}),
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "csi-v1"}},
		&podidv1.AzureIdentity{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "csi-v1"},
			Spec: podidv1.AzureIdentitySpec{Type: podidv1.UserAssignedMSI, ClientID: v1ID, TenantID: wiTenantID}},
		&podidv1.AzureIdentityBinding{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "csi-v1-binding"},
			Spec: podidv1.AzureIdentityBindingSpec{AzureIdentity: "csi-v1", Selector: "csi-v1"}})
	csiCreate(ctx, t, c, csiPod(t, "v1-secret", "csi-v1", "v1-secret", map[string]string{podidv1.PodLabelKey: "csi-v1"}))
	csiMounted(ctx, t, c, "v1-secret")
	// Same ServiceAccount (its federated credential exists), no binding label.
	csiCreate(ctx, t, c, csiPod(t, "v1-refused", "csi-v1", "v1-secret", nil))
	ev = waitForEvent(ctx, t, c, "default", "v1-refused", "FailedMount")
	for _, want := range []string{"no identity is assigned to pod default/v1-refused", podidv1.PodLabelKey} {
		if !strings.Contains(ev, want) {
			t.Errorf("usePodIdentity: FailedMount event %q lacks %q", ev, want)
		}
	}
	t.Logf("usePodIdentity refused: %s", ev)

	// 07: a grant for a whole namespace (a flexible federated credential):
	// the seed's class and a pod of any ServiceAccount of that namespace
	// mount; a pod of another namespace is refused, its event names the fix.
	nsGrant, nsOther := c.Namespace(t), c.Namespace(t)
	podid("fic", "create", "--identity", "azurekeyvaultsecretsprovider-e2e", "--namespace", nsGrant)
	for _, ns := range []string{nsGrant, nsOther} {
		spc := seedObjects(t, identityID, kv, wiTenantID)[0]
		spc.SetNamespace(ns)
		delete(spc.(*unstructured.Unstructured).Object["spec"].(map[string]any), "secretObjects") // no synced Secret here
		must(t, c.Client.Create(ctx, spc))
		must(t, c.Client.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "any"}}))
		p := csiPod(t, "ns-grant", "any", "demo-secret", nil)
		p.Namespace = ns
		must(t, c.Client.Create(ctx, p))
	}
	if _, err := c.WaitForPodReady(ctx, nsGrant, "ns-grant"); err != nil {
		t.Fatal(err)
	}
	if out, stderr, err := c.Exec(ctx, nsGrant, "ns-grant", "", "cat", "/mnt/secret-store/demosecret"); err != nil || out != "demovalue" {
		t.Fatalf("namespace grant: mounted demosecret = %q (%v %s)", out, err, stderr)
	}
	ev = waitForEvent(ctx, t, c, nsOther, "ns-grant", "FailedMount")
	for _, want := range []string{"NoSecretMountGrant", "ServiceAccount " + nsOther + "/any", "--namespace " + nsOther} {
		if !strings.Contains(ev, want) {
			t.Errorf("namespace grant: FailedMount event in %s %q lacks %q", nsOther, ev, want)
		}
	}

	// 08: rotation.
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

	// 09: what the provider costs on the node.
	if rss, err := processRSS("csi-provider"); err == nil {
		t.Logf("podid csi-provider RSS on the node: %.1f MiB", float64(rss)/(1<<20))
	} else {
		t.Logf("provider RSS: %v", err)
	}
}

const (
	csiWIIdentity    = "csi-wi-e2e"
	csiV1Identity    = "csi-v1-e2e"
	csiAdminClientID = "04b07795-8ddb-461a-bbee-02f9e1bf7b46"
	csiSubscription  = "0b1f6471-1bf0-4dda-aec3-cb9272f09590"
)

func csiVaultScope(kv string) string {
	return "/subscriptions/" + csiSubscription + "/resourceGroups/rg-csi/providers/Microsoft.KeyVault/vaults/" + kv
}

// csiValues: the chart with the CSI component; in the sts, the operator
// (Owner, as the seed's reader is), the identities (name → client id), and
// the seed's role assignments at the vault (Key Vault Administrator for the
// operator and the seed's identity, Secrets User for the others).
func csiValues(t *testing.T, c *framework.Cluster, dir, adminSecret, kv string, identities map[string]string) string {
	t.Helper()
	ids := []any{}
	ras := []any{
		map[string]any{"principal": csiAdminClientID, "resource": "https://management.azure.com", "role": "Owner"},
		map[string]any{"principal": csiAdminClientID, "scope": csiVaultScope(kv), "role": "Key Vault Administrator"},
	}
	for name, id := range identities {
		ids = append(ids, map[string]any{"subscription": csiSubscription, "resourceGroup": "rg-csi", "name": name, "location": "westeurope", "clientId": id})
		role := "Key Vault Secrets User"
		switch name {
		case "azurekeyvaultsecretsprovider-e2e":
			role = "Key Vault Administrator" // the seed's
		case csiWIIdentity:
			role = "Key Vault Certificate User" // certificates, their keys and secrets
		}
		ras = append(ras, map[string]any{"principal": id, "scope": csiVaultScope(kv), "role": role})
	}
	b, err := yaml.Marshal(map[string]any{
		"agent": map[string]any{"podCIDRs": []string{c.PodCIDR}},
		"sts": map[string]any{"saIssuer": c.Issuer, "bootstrap": map[string]any{"tenants": []any{map[string]any{
			"id": wiTenantID, "domains": []string{"podid.local"},
			"applications":    []any{map[string]any{"clientId": csiAdminClientID, "displayName": "e2e-admin", "secrets": []any{map[string]any{"value": adminSecret}}}},
			"identities":      ids,
			"roleAssignments": ras,
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

// csiCertificate is a self-signed certificate and its PKCS#8 key, PEM.
func csiCertificate(t *testing.T) (certPEM, keyPEM string) {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	must(t, err)
	tpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "democert.podid.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, k.Public(), k)
	must(t, err)
	kder, err := x509.MarshalPKCS8PrivateKey(k)
	must(t, err)
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})), string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}))
}

// mountsSecretsStore reports whether a pod has a volume of the Secrets
// Store CSI driver.
func mountsSecretsStore(p corev1.Pod) bool {
	return slices.ContainsFunc(p.Spec.Volumes, func(v corev1.Volume) bool {
		return v.CSI != nil && v.CSI.Driver == "secrets-store.csi.k8s.io"
	})
}

// csiModeObjects are what 05 and 06 created, for the cleanup.
var csiModeObjects []client.Object

// csiCreate creates objects (the cleanup deletes them).
func csiCreate(ctx context.Context, t *testing.T, c *framework.Cluster, objs ...client.Object) {
	t.Helper()
	for _, o := range objs {
		must(t, client.IgnoreAlreadyExists(c.Client.Create(ctx, o)))
		csiModeObjects = append(csiModeObjects, o)
	}
}

// csiSPC is a SecretProviderClass of the vault's demosecret with the
// identity parameters params.
func csiSPC(t *testing.T, name, kv string, params map[string]string) client.Object {
	t.Helper()
	p := map[string]any{"keyvaultName": kv, "tenantId": wiTenantID,
		"objects": "array:\n  - |\n    objectName: demosecret\n    objectType: secret\n"}
	for k, v := range params {
		p[k] = v
	}
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "secrets-store.csi.x-k8s.io/v1", "kind": "SecretProviderClass",
		"metadata": map[string]any{"name": name, "namespace": "default"},
		"spec":     map[string]any{"provider": "azure", "parameters": p},
	}}
	return u
}

// csiPod is the seed's pod of ServiceAccount sa mounting the class spc.
func csiPod(t *testing.T, name, sa, spc string, labels map[string]string) *corev1.Pod {
	t.Helper()
	tpl := seedDeployment(t).Spec.Template
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, Labels: labels}, Spec: tpl.Spec}
	pod.Spec.ServiceAccountName = sa
	pod.Spec.Containers[0].Env = nil // no synced Secret for these classes
	pod.Spec.Volumes[0].CSI.VolumeAttributes = map[string]string{"secretProviderClass": spc}
	return pod
}

// csiMounted waits for the pod and checks its mounted demosecret.
func csiMounted(ctx context.Context, t *testing.T, c *framework.Cluster, name string) {
	t.Helper()
	start := time.Now()
	if _, err := c.WaitForPodReady(ctx, "default", name); err != nil {
		t.Fatal(err)
	}
	if got := execOut(ctx, t, c, name, "cat", "/mnt/secret-store/demosecret"); got != "demovalue" {
		t.Fatalf("pod %s: mounted demosecret = %q", name, got)
	}
	t.Logf("pod %s: mounted demosecret, Ready %s after its creation", name, time.Since(start).Round(time.Millisecond))
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
