package chart

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/podid/podid/internal/scheme"
	"github.com/podid/podid/test/e2e/framework"
)

const (
	namespace   = "podid-system"
	kubeVersion = "1.33.4" // hack/versions.sh K8S_VERSION
	localTenant = "72f988bf-86f1-41af-91ab-2d7cd011db47"
)

func chartDir() string { return filepath.Join(framework.RepoRoot(), "deploy", "chart", "podid") }

// helmError is a failed helm run; Stderr is what helm said (the checks on
// messages read only this, never the command line).
type helmError struct {
	Args   []string
	Err    error
	Stderr string
}

func (e *helmError) Error() string {
	return fmt.Sprintf("helm %s: %v: %s", strings.Join(e.Args, " "), e.Err, e.Stderr)
}

// helm runs the helm CLI and returns stdout, or a *helmError.
func helm(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(framework.Helm(t), args...)
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+t.TempDir(), "HELM_CONFIG_HOME="+t.TempDir(), "HELM_DATA_HOME="+t.TempDir())
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), &helmError{Args: args, Err: err, Stderr: errb.String()}
	}
	return out.String(), nil
}

func render(t *testing.T, args ...string) (string, error) {
	t.Helper()
	base := []string{"template", "podid", chartDir(), "--namespace", namespace, "--kube-version", kubeVersion, "--include-crds"}
	return helm(t, append(base, args...)...)
}

// decodeStrict decodes every document into its registered Go type, refusing
// unknown fields and unknown kinds.
func decodeStrict(t *testing.T, manifest string) []k8sruntime.Object {
	t.Helper()
	s := scheme.New()
	if err := apiextensionsv1.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	dec := serializer.NewCodecFactory(s, serializer.EnableStrict).UniversalDeserializer()
	r := utilyaml.NewYAMLReader(bufioReader(manifest))
	var objs []k8sruntime.Object
	for {
		doc, err := r.Read()
		if errors.Is(err, errEOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		j, err := yaml.YAMLToJSONStrict(doc)
		if err != nil {
			t.Fatalf("rendered document is not strict YAML: %v\n%s", err, doc)
		}
		o, _, err := dec.Decode(j, nil, nil)
		if err != nil {
			t.Fatalf("rendered object does not decode strictly: %v\n%s", err, doc)
		}
		objs = append(objs, o)
	}
	return objs
}

type rendered struct {
	objs []k8sruntime.Object
}

func (r rendered) find(kind, name string) k8sruntime.Object {
	for _, o := range r.objs {
		if o.GetObjectKind().GroupVersionKind().Kind == kind && metaName(o) == name {
			return o
		}
	}
	return nil
}

func (r rendered) kinds() map[string]int {
	m := map[string]int{}
	for _, o := range r.objs {
		m[o.GetObjectKind().GroupVersionKind().Kind+"/"+metaName(o)]++
	}
	return m
}

func TestLint(t *testing.T) {
	vf := func(f string) []string { return []string{"-f", filepath.Join(chartDir(), f)} }
	for name, args := range map[string][]string{
		"defaults":  nil,
		"local":     vf("values-local.yaml"),
		"entra":     append(vf("values-entra.yaml"), "--set", "tenantID=0b1f6471-1bf0-4dda-aec3-cb9272f09590"),
		"manifests": vf("values-manifests.yaml"),
	} {
		t.Run(name, func(t *testing.T) {
			cmd := exec.Command(framework.Helm(t), append([]string{"lint", chartDir(), "--strict", "--kube-version", kubeVersion}, args...)...)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("helm lint: %v\n%s", err, out)
			}
			// lint reports a template's fail() as INFO and passes: none may fire.
			if bytes.Contains(out, []byte("Fail:")) {
				t.Fatalf("a template failed:\n%s", out)
			}
		})
	}
}

