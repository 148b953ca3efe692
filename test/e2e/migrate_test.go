package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/podid/podid/internal/sts"
	"github.com/podid/podid/test/e2e/framework"
)

// TestMigrateOnNode runs `podid migrate --apply` from the host on a
// pod-identity workload — an AzureIdentity (no resourceID), its binding, a
// Deployment whose pods carry the aadpodidbinding label — with podid sts
// (ARM for the federated credential, reached at its ClusterIP) and the
// webhook deployed as shipped. The rollout's new pod gets the webhook's
// injection and a token for the same identity through workload identity
// (azidentity.WorkloadIdentityCredential in the pod), and doctor reports
// every link ✓. (That the v1 pods got tokens through the agent is
// TestAgent's proof; here they only need to exist.)
func TestMigrateOnNode(t *testing.T) {
	c := framework.Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	ns := c.Namespace(t)
	// No federated credential in the bootstrap: migrate creates it.
	w := wiWorkload{name: "migrate", sa: "sa-migrate", app: "migrate", clientID: newUUID(t)}
	w.subject = "system:serviceaccount:" + ns + ":" + w.sa
	adminID, adminSecret := newUUID(t), newUUID(t)+newUUID(t)
	ensureNamespace(ctx, t, c, stsNamespace)
	stsPodIP := deploySTS(ctx, t, c, []wiWorkload{w}, func(tn *sts.BootstrapTenant) {
		tn.Applications = append(tn.Applications, sts.BootstrapApplication{ClientID: adminID, DisplayName: "e2e-admin",
			Secrets: []sts.BootstrapSecret{{Value: adminSecret}}})
		tn.RoleAssignments = append(tn.RoleAssignments, sts.BootstrapRoleAssignment{Principal: adminID, Resource: sts.ARMResource, Role: "Owner"})
	})
	_, caPEM := stsClientTransport(ctx, t, stsPodIP)
	deployWebhook(ctx, t, c)
	applyCRDs(ctx, t, c)
	c.Apply(ctx, t, ns, mustYAML(t, &corev1.ConfigMap{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: metav1.ObjectMeta{Name: "podid-sts-ca"},
		Data:       map[string]string{"ca.crt": string(caPEM)},
	}))

	// The pod-identity workload.
	const selector = "podid-e2e-migrate"
	applyServiceAccount(ctx, t, c, ns, w.sa, nil)
	applyV1Identity(ctx, t, c, ns, "id-migrate", w.clientID, selector)
	dep, _ := seed003Deployment(ctx, t, c, w.app, w.sa)
	delete(dep.Spec.Template.Labels, "azure.workload.identity/use")
	dep.Spec.Template.Labels["aadpodidbinding"] = selector
	c.Apply(ctx, t, ns, mustYAML(t, dep))
	if err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, framework.PodTimeout, true, func(ctx context.Context) (bool, error) {
		pods, err := c.Clientset.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "aadpodidbinding=" + selector})
		return err == nil && len(pods.Items) == 1, err
	}); err != nil {
		t.Fatalf("the v1 pod: %v", err)
	}

	podid := cliRunner(ctx, t, c)
	caFile := filepath.Join(t.TempDir(), "sts-ca.pem")
	secretFile := filepath.Join(t.TempDir(), "admin-secret")
	for f, b := range map[string][]byte{caFile: caPEM, secretFile: []byte(adminSecret)} {
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if out, code := podid("config", "set-cloud", "local", "--authority", strings.TrimSuffix(stsAuthority, "/"), "--ca-file", caFile,
		"--tenant-id", wiTenantID, "--client-id", adminID, "--client-secret-file", secretFile,
		"--subscription", "0b1f6471-1bf0-4dda-aec3-cb9272f09590", "-g", "e2e"); code != 0 {
		t.Fatalf("config: %d %s", code, out)
	}
	out, code := podid("migrate", "-n", ns, "--apply")
	t.Logf("podid migrate --apply:\n%s", out)
	for _, want := range []string{
		"federated credential kubernetes-" + ns + "-" + w.sa + " on identity " + w.sa + ": created",
		"updated ServiceAccount " + ns + "/" + w.sa,
		"deployment " + ns + "/" + dep.Name + ": pod template labelled; rolls out",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("migrate output lacks %q", want)
		}
	}
	if code != 0 {
		t.Fatalf("migrate exit %d", code)
	}

	// The rollout's pod: mutated by the webhook, and a token through
	// workload identity for the same identity.
	pod := waitForPodOf(ctx, t, c, ns, "app="+w.app+",azure.workload.identity/use=true")
	assertWebhookInjected(t, pod, w.clientID)
	logs := waitForLog(ctx, t, c, ns, pod.Name, "wiclient: token acquired")
	t.Logf("%s", lastLine(logs))
	out, code = podid("doctor", "pod/"+pod.Name, "-n", ns)
	t.Logf("podid doctor:\n%s", out)
	if code != 0 || !strings.Contains(out, "✓ identity "+w.sa+" trusts "+w.subject) || !strings.Contains(out, "✓ the identity provider issued a token for client "+w.clientID) {
		t.Errorf("doctor after migrate: exit %d", code)
	}
	// Applying again changes nothing.
	if out, _ := podid("migrate", "-n", ns, "--apply"); !strings.Contains(out, "on identity "+w.sa+": exists") || !strings.Contains(out, "ServiceAccount "+ns+"/"+w.sa+" unchanged") {
		t.Errorf("second apply:\n%s", out)
	}
}
