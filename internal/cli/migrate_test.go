package cli_test

import (
	"encoding/json"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/yaml"

	podidv1 "github.com/podid/podid/api/v1"
	"github.com/podid/podid/internal/cli"
	"github.com/podid/podid/internal/workloadidentity"
)

// deployment creates a Deployment, a ReplicaSet it controls and a running
// pod of it (no controller-manager runs here, so the test plays it).
func (w *world) deployment(name, sa, sel string) {
	w.t.Helper()
	labels := map[string]string{"app": name, podidv1.PodLabelKey: sel}
	tmpl := corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: podSpec(sa)}
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: w.ns, Name: name},
		Spec: appsv1.DeploymentSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}}, Template: tmpl}}
	w.create(d)
	ctl := true
	rs := &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Namespace: w.ns, Name: name + "-5d8f7b9c6d",
		OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "Deployment", Name: name, UID: d.UID, Controller: &ctl}}},
		Spec: appsv1.ReplicaSetSpec{Selector: d.Spec.Selector, Template: tmpl}}
	w.create(rs)
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: w.ns, Name: rs.Name + "-x7k2p", Labels: labels,
		OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: rs.Name, UID: rs.UID, Controller: &ctl}}},
		Spec: podSpec(sa)}
	pod.Spec.NodeName = w.node()
	w.create(pod)
}

