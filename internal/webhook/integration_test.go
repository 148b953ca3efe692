package webhook_test

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/podid/podid/internal/servingcert"
	"github.com/podid/podid/internal/testenv"
	"github.com/podid/podid/internal/webhook"
	"github.com/podid/podid/internal/webhook/webhooktest"
	"github.com/podid/podid/internal/workloadidentity"
)

var env *testenv.Env

const (
	certNS        = "podid-system"
	certSecret    = "podid-webhook-cert"
	webhookConfig = "podid-webhook"
	authority     = "https://sts.podid.test/"
	defaultTenant = "tenant-default"
)

// TestMain starts etcd + kube-apiserver (testenv) with the
// MutatingWebhookConfiguration shipped in deploy/webhook, pointed by envtest
// at a local port. Each test runs webhook.Run there, whose certificate
// manager takes over the caBundle.
func TestMain(m *testing.M) {
	mwc, err := testenv.ShippedMutatingWebhook("deploy/webhook/mutatingwebhookconfiguration.yaml")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	vwc, err := testenv.ShippedValidatingWebhook("deploy/webhook/validatingwebhookconfiguration.yaml")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(testenv.Main(m, &env, testenv.Options{WebhookInstall: envtest.WebhookInstallOptions{
		MutatingWebhooks:   []*admissionregistrationv1.MutatingWebhookConfiguration{mwc},
		ValidatingWebhooks: []*admissionregistrationv1.ValidatingWebhookConfiguration{vwc},
		LocalServingHost:   "127.0.0.1",
	}}))
}

// startWebhook runs webhook.Run on envtest's webhook port until the test
// ends and waits until the API server calls it for pods in ns.
func startWebhook(t *testing.T, ns string, policy webhook.MissingServiceAccountPolicy) {
	t.Helper()
	startWebhookWith(t, ns, func(c *webhook.Config) { c.MissingServiceAccount = policy })
}

func startWebhookWith(t *testing.T, ns string, mod func(*webhook.Config)) {
	t.Helper()
	e := env.Need(t)
	ensureNamespace(t, certNS)
	cfg := webhook.Config{
		HealthAddr:        "127.0.0.1:0",
		MetricsAddr:       "127.0.0.1:0",
		AuthorityHost:     authority,
		DefaultTenantID:   defaultTenant,
		Namespace:         certNS,
		SecretName:        certSecret,
		WebhookConfigName: webhookConfig,
		// As deployed: the same name for the token guard's configuration.
		ValidatingWebhookConfigName: webhookConfig,
		Logger:                      slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	mod(&cfg)
	webhooktest.Start(t, e, cfg)
	// Ready when a dry-run create of a selected pod comes back mutated:
	// the server listens, its certificate is in the caBundle, and the API
	// server's webhook configuration is current.
	createSA(t, ns, "probe", map[string]string{workloadidentity.ClientIDAnnotation: "probe"})
	probe := selectedPod("probe", "probe")
	probe.Namespace = ns
	eventually(t, 30*time.Second, func() error {
		p := probe.DeepCopy()
		if err := e.Client.Create(t.Context(), p, client.DryRunAll); err != nil {
			return err
		}
		if p.Annotations[webhook.InjectedAnnotation] == "" {
			return errors.New("dry-run pod not mutated yet")
		}
		return nil
	})
}

func ensureNamespace(t *testing.T, name string) {
	t.Helper()
	err := env.Client.Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}

func createSA(t *testing.T, ns, name string, anns map[string]string) {
	t.Helper()
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{
		Name: name, Namespace: ns, Annotations: anns,
		Labels: map[string]string{workloadidentity.UseLabel: "true"},
	}}
	if err := env.Client.Create(t.Context(), sa); err != nil {
		t.Fatal(err)
	}
}

// waitSA waits until the webhook's cache holds ns/name: a dry-run create of
// a pod using it is no longer answered "not found".
func waitSA(t *testing.T, ns, name string) {
	t.Helper()
	eventually(t, 10*time.Second, func() error {
		p := selectedPod("wait-sa", name)
		p.Namespace = ns
		err := env.Client.Create(t.Context(), p, client.DryRunAll)
		if err != nil && strings.Contains(err.Error(), "not found in namespace") {
			return err
		}
		return nil
	})
}