// The two real situations and the defaults: the objects each renders and the
// wiring between them.
func TestRender(t *testing.T) {
	entraTenant := "0b1f6471-1bf0-4dda-aec3-cb9272f09590"
	cases := []struct {
		name          string
		args          []string
		wantSTS       bool
		wantAuthority string
		// What workloads get (the webhook's AZURE_AUTHORITY_HOST); "" = wantAuthority.
		wantWorkloadAuthority string
		wantTenant            string
	}{
		{name: "defaults", wantSTS: true, wantAuthority: "https://podid-sts.podid-system.svc/", wantTenant: localTenant},
		{name: "local", args: []string{"-f", filepath.Join(chartDir(), "values-local.yaml")}, wantSTS: true,
			wantAuthority: "https://10.96.0.100/", wantWorkloadAuthority: "https://login.microsoftonline.com/", wantTenant: localTenant},
		{name: "entra", args: []string{"-f", filepath.Join(chartDir(), "values-entra.yaml"), "--set", "tenantID=" + entraTenant},
			wantAuthority: "https://login.microsoftonline.com/", wantTenant: entraTenant},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, err := render(t, tc.args...)
			if err != nil {
				t.Fatal(err)
			}
			r := rendered{decodeStrict(t, out)}
			for _, want := range []string{
				"CustomResourceDefinition/azureidentities.aadpodidentity.k8s.io",
				"CustomResourceDefinition/azureassignedidentities.aadpodidentity.k8s.io",
				"Deployment/podid-controller", "ClusterRole/podid-controller", "Role/podid-controller",
				"Deployment/podid-webhook", "MutatingWebhookConfiguration/podid-webhook",
				"ValidatingWebhookConfiguration/podid-webhook", "Secret/podid-webhook-cert",
				"DaemonSet/podid-agent", "ValidatingAdmissionPolicy/podid-agent-token-requests",
				"ConfigMap/podid-agent-config", "ConfigMap/podid-sts-ca",
			} {
				if r.kinds()[want] != 1 {
					t.Errorf("want exactly one %s, got %d", want, r.kinds()[want])
				}
			}
			// One replica (local): a budget would block every node drain.
			wantPDB := map[bool]int{true: 0, false: 1}[tc.name == "local"]
			for _, k := range []string{"PodDisruptionBudget/podid-controller", "PodDisruptionBudget/podid-webhook"} {
				if r.kinds()[k] != wantPDB {
					t.Errorf("%s: got %d, want %d", k, r.kinds()[k], wantPDB)
				}
			}
			if got := r.kinds()["ClusterRole/podid-agent-secrets"]; got != 0 {
				t.Errorf("the opt-in Secret reader is rendered by default")
			}
			dep, _ := r.find("Deployment", "podid-sts").(*appsv1.Deployment)
			if (dep != nil) != tc.wantSTS {
				t.Fatalf("sts Deployment rendered = %v, want %v", dep != nil, tc.wantSTS)
			}
			cm := r.find("ConfigMap", "podid-agent-config").(*corev1.ConfigMap)
			if cm.Data["AUTHORITY"] != tc.wantAuthority || cm.Data["AZURE_TENANT_ID"] != tc.wantTenant {
				t.Errorf("agent config = %v, want authority %s tenant %s", cm.Data, tc.wantAuthority, tc.wantTenant)
			}
			wh := r.find("Deployment", "podid-webhook").(*appsv1.Deployment)
			args := wh.Spec.Template.Spec.Containers[0].Args
			workloadAuthority := tc.wantWorkloadAuthority
			if workloadAuthority == "" {
				workloadAuthority = tc.wantAuthority
			}
			for _, want := range []string{"--authority=" + workloadAuthority, "--tenant-id=" + tc.wantTenant} {
				if !contains(args, want) {
					t.Errorf("webhook args %v lack %s", args, want)
				}
			}
			caCM := r.find("ConfigMap", "podid-sts-ca").(*corev1.ConfigMap)
			if !tc.wantSTS {
				if caCM.Data["ca.pem"] != "" {
					t.Errorf("Entra ID: the agent trusts an extra CA: %q", caCM.Data["ca.pem"])
				}
				for _, k := range []string{"Service/podid-sts", "Secret/podid-sts-ca-key", "Secret/podid-sts-bootstrap"} {
					if r.kinds()[k] != 0 {
						t.Errorf("Entra ID renders %s", k)
					}
				}
				return
			}
			// The agent trusts exactly the CA the sts serves with.
			sec := r.find("Secret", "podid-sts-ca-key").(*corev1.Secret)
			if caCM.Data["ca.pem"] == "" || caCM.Data["ca.pem"] != string(sec.Data["tls.crt"]) {
				t.Errorf("agent CA ConfigMap differs from the sts CA Secret")
			}
			sargs := dep.Spec.Template.Spec.Containers[0].Args
			// The sts serves the agent's authority; its public URL is the one workloads use.
			host := strings.TrimSuffix(strings.TrimPrefix(tc.wantAuthority, "https://"), "/")
			public := strings.TrimSuffix(workloadAuthority, "/")
			for _, want := range []string{"--host=" + host, "--public-url=" + public, "--ca-cert=/etc/podid-sts/ca/tls.crt"} {
				if !contains(sargs, want) {
					t.Errorf("sts args %v lack %s", sargs, want)
				}
			}
			checkPodSecurity(t, r)
		})
	}
}

