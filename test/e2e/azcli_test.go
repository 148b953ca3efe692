package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/podid/podid/test/e2e/framework"
)

// azcliImage is Debian's azure-cli, built by `hack/image.sh azcli`.
const azcliImage = "localhost/azcli:dev"

// azureCLILogins runs seed 003's quick guide in its azcli pod, unchanged, on
// the local cloud (podid installed with values-local.yaml): the pod runs
// `sleep infinity`; through exec, `az login --federated-token … --service-principal
// -u $AZURE_CLIENT_ID -t $AZURE_TENANT_ID` and then `az login --identity`
// (IMDS, through podid's agent), each followed by `az account get-access-token
// --resource …`. Success: each login lists exactly the subscription the
// identity is Reader on (Azure RBAC; the helm test's identity's subscription
// is not listed), and each token verifies against the sts as w's identity.
// Tokens are never printed, only their claims.
func azureCLILogins(ctx context.Context, t *testing.T, c *framework.Cluster, ns string, w wiWorkload, tr http.RoundTripper) {
	t.Helper()
	if !nodeHasImage(ctx, t, c, azcliImage) {
		if os.Getenv(framework.RequireEnv) == "1" {
			t.Fatalf("image %s is not on the node: run hack/image.sh azcli", azcliImage)
		}
		t.Skipf("image %s is not on the node: run hack/image.sh azcli", azcliImage)
	}
	// Seed 003's label, and one of the test's own: other pods of the test
	// (its wiclient Deployments) carry app=azcli too.
	labels := map[string]string{"app": "azcli", "podid-e2e": "azure-cli"}
	dep := &appsv1.Deployment{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: metav1.ObjectMeta{Name: "azcli-deployment", Labels: labels},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](1),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "azcli", "podid-e2e": "azure-cli", "azure.workload.identity/use": "true"}},
				Spec: corev1.PodSpec{
					DeprecatedServiceAccount:      w.sa,
					TerminationGracePeriodSeconds: ptr.To[int64](1),
					Containers: []corev1.Container{{
						Name:            "azcli",
						Image:           azcliImage,
						ImagePullPolicy: corev1.PullNever,
						Command:         []string{"/bin/bash", "-c", "sleep infinity"},
						// The local CA as the system trust store's file (docs/local-cloud.md).
						VolumeMounts: []corev1.VolumeMount{{Name: "podid-sts-ca", MountPath: "/etc/ssl/certs/ca-certificates.crt", SubPath: "ca.crt", ReadOnly: true}},
					}},
					Volumes: []corev1.Volume{{Name: "podid-sts-ca", VolumeSource: corev1.VolumeSource{
						ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "podid-sts-ca"}},
					}}},
				},
			},
		},
	}
	c.Apply(ctx, t, ns, mustYAML(t, dep))
	pod := waitForPodOf(ctx, t, c, ns, "app=azcli,podid-e2e=azure-cli")
	assertInjected(t, pod, w.clientID, publicAuthority)
	bash := func(script string) string {
		t.Helper()
		out, stderr, err := c.Exec(ctx, ns, pod.Name, "azcli", "/bin/bash", "-c", script)
		if err != nil {
			t.Fatalf("%s: %v\nstderr: %s", script, err, stderr)
		}
		return out
	}
	type account struct {
		ID       string `json:"id"`
		TenantID string `json:"tenantId"`
		State    string `json:"state"`
		User     struct {
			Name string `json:"name"`
			Type string `json:"type"`
		} `json:"user"`
	}
	for _, login := range []struct{ name, cmd, user string }{
		// Seed 003's command, verbatim.
		{"federated token", `az login --federated-token "$(cat $AZURE_FEDERATED_TOKEN_FILE)" --service-principal -u $AZURE_CLIENT_ID -t $AZURE_TENANT_ID`, w.clientID},
		// The managed identity of the pod, from IMDS: podid's agent.
		{"identity", `az logout && az login --identity`, "systemAssignedIdentity"},
	} {
		out := bash(login.cmd)
		var accounts []account
		if err := json.Unmarshal([]byte(out), &accounts); err != nil {
			t.Fatalf("az login (%s) printed no account list: %v\n%s", login.name, err, out)
		}
		// The subscription the identity holds Reader on, and no other: the
		// release's other identities (the helm test's) live in others.
		subs := map[string]bool{}
		for _, a := range accounts {
			if a.TenantID != wiTenantID || a.State != "Enabled" || a.User.Name != login.user || a.User.Type != "servicePrincipal" {
				t.Errorf("az login (%s): account %+v, want tenant %s, Enabled, servicePrincipal %s", login.name, a, wiTenantID, login.user)
			}
			subs[a.ID] = true
		}
		if !subs[wiSubscription] || len(subs) != 1 {
			t.Fatalf("az login (%s): accounts %+v, want subscription %s alone", login.name, accounts, wiSubscription)
		}
		var tok struct {
			AccessToken  string `json:"accessToken"`
			Subscription string `json:"subscription"`
			Tenant       string `json:"tenant"`
		}
		out = bash("az account get-access-token --resource " + wiResource + " -o json")
		if err := json.Unmarshal([]byte(out), &tok); err != nil || tok.AccessToken == "" {
			t.Fatalf("az account get-access-token (%s): no token in its output (%v)", login.name, err)
		}
		if tok.Tenant != wiTenantID || !subs[tok.Subscription] {
			t.Errorf("az account get-access-token (%s): tenant %s subscription %s", login.name, tok.Tenant, tok.Subscription)
		}
		verifyAccessToken(ctx, t, tr, strings.TrimSpace(tok.AccessToken), w.clientID)
		t.Logf("az login (%s) in seed 003's azcli pod: %d subscriptions listed; az account get-access-token: a token of %s", login.name, len(subs), w.clientID)
	}
}