func selectedPod(name, sa string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{workloadidentity.UseLabel: "true"}},
		Spec: corev1.PodSpec{
			ServiceAccountName: sa,
			Containers:         []corev1.Container{{Name: "app", Image: "registry.local/app:1"}},
		},
	}
}

// eventually polls f until it succeeds or the deadline passes.
func eventually(t *testing.T, d time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %v", d, err)
		}
		select {
		case <-t.Context().Done():
			t.Fatal(t.Context().Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// createPod creates pod in ns. A denial for a just-created ServiceAccount
// that has not reached the webhook's cache yet is retried for a few
// seconds; any other error is returned.
func createPod(t *testing.T, ns string, pod *corev1.Pod) error {
	t.Helper()
	pod.Namespace = ns
	var err error
	deadline := time.Now().Add(10 * time.Second)
	for {
		p := pod.DeepCopy()
		if err = env.Client.Create(t.Context(), p); err == nil {
			*pod = *p
			return nil
		}
		if !strings.Contains(err.Error(), "not found in namespace") || time.Now().After(deadline) {
			return err
		}
		select {
		case <-t.Context().Done():
			return err
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func getPod(t *testing.T, ns, name string) *corev1.Pod {
	t.Helper()
	var p corev1.Pod
	if err := env.Client.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: name}, &p); err != nil {
		t.Fatal(err)
	}
	return &p
}

func env1(c corev1.Container) map[string]string {
	m := map[string]string{}
	for _, e := range c.Env {
		if _, dup := m[e.Name]; dup {
			m["DUPLICATE:"+e.Name] = e.Value
		}
		m[e.Name] = e.Value
	}
	return m
}

func assertInjected(t *testing.T, c corev1.Container, clientID, tenant string) {
	t.Helper()
	want := map[string]string{
		workloadidentity.EnvFederatedTokenFile: workloadidentity.TokenFile,
		workloadidentity.EnvAuthorityHost:      authority,
		workloadidentity.EnvTenantID:           tenant,
		workloadidentity.EnvClientID:           clientID,
	}
	got := env1(c)
	for k, v := range want {
		if got[k] != v {
			t.Errorf("container %s: %s = %q, want %q (env %v)", c.Name, k, got[k], v, got)
		}
	}
	for k := range got {
		if strings.HasPrefix(k, "DUPLICATE:") {
			t.Errorf("container %s: duplicate env %s", c.Name, k)
		}
	}
	n := 0
	for _, m := range c.VolumeMounts {
		if m.Name == workloadidentity.TokenVolumeName && m.MountPath == workloadidentity.TokenDir && m.ReadOnly {
			n++
		}
	}
	if n != 1 {
		t.Errorf("container %s: %d token mounts in %+v", c.Name, n, c.VolumeMounts)
	}
}

func assertNotInjected(t *testing.T, c corev1.Container) {
	t.Helper()
	for _, e := range c.Env {
		if strings.HasPrefix(e.Name, "AZURE_") {
			t.Errorf("container %s got %s", c.Name, e.Name)
		}
	}
	for _, m := range c.VolumeMounts {
		if m.Name == workloadidentity.TokenVolumeName {
			t.Errorf("container %s got the token mount", c.Name)
		}
	}
}

func tokenExpiration(t *testing.T, p *corev1.Pod) int64 {
	t.Helper()
	for _, v := range p.Spec.Volumes {
		if v.Name == workloadidentity.TokenVolumeName && v.Projected != nil && len(v.Projected.Sources) == 1 {
			s := v.Projected.Sources[0].ServiceAccountToken
			if s == nil || s.Audience != workloadidentity.TokenAudience || s.Path != workloadidentity.TokenFileName || s.ExpirationSeconds == nil {
				t.Fatalf("token volume = %+v", v)
			}
			return *s.ExpirationSeconds
		}
	}
	t.Fatalf("no token volume in %+v", p.Spec.Volumes)
	return 0
}

func TestIntegrationBarePod(t *testing.T) {
	e := env.Need(t)
	ns := e.Namespace(t)
	startWebhook(t, ns, webhook.MissingServiceAccountDeny)
	createSA(t, ns, "wi", map[string]string{workloadidentity.ClientIDAnnotation: "client-1", workloadidentity.TenantIDAnnotation: "tenant-1"})

	pod := selectedPod("bare", "wi")
	if err := createPod(t, ns, pod); err != nil {
		t.Fatal(err)
	}
	got := getPod(t, ns, "bare")
	assertInjected(t, got.Spec.Containers[0], "client-1", "tenant-1")
	if exp := tokenExpiration(t, got); exp != 3600 {
		t.Errorf("expiration = %d", exp)
	}
	if _, ok := got.Annotations[webhook.IMDSAnnotation]; ok {
		t.Error("IMDS annotation without inject-proxy-sidecar")
	}

	// Re-submitting the stored pod (the webhook's own output) changes nothing.
	again := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "again", Labels: got.Labels, Annotations: got.Annotations}, Spec: *got.Spec.DeepCopy()}
	again.Spec.NodeName = ""
	if err := createPod(t, ns, again); err != nil {
		t.Fatal(err)
	}
	got2 := getPod(t, ns, "again")
	if a, b := mustJSON(t, got.Spec), mustJSON(t, got2.Spec); a != b {
		t.Errorf("resubmitted pod changed:\n%s\n%s", a, b)
	}
	if got2.Annotations[webhook.InjectedAnnotation] != got.Annotations[webhook.InjectedAnnotation] {
		t.Error("record annotation changed on resubmission")
	}

	// Unselected pods are untouched.
	plain := selectedPod("plain", "wi")
	plain.Labels = nil
	if err := createPod(t, ns, plain); err != nil {
		t.Fatal(err)
	}
	assertNotInjected(t, getPod(t, ns, "plain").Spec.Containers[0])
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// A Deployment as in the workload-identity quick guide (serviceAccount:,
// the deprecated field); its ReplicaSet's pods use generateName. envtest
// runs no controller-manager, so the test creates the pod the ReplicaSet
// controller would, from the stored template.
func TestIntegrationDeploymentGenerateName(t *testing.T) {
	e := env.Need(t)
	ns := e.Namespace(t)
	startWebhook(t, ns, webhook.MissingServiceAccountDeny)
	createSA(t, ns, "workload-identity-sa", map[string]string{workloadidentity.ClientIDAnnotation: "client-dep"})

	labels := map[string]string{"app": "web", workloadidentity.UseLabel: "true"}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					DeprecatedServiceAccount: "workload-identity-sa",
					Containers:               []corev1.Container{{Name: "web", Image: "nginx"}},
				},
			},
		},
	}
	if err := e.Client.Create(t.Context(), dep); err != nil {
		t.Fatal(err)
	}
	if len(dep.Spec.Template.Spec.Containers[0].Env) != 0 {
		t.Fatal("Deployment template was mutated")
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{GenerateName: "web-5d8f9c7b6-", Labels: dep.Spec.Template.Labels}, Spec: dep.Spec.Template.Spec}
	if err := createPod(t, ns, pod); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(pod.Name, "web-5d8f9c7b6-") {
		t.Fatalf("name = %q", pod.Name)
	}
	got := getPod(t, ns, pod.Name)
	assertInjected(t, got.Spec.Containers[0], "client-dep", defaultTenant)
	if got.Spec.ServiceAccountName != "workload-identity-sa" {
		t.Errorf("serviceAccountName = %q", got.Spec.ServiceAccountName)
	}
}