// Every container: no privilege escalation, read-only root, all capabilities
// dropped; only the agent adds any (documented in the chart README), and only
// the agent runs as root.
func checkPodSecurity(t *testing.T, r rendered) {
	t.Helper()
	for _, o := range r.objs {
		var spec *corev1.PodSpec
		switch w := o.(type) {
		case *appsv1.Deployment:
			spec = &w.Spec.Template.Spec
		case *appsv1.DaemonSet:
			spec = &w.Spec.Template.Spec
		default:
			continue
		}
		name := metaName(o)
		for _, c := range spec.Containers {
			sc := c.SecurityContext
			if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
				sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
				sc.Capabilities == nil || !contains(capStrings(sc.Capabilities.Drop), "ALL") {
				t.Errorf("%s/%s: security context %+v", name, c.Name, sc)
				continue
			}
			if name != "podid-agent" {
				if len(sc.Capabilities.Add) != 0 {
					t.Errorf("%s adds capabilities %v", name, sc.Capabilities.Add)
				}
				if spec.SecurityContext == nil || spec.SecurityContext.RunAsNonRoot == nil || !*spec.SecurityContext.RunAsNonRoot {
					t.Errorf("%s may run as root", name)
				}
			}
			if c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
				t.Errorf("%s/%s: no memory request/limit", name, c.Name)
			}
			if c.ReadinessProbe == nil || c.LivenessProbe == nil {
				t.Errorf("%s/%s: missing probes", name, c.Name)
			}
		}
	}
	ds := r.find("DaemonSet", "podid-agent").(*appsv1.DaemonSet)
	if ds.Spec.Template.Spec.PriorityClassName != "system-node-critical" {
		t.Errorf("agent priority class %q", ds.Spec.Template.Spec.PriorityClassName)
	}
}

// A wrong type, an unknown key or a missing required value fails with a
// message naming the value.
func TestValuesRejected(t *testing.T) {
	cases := []struct {
		name string
		args []string
		want []string
	}{
		{"unknown top-level key", []string{"--set", "tenantId=x"}, []string{"additional properties 'tenantId' not allowed"}},
		{"unknown nested key", []string{"--set", "agent.podCidr=10.0.0.0/8"}, []string{"at '/agent'", "'podCidr' not allowed"}},
		{"wrong type", []string{"--set", "controller.replicas=two"}, []string{"/controller/replicas", "got string, want integer"}},
		{"bool as string", []string{"--set-string", "webhook.enabled=yes"}, []string{"/webhook/enabled", "want boolean"}},
		{"bad enum", []string{"--set", "webhook.failurePolicy=Sometimes"}, []string{"/webhook/failurePolicy"}},
		{"tenant not a GUID", []string{"--set", "tenantID=contoso"}, []string{"/tenantID"}},
		{"authority not https", []string{"--set", "authority=http://login.example/"}, []string{"/authority", "does not match"}},
		{"bad CIDR", []string{"--set", "agent.podCIDRs={10.244.0.0}"}, []string{"/agent/podCIDRs/0"}},
		{"helm test without the sts", []string{"--set", "helmTest.enabled=true", "--set", "sts.enabled=false", "--set", "tenantID=" + localTenant},
			[]string{"helmTest.enabled needs sts.enabled"}},
		{"entra without tenant", []string{"-f", filepath.Join(chartDir(), "values-entra.yaml")}, []string{"tenantID is required"}},
		{"broker client id not a GUID", []string{"--set", "broker.enabled=true", "--set", "broker.clientIDs={app}"}, []string{"/broker/clientIDs/0"}},
		{"broker without the agent", []string{"--set", "broker.enabled=true", "--set", "agent.enabled=false"}, []string{"broker.enabled needs agent.enabled"}},
		{"Secrets read by the broker and by every agent", []string{"--set", "broker.enabled=true", "--set", "broker.secretIdentities=true", "--set", "agent.serveSecretIdentities=true"},
			[]string{"exclude each other"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := render(t, tc.args...)
			if err == nil {
				t.Fatalf("rendered; want a failure mentioning %q", tc.want)
			}
			var he *helmError
			if !errors.As(err, &he) {
				t.Fatal(err)
			}
			for _, w := range tc.want {
				if !strings.Contains(he.Stderr, w) {
					t.Errorf("error does not mention %q:\n%v", w, err)
				}
			}
		})
	}
}