func TestMigrate(t *testing.T) {
	c := startCluster(t)
	ns := env.Namespace(t)
	w := &world{t: t, c: c, ns: ns, cl: env.Client, ids: map[string]cli.Identity{}}
	web := w.identity("web")
	// web: a user-assigned identity with its resourceID, as seed 004 writes it.
	w.create(&podidv1.AzureIdentity{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"},
		Spec: podidv1.AzureIdentitySpec{Type: podidv1.UserAssignedMSI, ClientID: web.ClientID, ResourceID: web.ID}})
	w.binding(ns, "web-binding", "web", "web")
	w.sa("web", "")
	w.deployment("web", "web", "web")
	// api: no resourceID; migrate finds the identity by client id.
	api := w.identity("api")
	w.azureIdentity(ns, "api", api.ClientID)
	w.binding(ns, "api-binding", "api", "api")
	w.sa("api", "")
	w.v1Pod("api-pod", "api", "api")
	// legacy: a service principal with a secret.
	w.create(&podidv1.AzureIdentity{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "legacy"},
		Spec: podidv1.AzureIdentitySpec{Type: podidv1.ServicePrincipal, ClientID: "11111111-2222-4333-8444-555555555555", TenantID: c.sts.TenantID,
			ClientPassword: corev1.SecretReference{Name: "legacy-secret", Namespace: ns}}})
	w.binding(ns, "legacy-binding", "legacy", "legacy")
	w.sa("batch", "")
	w.deployment("batch", "batch", "legacy")
	// shared: runs as the namespace's default ServiceAccount.
	w.sa("default", "")
	w.deployment("shared", "default", "web")

	var p cli.Plan
	out := c.ok("migrate", "-n", ns, "-o", "yaml")
	if err := yaml.UnmarshalStrict([]byte(out), &p); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if p.Issuer != c.issuer || len(p.FederatedCredentials) != 2 || len(p.ServiceAccounts) != 2 || len(p.Workloads) != 2 || len(p.Problems) != 2 {
		t.Fatalf("plan:\n%s", out)
	}
	if f := p.FederatedCredentials[1]; f.Identity != "api" || f.ResourceGroup != "rg" || f.Subject != "system:serviceaccount:"+ns+":api" {
		t.Errorf("second credential %+v", f)
	}
	if wl := p.Workloads[0]; wl.Kind != "Deployment" || wl.Name != "web" || wl.AzureIdentity != ns+"/web" {
		t.Errorf("first workload %+v", wl)
	}
	probs := p.Problems[0].Object + ": " + p.Problems[0].Problem + " " + p.Problems[0].Action + "\n" + p.Problems[1].Object + ": " + p.Problems[1].Problem + " " + p.Problems[1].Action
	for _, want := range []string{
		"deployment/" + ns + "/batch: uses AzureIdentity " + ns + "/legacy, a service principal with a client secret in Secret " + ns + "/legacy-secret",
		"az ad app federated-credential create --id 11111111-2222-4333-8444-555555555555",
		"deployment/" + ns + "/shared: runs as ServiceAccount " + ns + "/default",
	} {
		if !strings.Contains(probs, want) {
			t.Errorf("problems lack %q:\n%s", want, probs)
		}
	}
	// The dry run changed nothing.
	var sa corev1.ServiceAccount
	_ = env.Client.Get(t.Context(), types.NamespacedName{Namespace: ns, Name: "web"}, &sa)
	if len(sa.Annotations) != 0 {
		t.Fatalf("dry run annotated %v", sa.Annotations)
	}
	if out := c.ok("migrate", "-n", ns); !strings.Contains(out, "dry run") || !strings.Contains(out, "needs you: deployment/"+ns+"/batch") {
		t.Errorf("table plan:\n%s", out)
	}

	out = c.ok("migrate", "-n", ns, "--apply")
	for _, want := range []string{
		"federated credential kubernetes-" + ns + "-web on identity web: created",
		"updated ServiceAccount " + ns + "/web",
		"deployment " + ns + "/web: pod template labelled; rolls out",
		"pod " + ns + "/api-pod: needs you: bare pod",
		"needs you: deployment/" + ns + "/batch",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("apply output lacks %q:\n%s", want, out)
		}
	}
	_ = env.Client.Get(t.Context(), types.NamespacedName{Namespace: ns, Name: "web"}, &sa)
	if sa.Annotations[workloadidentity.ClientIDAnnotation] != web.ClientID || sa.Labels[workloadidentity.UseLabel] != "true" {
		t.Errorf("ServiceAccount web: %v %v", sa.Annotations, sa.Labels)
	}
	var d appsv1.Deployment
	_ = env.Client.Get(t.Context(), types.NamespacedName{Namespace: ns, Name: "web"}, &d)
	if d.Spec.Template.Labels[workloadidentity.UseLabel] != "true" || d.Spec.Template.Labels[podidv1.PodLabelKey] != "web" {
		t.Errorf("web template labels %v", d.Spec.Template.Labels)
	}
	_ = env.Client.Get(t.Context(), types.NamespacedName{Namespace: ns, Name: "shared"}, &d)
	if d.Spec.Template.Labels[workloadidentity.UseLabel] != "" {
		t.Errorf("shared (default ServiceAccount) was changed: %v", d.Spec.Template.Labels)
	}
	var fs []cli.FederatedCredential
	_ = json.Unmarshal([]byte(c.ok("fic", "list", "--identity", "api", "-o", "json")), &fs)
	if len(fs) != 1 || fs[0].Issuer != c.issuer || fs[0].Subject != "system:serviceaccount:"+ns+":api" {
		t.Errorf("api credentials %+v", fs)
	}
	// A pod the migrated Deployment now creates gets a working identity
	// through workload identity: doctor proves it with a real exchange.
	w.wiPod("web-new", "web")
	if r := c.podid("doctor", "pod/web-new", "-n", ns); r.code != 0 || !strings.Contains(r.stdout, "✓ the identity provider issued a token for client "+web.ClientID) {
		t.Errorf("doctor after migrate: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	// Applying again is a no-op.
	out = c.ok("migrate", "-n", ns, "--apply")
	if !strings.Contains(out, "on identity web: exists") || !strings.Contains(out, "ServiceAccount "+ns+"/web unchanged") {
		t.Errorf("second apply:\n%s", out)
	}
	// Without a cloud config, --apply refuses (the dry run still works).
	u := &user{t: t, xdg: t.TempDir(), kubeconfig: c.kubeconfig}
	if r := u.podid("migrate", "-n", ns, "--apply"); r.code != 1 || !strings.Contains(r.stderr, "podid config set-cloud") {
		t.Errorf("apply without config: %d %q", r.code, r.stderr)
	}
	if r := u.podid("migrate", "-n", ns); r.code != 0 || !strings.Contains(r.stdout, "needs you: pod/"+ns+"/api-pod: AzureIdentity "+ns+"/api has no resourceID") {
		t.Errorf("dry run without config: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}