func TestIntegrationInitContainersSkipUserEnvProxy(t *testing.T) {
	e := env.Need(t)
	ns := e.Namespace(t)
	startWebhook(t, ns, webhook.MissingServiceAccountDeny)
	createSA(t, ns, "wi", map[string]string{workloadidentity.ClientIDAnnotation: "client-2", workloadidentity.TokenExpirationAnnotation: "86400"})

	pod := selectedPod("multi", "wi")
	pod.Annotations = map[string]string{
		workloadidentity.SkipContainersAnnotation:     "istio-proxy; init-skip",
		workloadidentity.TokenExpirationAnnotation:    "7200",
		workloadidentity.InjectProxySidecarAnnotation: "true",
	}
	pod.Spec.InitContainers = []corev1.Container{{Name: "init", Image: "x"}, {Name: "init-skip", Image: "x"}}
	pod.Spec.Containers = []corev1.Container{
		{Name: "app", Image: "x", Env: []corev1.EnvVar{{Name: workloadidentity.EnvClientID, Value: "users-own"}, {Name: "OTHER", Value: "1"}}},
		{Name: "istio-proxy", Image: "x"},
	}
	if err := createPod(t, ns, pod); err != nil {
		t.Fatal(err)
	}
	got := getPod(t, ns, "multi")
	assertInjected(t, got.Spec.InitContainers[0], "client-2", defaultTenant)
	assertNotInjected(t, got.Spec.InitContainers[1])
	assertNotInjected(t, got.Spec.Containers[1])
	assertInjected(t, got.Spec.Containers[0], "users-own", defaultTenant)
	if env1(got.Spec.Containers[0])["OTHER"] != "1" || got.Spec.Containers[0].Env[0].Name != workloadidentity.EnvClientID {
		t.Errorf("user env reordered or lost: %+v", got.Spec.Containers[0].Env)
	}
	if exp := tokenExpiration(t, got); exp != 7200 {
		t.Errorf("expiration = %d, want the pod's 7200", exp)
	}
	if got.Annotations[webhook.IMDSAnnotation] != "true" || len(got.Spec.Containers) != 2 || len(got.Spec.InitContainers) != 2 {
		t.Errorf("proxy handling: annotations %v, %d containers", got.Annotations, len(got.Spec.Containers))
	}
}