// Each component can be switched off, and its objects go with it.
func TestComponentsOff(t *testing.T) {
	for _, c := range []struct{ value, object string }{
		{"controller", "Deployment/podid-controller"},
		{"webhook", "MutatingWebhookConfiguration/podid-webhook"},
		{"agent", "DaemonSet/podid-agent"},
		{"sts", "Deployment/podid-sts"},
	} {
		t.Run(c.value, func(t *testing.T) {
			out, err := render(t, "--set", c.value+".enabled=false")
			if err != nil {
				t.Fatal(err)
			}
			r := rendered{decodeStrict(t, out)}
			if r.kinds()[c.object] != 0 {
				t.Errorf("%s.enabled=false still renders %s", c.value, c.object)
			}
			for k := range r.kinds() {
				if strings.HasSuffix(k, "/podid-"+c.value) && !strings.HasPrefix(k, "ConfigMap/") {
					t.Errorf("%s.enabled=false still renders %s", c.value, k)
				}
			}
		})
	}
}

// The manifests under deploy/ are the chart's rendering (hack/generate.sh);
// an edit to one without the other fails here.
func TestDeployManifestsAreGenerated(t *testing.T) {
	framework.Helm(t)
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("go not on PATH")
	}
	cmd := exec.Command(filepath.Join(framework.RepoRoot(), "hack", "generate.sh"), "--check")
	cmd.Env = append(os.Environ(), "HELM="+framework.Helm(t))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("hack/generate.sh --check: %v\n%s", err, out)
	}
}

// The webhook configurations under deploy/ are single objects of their kind
// (testenv reads them strictly).
func TestShippedWebhookFiles(t *testing.T) {
	for _, f := range []string{"mutatingwebhookconfiguration.yaml", "validatingwebhookconfiguration.yaml"} {
		b, err := os.ReadFile(filepath.Join(framework.RepoRoot(), "deploy", "webhook", f))
		if err != nil {
			t.Fatal(err)
		}
		var into any = &admissionregistrationv1.MutatingWebhookConfiguration{}
		if strings.HasPrefix(f, "validating") {
			into = &admissionregistrationv1.ValidatingWebhookConfiguration{}
		}
		if err := yaml.UnmarshalStrict(b, into); err != nil {
			t.Errorf("deploy/webhook/%s: %v", f, err)
		}
	}
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func capStrings(cs []corev1.Capability) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = string(c)
	}
	return out
}

// serviceMonitor.enabled: a ServiceMonitor and a metrics Service per enabled
// component, the Service's target port one that the component's pods declare.
func TestServiceMonitor(t *testing.T) {
	out, err := render(t, "--set", "serviceMonitor.enabled=true", "--set", "controller.enabled=false")
	if err != nil {
		t.Fatal(err)
	}
	var kept []string
	monitors := map[string]bool{}
	for _, doc := range strings.Split(out, "\n---\n") {
		var head struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Metadata   struct {
				Name string `json:"name"`
			} `json:"metadata"`
		}
		if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
			t.Fatal(err)
		}
		if head.Kind == "ServiceMonitor" {
			if head.APIVersion != "monitoring.coreos.com/v1" {
				t.Errorf("ServiceMonitor %s: apiVersion %s", head.Metadata.Name, head.APIVersion)
			}
			monitors[head.Metadata.Name] = true
			continue
		}
		kept = append(kept, doc)
	}
	r := rendered{decodeStrict(t, strings.Join(kept, "\n---\n"))}
	for _, name := range []string{"webhook", "agent", "sts"} {
		if !monitors["podid-"+name] {
			t.Errorf("no ServiceMonitor podid-%s", name)
		}
		svc, ok := r.find("Service", "podid-"+name+"-metrics").(*corev1.Service)
		if !ok {
			t.Errorf("no metrics Service for %s", name)
			continue
		}
		var pod *corev1.PodSpec
		if name == "agent" {
			pod = &r.find("DaemonSet", "podid-agent").(*appsv1.DaemonSet).Spec.Template.Spec
		} else {
			pod = &r.find("Deployment", "podid-"+name).(*appsv1.Deployment).Spec.Template.Spec
		}
		target := svc.Spec.Ports[0].TargetPort.String()
		found := false
		for _, p := range pod.Containers[0].Ports {
			found = found || p.Name == target
		}
		if !found {
			t.Errorf("metrics Service of %s targets port %q, which its pods do not declare", name, target)
		}
	}
	if monitors["podid-controller"] {
		t.Error("ServiceMonitor for a disabled controller")
	}
}

// sts.persistence: a claim of the chart's, or the operator's, holds the state.
func TestSTSPersistence(t *testing.T) {
	cases := []struct {
		name      string
		args      []string
		wantPVC   bool
		wantClaim string
	}{
		{"emptyDir by default", nil, false, ""},
		{"chart's claim", []string{"--set", "sts.persistence.enabled=true", "--set", "sts.persistence.size=2Gi"}, true, "podid-sts-state"},
		{"existing claim", []string{"--set", "sts.persistence.enabled=true", "--set", "sts.persistence.existingClaim=mine"}, false, "mine"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, err := render(t, tc.args...)
			if err != nil {
				t.Fatal(err)
			}
			r := rendered{decodeStrict(t, out)}
			pvc, _ := r.find("PersistentVolumeClaim", "podid-sts-state").(*corev1.PersistentVolumeClaim)
			if (pvc != nil) != tc.wantPVC {
				t.Fatalf("PersistentVolumeClaim rendered = %v, want %v", pvc != nil, tc.wantPVC)
			}
			if pvc != nil && pvc.Spec.Resources.Requests.Storage().String() != "2Gi" {
				t.Errorf("claim size %s", pvc.Spec.Resources.Requests.Storage())
			}
			dep := r.find("Deployment", "podid-sts").(*appsv1.Deployment)
			for _, v := range dep.Spec.Template.Spec.Volumes {
				if v.Name != "state" {
					continue
				}
				switch {
				case tc.wantClaim == "" && v.EmptyDir == nil:
					t.Errorf("state volume %+v, want an emptyDir", v.VolumeSource)
				case tc.wantClaim != "" && (v.PersistentVolumeClaim == nil || v.PersistentVolumeClaim.ClaimName != tc.wantClaim):
					t.Errorf("state volume %+v, want claim %s", v.VolumeSource, tc.wantClaim)
				}
			}
		})
	}
}

// The agent reads its authority, tenant, pod CIDRs and CA at start: a change
// of any of them changes its pod template, so the DaemonSet rolls.
func TestAgentRollsOnSiteChange(t *testing.T) {
	base := []string{"--set", "sts.ca.create=false"}
	checksum := func(args ...string) string {
		t.Helper()
		out, err := render(t, append(append([]string{}, base...), args...)...)
		if err != nil {
			t.Fatal(err)
		}
		ds := rendered{decodeStrict(t, out)}.find("DaemonSet", "podid-agent").(*appsv1.DaemonSet)
		return ds.Spec.Template.Annotations["checksum/config"]
	}
	ref := checksum()
	if ref == "" || ref != checksum() {
		t.Fatalf("checksum %q is not stable across renders", ref)
	}
	for name, args := range map[string][]string{
		"CA":        {"--set", "agent.authorityCA=-----BEGIN CERTIFICATE-----"},
		"tenant":    {"--set", "tenantID=0b1f6471-1bf0-4dda-aec3-cb9272f09590"},
		"pod CIDR":  {"--set", "agent.podCIDRs={10.0.0.0/8}"},
		"authority": {"--set", "sts.service.clusterIP=10.96.0.200"},
	} {
		if checksum(args...) == ref {
			t.Errorf("a change of %s does not roll the agent", name)
		}
	}
}