func TestIntegrationDenials(t *testing.T) {
	e := env.Need(t)
	ns := e.Namespace(t)
	startWebhook(t, ns, webhook.MissingServiceAccountDeny)
	createSA(t, ns, "wi", nil)
	createSA(t, ns, "bad-exp", map[string]string{workloadidentity.TokenExpirationAnnotation: "forever"})
	waitSA(t, ns, "wi")
	waitSA(t, ns, "bad-exp")

	for _, tt := range []struct {
		name string
		mod  func(p *corev1.Pod)
		want string
	}{
		{"pod expiration too short", func(p *corev1.Pod) {
			p.Annotations = map[string]string{workloadidentity.TokenExpirationAnnotation: "600"}
		}, "must be an integer number of seconds in [3600, 86400]"},
		{"pod expiration too long", func(p *corev1.Pod) {
			p.Annotations = map[string]string{workloadidentity.TokenExpirationAnnotation: "86401"}
		}, "[3600, 86400]"},
		{"SA expiration not a number", func(p *corev1.Pod) { p.Spec.ServiceAccountName = "bad-exp" },
			`ServiceAccount ` + ns + `/bad-exp annotation azure.workload.identity/service-account-token-expiration="forever"`},
		{"proxy flag not boolean", func(p *corev1.Pod) {
			p.Annotations = map[string]string{workloadidentity.InjectProxySidecarAnnotation: "True"}
		}, `must be "true" or "false"`},
		{"missing SA", func(p *corev1.Pod) { p.Spec.ServiceAccountName = "nope" },
			`ServiceAccount "nope" not found in namespace "` + ns + `"`},
		{"missing default SA (empty name)", func(p *corev1.Pod) { p.Spec.ServiceAccountName = "" },
			`ServiceAccount "default" not found`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := selectedPod("denied", "wi")
			tt.mod(p)
			p.Namespace = ns
			err := e.Client.Create(t.Context(), p)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want denial containing %q", err, tt.want)
			}
			if !strings.Contains(err.Error(), "admission webhook") {
				t.Errorf("err = %v, want it from the admission webhook", err)
			}
		})
	}
}