// helmTest.enabled: the hook pod and the identity the sts trusts it with.
func TestHelmTestHook(t *testing.T) {
	const clientID = "11111111-2222-4333-8444-555555555555"
	out, err := render(t, "--set", "helmTest.enabled=true", "--set", "helmTest.clientID="+clientID)
	if err != nil {
		t.Fatal(err)
	}
	r := rendered{decodeStrict(t, out)}
	pod, ok := r.find("Pod", "podid-helm-test-token").(*corev1.Pod)
	if !ok {
		t.Fatal("no helm test pod")
	}
	if pod.Annotations["helm.sh/hook"] != "test" || pod.Spec.ServiceAccountName != "podid-helm-test" {
		t.Errorf("test pod: annotations %v, service account %q", pod.Annotations, pod.Spec.ServiceAccountName)
	}
	env := map[string]string{}
	for _, e := range pod.Spec.Containers[0].Env {
		env[e.Name] = e.Value
	}
	if env["AZURE_CLIENT_ID"] != clientID || env["AZURE_AUTHORITY_HOST"] != "https://podid-sts.podid-system.svc/" || env["AZURE_TENANT_ID"] != localTenant {
		t.Errorf("test pod env %v", env)
	}
	boot := r.find("Secret", "podid-sts-bootstrap").(*corev1.Secret).StringData["bootstrap.yaml"]
	var b struct {
		Tenants []struct {
			ID         string `json:"id"`
			Identities []struct {
				ClientID string `json:"clientId"`
				FICs     []struct {
					Subject string `json:"subject"`
				} `json:"federatedIdentityCredentials"`
			} `json:"identities"`
		} `json:"tenants"`
	}
	if err := yaml.Unmarshal([]byte(boot), &b); err != nil {
		t.Fatal(err)
	}
	if len(b.Tenants) != 1 || len(b.Tenants[0].Identities) != 1 || b.Tenants[0].Identities[0].ClientID != clientID ||
		len(b.Tenants[0].Identities[0].FICs) != 1 || b.Tenants[0].Identities[0].FICs[0].Subject != "system:serviceaccount:podid-system:podid-helm-test" {
		t.Errorf("bootstrap does not trust the test's ServiceAccount:\n%s", boot)
	}
}

// broker.enabled: the broker with its least-privilege RBAC (no Secrets), its
// serving certificate from the chart, and the agents pointed at it.
func TestBroker(t *testing.T) {
	const cid = "6e3c4f1a-7d2b-4c88-9a51-0d3e5f7a9b21"
	off, err := render(t)
	if err != nil {
		t.Fatal(err)
	}
	for k := range (rendered{decodeStrict(t, off)}).kinds() {
		if strings.HasSuffix(k, "/podid-broker") || strings.HasSuffix(k, "/podid-broker-ca") {
			t.Errorf("broker off by default, but %s is rendered", k)
		}
	}
	out, err := render(t, "-f", filepath.Join(chartDir(), "values-local.yaml"), "--set", "broker.enabled=true",
		"--set", "broker.clientIDs={"+cid+"}", "--set", "broker.service.clusterIP=10.96.0.101")
	if err != nil {
		t.Fatal(err)
	}
	r := rendered{decodeStrict(t, out)}
	for _, want := range []string{"Deployment/podid-broker", "Service/podid-broker", "ServiceAccount/podid-broker", "ClusterRole/podid-broker",
		"ClusterRoleBinding/podid-broker", "PodDisruptionBudget/podid-broker", "Secret/podid-broker-tls", "ConfigMap/podid-broker-ca"} {
		if r.kinds()[want] != 1 {
			t.Errorf("want exactly one %s, got %d", want, r.kinds()[want])
		}
	}
	dep := r.find("Deployment", "podid-broker").(*appsv1.Deployment)
	if *dep.Spec.Replicas < 2 {
		t.Errorf("broker replicas %d, want at least 2", *dep.Spec.Replicas)
	}
	var exchange bool
	for _, v := range dep.Spec.Template.Spec.Volumes {
		if p := v.Projected; p != nil && len(p.Sources) == 1 && p.Sources[0].ServiceAccountToken != nil {
			exchange = p.Sources[0].ServiceAccountToken.Audience == "api://AzureADTokenExchange"
		}
	}
	if !exchange {
		t.Error("the broker has no projected token for the exchange audience")
	}
	cr := r.find("ClusterRole", "podid-broker").(*rbacv1.ClusterRole)
	for _, rule := range cr.Rules {
		for _, res := range rule.Resources {
			if res == "secrets" || res == "serviceaccounts/token" || res == "*" {
				t.Errorf("broker ClusterRole grants %s %v", res, rule.Verbs)
			}
		}
		for _, v := range rule.Verbs {
			if v != "get" && v != "list" && v != "watch" && v != "create" {
				t.Errorf("broker ClusterRole grants verb %s on %v", v, rule.Resources)
			}
		}
	}
	ds := r.find("DaemonSet", "podid-agent").(*appsv1.DaemonSet)
	args := strings.Join(ds.Spec.Template.Spec.Containers[0].Args, " ")
	for _, want := range []string{"--broker-url=https://10.96.0.101:8443", "--broker-ca-file=/etc/podid/broker-ca/ca.pem", "--broker-client-id=" + cid,
		"--broker-agent-token-file=/var/run/secrets/podid/broker-agent/token"} {
		if !strings.Contains(args, want) {
			t.Errorf("agent args lack %s: %s", want, args)
		}
	}
	// The agent's own credential for the broker: projected for the
	// broker's agent audience only, mounted where the flag says.
	var agentToken, agentMount bool
	for _, v := range ds.Spec.Template.Spec.Volumes {
		if p := v.Projected; v.Name == "broker-agent-token" && p != nil && len(p.Sources) == 1 && p.Sources[0].ServiceAccountToken != nil {
			agentToken = p.Sources[0].ServiceAccountToken.Audience == "podid.dev/broker-agent" && p.Sources[0].ServiceAccountToken.Path == "token"
		}
	}
	for _, m := range ds.Spec.Template.Spec.Containers[0].VolumeMounts {
		agentMount = agentMount || m.Name == "broker-agent-token" && m.MountPath == "/var/run/secrets/podid/broker-agent" && m.ReadOnly
	}
	if !agentToken || !agentMount {
		t.Errorf("the agent has no projected token for audience podid.dev/broker-agent at /var/run/secrets/podid/broker-agent/token (volume %v, mount %v)", agentToken, agentMount)
	}
	cm := r.find("ConfigMap", "podid-broker-ca").(*corev1.ConfigMap)
	sec := r.find("Secret", "podid-broker-tls").(*corev1.Secret)
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(cm.Data["ca.pem"])) {
		t.Fatal("podid-broker-ca holds no certificate")
	}
	blk, _ := pem.Decode(sec.Data["tls.crt"])
	if blk == nil {
		t.Fatal("podid-broker-tls holds no certificate")
	}
	leaf, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"10.96.0.101", "podid-broker.podid-system.svc"} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: host}); err != nil {
			t.Errorf("broker certificate does not verify for %s against the agents' CA: %v", host, err)
		}
	}
}

// broker.secretIdentities: the broker alone reads Secrets (types 1/2); the
// agents get none.
func TestBrokerSecretIdentities(t *testing.T) {
	out, err := render(t, "--set", "broker.enabled=true", "--set", "broker.secretIdentities=true")
	if err != nil {
		t.Fatal(err)
	}
	r := rendered{decodeStrict(t, out)}
	if r.kinds()["ClusterRole/podid-broker-secrets"] != 1 || r.kinds()["ClusterRoleBinding/podid-broker-secrets"] != 1 {
		t.Errorf("broker.secretIdentities: no Secret reader for the broker: %v", r.kinds())
	}
	if r.kinds()["ClusterRole/podid-agent-secrets"] != 0 {
		t.Error("broker.secretIdentities: the agents may read Secrets too")
	}
	ds := r.find("DaemonSet", "podid-agent").(*appsv1.DaemonSet)
	if args := strings.Join(ds.Spec.Template.Spec.Containers[0].Args, " "); !strings.Contains(args, "--broker-secret-identities") || strings.Contains(args, "--serve-secret-identities") {
		t.Errorf("agent args: %s", args)
	}
	dep := r.find("Deployment", "podid-broker").(*appsv1.Deployment)
	if args := strings.Join(dep.Spec.Template.Spec.Containers[0].Args, " "); !strings.Contains(args, "--serve-secret-identities") {
		t.Errorf("broker args: %s", args)
	}
}