func TestIntegrationMissingSAAllowPolicy(t *testing.T) {
	e := env.Need(t)
	ns := e.Namespace(t)
	startWebhook(t, ns, webhook.MissingServiceAccountAllow)
	p := selectedPod("orphan", "nope")
	p.Namespace = ns
	if err := e.Client.Create(t.Context(), p); err != nil {
		t.Fatal(err)
	}
	got := getPod(t, ns, "orphan")
	assertNotInjected(t, got.Spec.Containers[0])
	if len(got.Spec.Volumes) != 0 || got.Annotations[webhook.InjectedAnnotation] != "" {
		t.Errorf("pod was mutated: %+v", got)
	}
}

// switchSA is a second mutating webhook that moves pods labelled
// podid.test/switch-to=<sa> to that ServiceAccount, after podid's webhook
// (configurations are called in name order).
func switchSA(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 3<<20))
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &review); err != nil || review.Request == nil {
		http.Error(w, "bad review", http.StatusBadRequest)
		return
	}
	resp := &admissionv1.AdmissionResponse{UID: review.Request.UID, Allowed: true}
	var pod corev1.Pod
	if err := json.Unmarshal(review.Request.Object.Raw, &pod); err == nil {
		if to := pod.Labels["podid.test/switch-to"]; to != "" && pod.Spec.ServiceAccountName != to {
			// Record what podid's first pass had already injected, to
			// prove the order: podid, switcher, podid again.
			patch, _ := json.Marshal([]map[string]any{
				{"op": "replace", "path": "/spec/serviceAccountName", "value": to},
				{"op": "replace", "path": "/spec/serviceAccount", "value": to},
				{"op": "add", "path": "/metadata/labels/podid.test~1first-pass-client", "value": envValue(pod.Spec.Containers[0], workloadidentity.EnvClientID)},
			})
			pt := admissionv1.PatchTypeJSONPatch
			resp.Patch, resp.PatchType = patch, &pt
		}
	}
	review.Response, review.Request = resp, nil
	_ = json.NewEncoder(w).Encode(&review)
}

func envValue(c corev1.Container, name string) string {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	return "none"
}