// values-local.yaml's local cloud: the name table the cluster DNS imports, the
// sts's certificate names and public URL, the webhook's public authority;
// wildcard names; a name for the sts without the sts fails.
func TestLocalCloud(t *testing.T) {
	local := filepath.Join(chartDir(), "values-local.yaml")
	out, err := render(t, "-f", local,
		"--set", "localCloud.names[2].name=*.vault.azure.net", "--set", "localCloud.names[2].service=podid-sts",
		"--set", "localCloud.names[3].name=*.queue.core.windows.net", "--set", "localCloud.names[3].service=azurite.podid-local",
		// --set on an element replaces the list: the file's two names again.
		"--set", "localCloud.names[0].name=login.microsoftonline.com", "--set", "localCloud.names[0].service=podid-sts",
		"--set", "localCloud.names[1].name=management.azure.com", "--set", "localCloud.names[1].service=podid-sts")
	if err != nil {
		t.Fatal(err)
	}
	r := rendered{decodeStrict(t, out)}
	cm, ok := r.find("ConfigMap", "local-cloud-dns").(*corev1.ConfigMap)
	if !ok || cm.Namespace != "kube-system" {
		t.Fatalf("no ConfigMap kube-system/local-cloud-dns for the cluster DNS")
	}
	want := []string{
		"rewrite stop name exact login.microsoftonline.com. podid-sts.podid-system.svc.cluster.local.",
		"rewrite stop name exact management.azure.com. podid-sts.podid-system.svc.cluster.local.",
		`rewrite stop name regex ^[a-z0-9-]+\.vault\.azure\.net\.$ podid-sts.podid-system.svc.cluster.local. answer auto`,
		`rewrite stop name regex ^[a-z0-9-]+\.queue\.core\.windows\.net\.$ azurite.podid-local.svc.cluster.local. answer auto`,
	}
	var got []string
	for _, l := range strings.Split(cm.Data["podid.conf"], "\n") {
		if strings.HasPrefix(l, "rewrite ") {
			got = append(got, l)
		}
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("podid.conf rules:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	args := r.find("Deployment", "podid-sts").(*appsv1.Deployment).Spec.Template.Spec.Containers[0].Args
	for _, a := range []string{"--host=login.microsoftonline.com", "--host=management.azure.com", "--host=*.vault.azure.net",
		"--host=10.96.0.100", "--public-url=https://login.microsoftonline.com"} {
		if !contains(args, a) {
			t.Errorf("sts args %v lack %s", args, a)
		}
	}
	if contains(args, "--host=*.queue.core.windows.net") {
		t.Errorf("the sts's certificate names Azurite's names")
	}
	if cm := r.find("ConfigMap", "podid-agent-config").(*corev1.ConfigMap); cm.Data["AUTHORITY"] != "https://10.96.0.100/" {
		t.Errorf("agent authority = %s, want the sts's Service address", cm.Data["AUTHORITY"])
	}

	// Without localCloud nothing of it is rendered.
	out, err = render(t)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := (rendered{decodeStrict(t, out)}).find("ConfigMap", "local-cloud-dns").(*corev1.ConfigMap); ok {
		t.Errorf("local-cloud-dns rendered without localCloud.enabled")
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"sts name without the sts", []string{"-f", local, "--set", "sts.enabled=false"}, "answered by podid-sts, but sts.enabled is false"},
		{"bad name", []string{"-f", local, "--set", "localCloud.names[0].name=Login..example"}, "does not match"},
	} {
		if _, err := render(t, tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.want)
		}
	}
}