func TestIntegrationReinvocation(t *testing.T) {
	e := env.Need(t)
	ns := e.Namespace(t)
	startWebhook(t, ns, webhook.MissingServiceAccountDeny)
	createSA(t, ns, "first", map[string]string{workloadidentity.ClientIDAnnotation: "client-first", workloadidentity.TenantIDAnnotation: "tenant-first"})
	createSA(t, ns, "second", map[string]string{workloadidentity.ClientIDAnnotation: "client-second", workloadidentity.TokenExpirationAnnotation: "5400"})

	ts := httptest.NewTLSServer(http.HandlerFunc(switchSA))
	t.Cleanup(ts.Close)
	caPEM := pemCert(ts.Certificate().Raw)
	url := ts.URL + "/switch"
	sw := &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "zz-test-switch-sa"},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name:                    "switch-sa.podid.test",
			AdmissionReviewVersions: []string{"v1"},
			ClientConfig:            admissionregistrationv1.WebhookClientConfig{URL: &url, CABundle: caPEM},
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
				Rule:       admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}},
			}},
			NamespaceSelector:  &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": ns}},
			ObjectSelector:     &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "podid.test/switch-to", Operator: metav1.LabelSelectorOpExists}}},
			SideEffects:        ptr.To(admissionregistrationv1.SideEffectClassNone),
			FailurePolicy:      ptr.To(admissionregistrationv1.Fail),
			ReinvocationPolicy: ptr.To(admissionregistrationv1.NeverReinvocationPolicy),
			TimeoutSeconds:     ptr.To[int32](5),
		}},
	}
	if err := e.Client.Create(t.Context(), sw); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Client.Delete(context.Background(), sw) })

	pod := selectedPod("switched", "first")
	pod.Labels["podid.test/switch-to"] = "second"
	pod.Spec.Containers = append(pod.Spec.Containers, corev1.Container{
		Name: "own-tenant", Image: "x", Env: []corev1.EnvVar{{Name: workloadidentity.EnvTenantID, Value: "users-tenant"}},
	})
	// Poll until the switcher's configuration is active in the API server.
	eventually(t, 30*time.Second, func() error {
		p := pod.DeepCopy()
		p.Namespace = ns
		if err := e.Client.Create(t.Context(), p, client.DryRunAll); err != nil {
			return err
		}
		if p.Spec.ServiceAccountName != "second" {
			return errors.New("switcher webhook not active yet")
		}
		return nil
	})
	if err := createPod(t, ns, pod); err != nil {
		t.Fatal(err)
	}
	got := getPod(t, ns, "switched")
	if got.Spec.ServiceAccountName != "second" {
		t.Fatalf("serviceAccountName = %q", got.Spec.ServiceAccountName)
	}
	if seen := got.Labels["podid.test/first-pass-client"]; seen != "client-first" {
		t.Fatalf("switcher saw AZURE_CLIENT_ID %q; want client-first (podid's first pass before the switch)", seen)
	}
	// The first pass injected "first"'s values; the reinvocation moved
	// exactly those to "second" and left the user's own tenant alone.
	app, own := env1(got.Spec.Containers[0]), env1(got.Spec.Containers[1])
	if app[workloadidentity.EnvClientID] != "client-second" || own[workloadidentity.EnvClientID] != "client-second" {
		t.Errorf("client ids %q, %q; want client-second", app[workloadidentity.EnvClientID], own[workloadidentity.EnvClientID])
	}
	if app[workloadidentity.EnvTenantID] != defaultTenant {
		t.Errorf("app tenant = %q, want the default (second SA has none)", app[workloadidentity.EnvTenantID])
	}
	if own[workloadidentity.EnvTenantID] != "users-tenant" {
		t.Errorf("user's tenant changed to %q", own[workloadidentity.EnvTenantID])
	}
	assertInjected(t, got.Spec.Containers[0], "client-second", defaultTenant)
	if exp := tokenExpiration(t, got); exp != 5400 {
		t.Errorf("expiration = %d, want second SA's 5400", exp)
	}
}

// The certificate manager wrote its Secret and the shipped configuration
// trusts it: the bootstrap a fresh deployment goes through.
func TestIntegrationCertificateBootstrap(t *testing.T) {
	e := env.Need(t)
	ns := e.Namespace(t)
	startWebhook(t, ns, webhook.MissingServiceAccountDeny)
	var s corev1.Secret
	if err := e.Client.Get(t.Context(), client.ObjectKey{Namespace: certNS, Name: certSecret}, &s); err != nil {
		t.Fatal(err)
	}
	var mwc admissionregistrationv1.MutatingWebhookConfiguration
	if err := e.Client.Get(t.Context(), client.ObjectKey{Name: webhookConfig}, &mwc); err != nil {
		t.Fatal(err)
	}
	for _, w := range mwc.Webhooks {
		if string(w.ClientConfig.CABundle) != string(s.Data[servingcert.KeyCABundle]) {
			t.Errorf("webhook %s caBundle differs from the Secret's CA bundle", w.Name)
		}
		if w.ReinvocationPolicy == nil || *w.ReinvocationPolicy != admissionregistrationv1.IfNeededReinvocationPolicy ||
			*w.SideEffects != admissionregistrationv1.SideEffectClassNone || *w.FailurePolicy != admissionregistrationv1.Fail {
			t.Errorf("webhook %s registration = %+v", w.Name, w)
		}
	}
}

func pemCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// applyManifest creates every object in a manifest file (path relative to
// the repository root), replacing objects that exist, as kubectl would for
// a fresh install.
func applyManifest(t *testing.T, file string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), file))
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range strings.Split(string(b), "\n---") {
		if strings.TrimSpace(doc) == "" {
			continue
		}
		obj, _, err := clientgoscheme.Codecs.UniversalDeserializer().Decode([]byte(doc), nil, nil)
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		co := obj.(client.Object)
		if err := env.Client.Delete(t.Context(), co.DeepCopyObject().(client.Object)); err != nil && !apierrors.IsNotFound(err) {
			t.Fatal(err)
		}
		eventually(t, 30*time.Second, func() error {
			err := env.Client.Create(t.Context(), co.DeepCopyObject().(client.Object))
			if apierrors.IsAlreadyExists(err) {
				return err // still terminating
			}
			if err != nil {
				t.Fatalf("create %s from %s: %v", co.GetName(), file, err)
			}
			return nil
		})
	}
}

// The shipped RBAC is enough, from the shipped empty Secret: the webhook
// runs as its ServiceAccount (impersonated), fills the Secret without
// "create", patches the caBundle, watches ServiceAccounts and mutates pods.
func TestIntegrationLeastPrivilegeRBAC(t *testing.T) {
	e := env.Need(t)
	ns := e.Namespace(t)
	ensureNamespace(t, certNS)
	applyManifest(t, "deploy/webhook/rbac.yaml")
	applyManifest(t, "deploy/webhook/secret.yaml") // empty again: forces a fresh bootstrap
	startWebhookWith(t, ns, asWebhookServiceAccount(e))
	createSA(t, ns, "wi", map[string]string{workloadidentity.ClientIDAnnotation: "client-rbac"})
	pod := selectedPod("rbac", "wi")
	if err := createPod(t, ns, pod); err != nil {
		t.Fatal(err)
	}
	assertInjected(t, getPod(t, ns, "rbac").Spec.Containers[0], "client-rbac", defaultTenant)
	var s corev1.Secret
	if err := e.Client.Get(t.Context(), client.ObjectKey{Namespace: certNS, Name: certSecret}, &s); err != nil {
		t.Fatal(err)
	}
	if len(s.Data[servingcert.KeyCert]) == 0 {
		t.Error("shipped Secret not filled")
	}
}

// The mutating webhook's own role reads no pods: pod reads belong to the
// token guard's role (rbac-tokenguard.yaml). A stolen webhook credential
// without that binding cannot read pods.
func TestIntegrationWebhookRoleReadsNoPods(t *testing.T) {
	e := env.Need(t)
	ns := e.Namespace(t)
	ensureNamespace(t, certNS)
	applyManifest(t, "deploy/webhook/rbac.yaml")
	guard := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "podid-token-guard"}}
	if err := e.Client.Delete(t.Context(), guard); err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	target := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "victim", Namespace: ns},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "x"}}}}
	if err := e.Client.Create(t.Context(), target); err != nil {
		t.Fatal(err)
	}
	cfg := webhook.Config{}
	asWebhookServiceAccount(e)(&cfg)
	cs, err := kubernetes.NewForConfig(cfg.Kube)
	if err != nil {
		t.Fatal(err)
	}
	_, err = cs.CoreV1().Pods(ns).Get(t.Context(), "victim", metav1.GetOptions{})
	if !apierrors.IsForbidden(err) {
		t.Fatalf("webhook ServiceAccount without the token guard's role: GET pod = %v, want Forbidden", err)
	}
	// With the guard's role the same credential may: the denial above was
	// the role's doing, not the impersonation's.
	applyManifest(t, "deploy/webhook/rbac-tokenguard.yaml")
	eventually(t, 10*time.Second, func() error {
		_, err := cs.CoreV1().Pods(ns).Get(t.Context(), "victim", metav1.GetOptions{})
		return err
	})
}

// asWebhookServiceAccount makes webhook.Run act as the shipped
// ServiceAccount (impersonated), so only the shipped RBAC applies.
func asWebhookServiceAccount(e *testenv.Env) func(*webhook.Config) {
	return func(c *webhook.Config) {
		kube := rest.CopyConfig(e.Config)
		kube.Impersonate = rest.ImpersonationConfig{
			UserName: "system:serviceaccount:" + certNS + ":podid-webhook",
			Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:" + certNS, "system:authenticated"},
		}
		c.Kube = kube
	}
}
