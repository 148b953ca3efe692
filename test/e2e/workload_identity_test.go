package e2e

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/podid/podid/internal/sts"
	"github.com/podid/podid/internal/sts/jwks"
	"github.com/podid/podid/internal/sts/tokenverify"
	"github.com/podid/podid/test/e2e/framework"
)

// The sts as deploy/sts ships it.
const (
	stsNamespace  = "podid-system"
	stsDeployment = "podid-sts"
	stsServiceIP  = "10.96.0.100" // deploy/sts/service.yaml clusterIP
	stsAuthority  = "https://" + stsServiceIP + "/"
	// The authority workloads get with the local cloud (values-local.yaml):
	// Entra's public name, which the cluster DNS answers with the sts.
	publicAuthority = "https://login.microsoftonline.com/"
	stsPodPort      = "8443"
	wiTenantID      = "72f988bf-86f1-41af-91ab-2d7cd011db47" // deploy/sts/bootstrap.yaml
	// The subscription the tests' identities live in (the tenant owns it).
	wiSubscription = "0b1f6471-1bf0-4dda-aec3-cb9272f09590"
	wiResource     = "https://storage.azure.com"
	wiClientImage  = "localhost/podid-wiclient:dev"
	// wiNoWebhookEnv makes the test put into the pod exactly what podid
	// webhook would inject, instead of deploying deploy/webhook.
	wiNoWebhookEnv = "PODID_E2E_WI_NO_WEBHOOK"
)

// TestWorkloadIdentity proves the workload-identity (v2) flow on the real
// node: podid sts (deploy/sts) and podid webhook (deploy/webhook, authority
// host = the sts) run in the cluster; seed 003's ServiceAccount and
// Deployment, whose container runs the unmodified
// azidentity.WorkloadIdentityCredential (test/e2e/images/wiclient), get the
// webhook's env and projected token; the kubelet projects a token the API
// server signs; the sts fetches the issuer's discovery and JWKS, accepts the
// token and issues an access token, which verifies against the sts's JWKS.
//
// Steps: 00 deploy the sts, 01 deploy the webhook, 02 apply the workload,
// 03 check the pod and its token, teardown by t.Cleanup.
func TestWorkloadIdentity(t *testing.T) {
	c := framework.Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	ns := c.Namespace(t)

	workloads := []wiWorkload{
		// Seed 003's quick guide: the identity trusts this ServiceAccount.
		{name: "seed-003", sa: "sademo", app: "azcli", fic: true},
		// The identity has no federated credential: Entra's AADSTS70021,
		// surfaced by azidentity inside the pod.
		{name: "no-federated-credential", sa: "sa-nofic", app: "nofic", wantErr: "AADSTS70021"},
	}
	for i := range workloads {
		workloads[i].clientID = newUUID(t)
		workloads[i].subject = "system:serviceaccount:" + ns + ":" + workloads[i].sa
	}

	// 00: the sts, trusting the cluster's issuer, with the identities.
	ensureNamespace(ctx, t, c, stsNamespace)
	stsPodIP := deploySTS(ctx, t, c, workloads)
	stsTransport, caPEM := stsClientTransport(ctx, t, stsPodIP)

	// 01: the webhook, pointed at the sts.
	useWebhook := os.Getenv(wiNoWebhookEnv) != "1"
	if useWebhook {
		deployWebhook(ctx, t, c)
	} else {
		t.Logf("!!! %s=1: podid webhook NOT deployed; the pod spec carries exactly what it would inject", wiNoWebhookEnv)
	}

	// 02: the sts CA for the workloads (their system trust store's file).
	c.Apply(ctx, t, ns, mustYAML(t, &corev1.ConfigMap{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: metav1.ObjectMeta{Name: "podid-sts-ca"},
		Data:       map[string]string{"ca.crt": string(caPEM)},
	}))

	for _, w := range workloads {
		t.Run(w.name, func(t *testing.T) {
			// 02: seed 003's ServiceAccount and Deployment.
			c.Apply(ctx, t, ns, mustYAML(t, &corev1.ServiceAccount{
				TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "ServiceAccount"},
				ObjectMeta: metav1.ObjectMeta{
					Name:        w.sa,
					Annotations: map[string]string{"azure.workload.identity/client-id": w.clientID},
					Labels:      map[string]string{"azure.workload.identity/use": "true"},
				},
			}))
			dep, clientCmd := seed003Deployment(ctx, t, c, w.app, w.sa)
			if !useWebhook {
				injectLikeWebhook(&dep.Spec.Template.Spec, w.clientID)
			}
			c.Apply(ctx, t, ns, mustYAML(t, dep))

			// 03: the pod got the webhook's env and a token the kubelet
			// projected, and (or not) an access token from the sts.
			pod := waitForPodOf(ctx, t, c, ns, "app="+w.app)
			assertWebhookInjected(t, pod, w.clientID)
			projected, _, err := c.Exec(ctx, ns, pod.Name, "", append(clientCmd, "cat", framework.AzureTokenFile)...)
			if err != nil {
				t.Fatalf("read projected token: %v", err)
			}
			k8sClaims, err := c.VerifyToken(ctx, strings.TrimSpace(projected))
			if err != nil {
				t.Fatalf("projected token does not verify against the cluster issuer: %v", err)
			}
			if k8sClaims.Issuer != c.Issuer || k8sClaims.Subject != w.subject || !k8sClaims.Audience.Contains(framework.TokenExchangeAudience) ||
				k8sClaims.Kubernetes.Pod == nil || k8sClaims.Kubernetes.Pod.Name != pod.Name {
				t.Fatalf("projected token claims = %+v, want iss %s, sub %s, aud %s, bound to pod %s", k8sClaims, c.Issuer, w.subject, framework.TokenExchangeAudience, pod.Name)
			}

			if w.wantErr != "" {
				logs := waitForLog(ctx, t, c, ns, pod.Name, w.wantErr)
				if strings.Contains(logs, "wiclient: token acquired") {
					t.Fatalf("pod got a token although its identity has no federated credential")
				}
				t.Logf("pod logged %s: azidentity surfaced the sts's rejection", w.wantErr)
				return
			}
			logs := waitForLog(ctx, t, c, ns, pod.Name, "wiclient: token acquired")
			t.Logf("%s", lastLine(logs))
			access, _, err := c.Exec(ctx, ns, pod.Name, "", append(clientCmd, "cat", "/tmp/access-token")...)
			if err != nil {
				t.Fatalf("read access token: %v", err)
			}
			verifyAccessToken(ctx, t, stsTransport, strings.TrimSpace(access), w.clientID)
		})
	}
}

// wiWorkload is one ServiceAccount + Deployment of the test.
type wiWorkload struct {
	name, sa, app     string
	fic               bool   // the identity has a federated credential for the SA
	wantErr           string // AADSTS code the pod must log; "" = success
	clientID, subject string
}

// ensureNamespace creates a namespace that other components share; it is
// never deleted by this test.
func ensureNamespace(ctx context.Context, t *testing.T, c *framework.Cluster, name string) {
	t.Helper()
	err := c.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app.kubernetes.io/part-of": "podid"}}})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("create namespace %s: %v", name, err)
	}
}

// deploySTS applies deploy/sts (but its namespace) with the cluster's
// issuer in the ConfigMap and a bootstrap holding the test's identity, waits
// for the sts to be ready and returns its pod IP. extra edits the tenant
// (e.g. adds an admin application).
func deploySTS(ctx context.Context, t *testing.T, c *framework.Cluster, workloads []wiWorkload, extra ...func(*sts.BootstrapTenant)) string {
	t.Helper()
	tenant := sts.BootstrapTenant{ID: wiTenantID, Domains: []string{"podid.local"}}
	for _, w := range workloads {
		id := sts.BootstrapIdentity{
			Subscription: wiSubscription, ResourceGroup: "e2e", Name: w.sa, Location: "local",
			ClientID: w.clientID,
		}
		if w.fic {
			id.FederatedCreds = []sts.BootstrapFederatedIdentity{{
				Name: "k8s-" + w.sa, Issuer: c.Issuer, Subject: w.subject, Audiences: []string{framework.TokenExchangeAudience},
			}}
		}
		tenant.Identities = append(tenant.Identities, id)
	}
	for _, f := range extra {
		f(&tenant)
	}
	boot := sts.Bootstrap{Tenants: []sts.BootstrapTenant{tenant}}
	bootYAML, err := yaml.Marshal(boot)
	if err != nil {
		t.Fatal(err)
	}
	// local-cloud-dns.yaml: the cluster DNS answers Azure's public names with
	// this sts (docs/local-cloud.md), as the SDKs' default options need.
	for _, f := range []string{"config.yaml", "bootstrap.yaml", "service.yaml", "local-cloud-dns.yaml", "deployment.yaml"} {
		objs := readManifest(t, filepath.Join("deploy", "sts", f))
		for _, o := range objs {
			switch o.GetKind() {
			case "ConfigMap":
				must(t, unstructured.SetNestedField(o.Object, c.Issuer, "data", "saIssuer"))
			case "Secret":
				must(t, unstructured.SetNestedField(o.Object, string(bootYAML), "stringData", "bootstrap.yaml"))
			case "Deployment":
				// The bootstrap is read at start: roll the pod when it changes
				// (e.g. a Deployment left over by an interrupted run).
				sum := sha256.Sum256(append([]byte(c.Issuer+"\n"), bootYAML...))
				must(t, unstructured.SetNestedField(o.Object, hex.EncodeToString(sum[:8]), "spec", "template", "metadata", "annotations", "podid.dev/e2e-bootstrap"))
			}
		}
		applyObjects(ctx, t, c, objs)
	}
	if err := waitDeploymentAvailable(ctx, c, stsNamespace, stsDeployment); err != nil {
		t.Fatal(err)
	}
	pod := waitForPodOf(ctx, t, c, stsNamespace, "app.kubernetes.io/name=podid-sts")
	if pod.Status.PodIP == "" {
		t.Fatalf("sts pod %s has no IP", pod.Name)
	}
	return pod.Status.PodIP
}

// stsClientTransport returns a transport that reaches the sts service
// address through the sts pod's IP (the host is on the pods' bridge), and the
// sts CA. The CA is taken from the TLS chain the sts serves — trust on first
// use, acceptable here because the test reaches the pod over the node's own
// bridge; a production rollout distributes the CA out of band (deploy/sts).
func stsClientTransport(ctx context.Context, t *testing.T, podIP string) (*http.Transport, []byte) {
	t.Helper()
	addr := net.JoinHostPort(podIP, stsPodPort)
	d := &tls.Dialer{Config: &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}} // TOFU, verified below
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		t.Fatalf("dial sts %s: %v", addr, err)
	}
	chain := conn.(*tls.Conn).ConnectionState().PeerCertificates
	conn.Close()
	if len(chain) < 2 {
		t.Fatalf("sts serves %d certificates, want leaf + CA", len(chain))
	}
	ca := chain[len(chain)-1]
	if !ca.IsCA || ca.CheckSignatureFrom(ca) != nil {
		t.Fatalf("last certificate of the sts chain (%s) is not a self-signed CA", ca.Subject)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	if _, err := chain[0].Verify(x509.VerifyOptions{Roots: pool, DNSName: stsServiceIP}); err != nil {
		t.Fatalf("sts certificate is not valid for %s under its CA: %v", stsServiceIP, err)
	}
	dialer := &net.Dialer{Timeout: 10 * time.Second}
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		DialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
			if a == net.JoinHostPort(stsServiceIP, "443") {
				a = addr
			}
			return dialer.DialContext(ctx, network, a)
		},
	}
	t.Cleanup(tr.CloseIdleConnections)
	return tr, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw})
}

// deployWebhook applies deploy/webhook (its kustomization's resources: the
// mutating webhook and the agent token guard) with the local image, one
// replica, the sts as authority host and the sts tenant as default tenant,
// and waits until it is available.
func deployWebhook(ctx context.Context, t *testing.T, c *framework.Cluster) {
	t.Helper()
	applyKustomization(ctx, t, c, filepath.Join("deploy", "webhook"), func(o *unstructured.Unstructured) {
		if o.GetKind() != "Deployment" {
			return
		}
		var d appsv1.Deployment
		must(t, runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &d))
		d.Spec.Replicas = ptr.To[int32](1)
		ctr := &d.Spec.Template.Spec.Containers[0]
		ctr.Image = "localhost/podid:dev"
		ctr.ImagePullPolicy = corev1.PullIfNotPresent
		args := slices.DeleteFunc(slices.Clone(ctr.Args), func(a string) bool {
			return strings.HasPrefix(a, "--authority=") || strings.HasPrefix(a, "--authority-host=") || strings.HasPrefix(a, "--tenant-id=")
		})
		ctr.Args = append(args, "--authority="+stsAuthority, "--tenant-id="+wiTenantID)
		m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&d)
		must(t, err)
		o.Object = m
		o.SetAPIVersion("apps/v1")
		o.SetKind("Deployment")
		unstructured.RemoveNestedField(o.Object, "status")
		unstructured.RemoveNestedField(o.Object, "metadata", "creationTimestamp")
		unstructured.RemoveNestedField(o.Object, "spec", "template", "metadata", "creationTimestamp")
	})
	if err := waitDeploymentAvailable(ctx, c, "podid-system", "podid-webhook"); err != nil {
		t.Fatal(err)
	}
}

// seed003Deployment is seed 003's azcli-deployment (named <app>-deployment,
// label app=<app>) with its container replaced by wiclient (the pod template
// labelled for the webhook). It returns the command that runs wiclient in
// the container.
//
// With the image localhost/podid-wiclient:dev imported (hack/image.sh), that
// image runs; otherwise wiclient is built here and mounted from the node
// into the test client image.
func seed003Deployment(ctx context.Context, t *testing.T, c *framework.Cluster, app, sa string) (*appsv1.Deployment, []string) {
	t.Helper()
	labels := map[string]string{"app": app}
	podLabels := map[string]string{"app": app, "azure.workload.identity/use": "true"}
	spec := corev1.PodSpec{
		DeprecatedServiceAccount:      sa,
		TerminationGracePeriodSeconds: ptr.To[int64](1),
		Containers: []corev1.Container{{
			Name:            "azcli",
			ImagePullPolicy: corev1.PullNever,
			// The local CA as the system trust store's file (docs/local-cloud.md):
			// where Go, OpenSSL and Debian's Python look, no env var.
			VolumeMounts: []corev1.VolumeMount{{Name: "podid-sts-ca", MountPath: "/etc/ssl/certs/ca-certificates.crt", SubPath: "ca.crt", ReadOnly: true}},
		}},
		Volumes: []corev1.Volume{{Name: "podid-sts-ca", VolumeSource: corev1.VolumeSource{
			ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "podid-sts-ca"}},
		}}},
	}
	var cmd []string
	if nodeHasImage(ctx, t, c, wiClientImage) {
		spec.Containers[0].Image = wiClientImage
		cmd = []string{"/wiclient"}
	} else {
		dir := buildWIClient(ctx, t)
		t.Logf("image %s not imported (see hack/image.sh): running wiclient from %s in %s", wiClientImage, dir, framework.TestClientImage)
		spec.Containers[0].Image = framework.TestClientImage
		cmd = []string{"/opt/wiclient/wiclient"}
		spec.Containers[0].VolumeMounts = append(spec.Containers[0].VolumeMounts, corev1.VolumeMount{Name: "wiclient", MountPath: "/opt/wiclient", ReadOnly: true})
		spec.Volumes = append(spec.Volumes, corev1.Volume{Name: "wiclient", VolumeSource: corev1.VolumeSource{
			HostPath: &corev1.HostPathVolumeSource{Path: dir, Type: ptr.To(corev1.HostPathDirectory)},
		}})
	}
	spec.Containers[0].Command = cmd
	return &appsv1.Deployment{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: metav1.ObjectMeta{Name: app + "-deployment", Labels: labels},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](1),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: podLabels}, Spec: spec},
		},
	}, cmd
}

// injectLikeWebhook adds what podid webhook injects (docs/contracts.md §5) — used
// only under PODID_E2E_WI_NO_WEBHOOK=1.
func injectLikeWebhook(spec *corev1.PodSpec, clientID string) {
	injectEnv(spec, clientID, stsAuthority)
}

// assertWebhookInjected checks the running pod against docs/contracts.md §5,
// with the webhook pointed at the sts's address.
func assertWebhookInjected(t *testing.T, pod *corev1.Pod, clientID string) {
	t.Helper()
	assertInjected(t, pod, clientID, stsAuthority)
}

// assertInjected checks the running pod against docs/contracts.md §5.
func assertInjected(t *testing.T, pod *corev1.Pod, clientID, authority string) {
	t.Helper()
	got := map[string]string{}
	for _, e := range pod.Spec.Containers[0].Env {
		got[e.Name] = e.Value
	}
	for k, v := range map[string]string{
		"AZURE_CLIENT_ID":            clientID,
		"AZURE_TENANT_ID":            wiTenantID,
		"AZURE_FEDERATED_TOKEN_FILE": framework.AzureTokenFile,
		"AZURE_AUTHORITY_HOST":       authority,
	} {
		if got[k] != v {
			t.Errorf("pod env %s = %q, want %q", k, got[k], v)
		}
	}
	var vol *corev1.ServiceAccountTokenProjection
	for _, v := range pod.Spec.Volumes {
		if v.Name == "azure-identity-token" && v.Projected != nil && len(v.Projected.Sources) == 1 {
			vol = v.Projected.Sources[0].ServiceAccountToken
		}
	}
	if vol == nil || vol.Audience != framework.TokenExchangeAudience || vol.Path != "azure-identity-token" {
		t.Errorf("pod has no projected token volume for %s: %+v", framework.TokenExchangeAudience, pod.Spec.Volumes)
	}
	mounted := slices.ContainsFunc(pod.Spec.Containers[0].VolumeMounts, func(m corev1.VolumeMount) bool {
		return m.Name == "azure-identity-token" && m.MountPath == framework.AzureTokenDir && m.ReadOnly
	})
	if !mounted {
		t.Errorf("token volume not mounted read-only at %s: %+v", framework.AzureTokenDir, pod.Spec.Containers[0].VolumeMounts)
	}
}

// verifyAccessToken checks tok as a resource server for wiResource would,
// against the sts's JWKS.
func verifyAccessToken(ctx context.Context, t *testing.T, tr http.RoundTripper, tok, clientID string) {
	t.Helper()
	claims, err := accessTokenVerifier(t, tr).Verify(ctx, tok)
	if err != nil {
		t.Fatalf("access token from the pod does not verify: %v", err)
	}
	if claims.TenantID != wiTenantID || claims.AppID != clientID || claims.IDType != "app" {
		t.Errorf("access token claims = %+v, want tid %s, appid %s, idtyp app", claims, wiTenantID, clientID)
	}
	t.Logf("access token verifies: iss %s aud %v tid %s appid %s exp %s", claims.Issuer, claims.Audience, claims.TenantID, claims.AppID, claims.Expiry.UTC().Format(time.RFC3339))
}

// accessTokenVerifier is the resource server for wiResource that
// verifyAccessToken uses, for tests that check many tokens (its JWKS is
// fetched once).
func accessTokenVerifier(t *testing.T, tr http.RoundTripper) *tokenverify.Verifier {
	t.Helper()
	v, err := tokenverify.New(tokenverify.Config{
		JWKSURL:   stsAuthority + "common/discovery/keys",
		Keys:      jwks.New(jwks.Config{Transport: tr}),
		Issuers:   []string{"https://sts.windows.net/" + wiTenantID + "/"},
		Audiences: []string{wiResource},
	})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// readManifest decodes a manifest of the repository.
func readManifest(t *testing.T, rel string) []*unstructured.Unstructured {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(framework.RepoRoot(), rel))
	if err != nil {
		t.Fatal(err)
	}
	objs, err := framework.DecodeManifest(b)
	if err != nil {
		t.Fatalf("%s: %v", rel, err)
	}
	return objs
}

// applyObjects applies objs with the framework (deleted at cleanup).
func applyObjects(ctx context.Context, t *testing.T, c *framework.Cluster, objs []*unstructured.Unstructured) {
	t.Helper()
	for _, o := range objs {
		b, err := yaml.Marshal(o.Object)
		if err != nil {
			t.Fatal(err)
		}
		c.Apply(ctx, t, "", b)
	}
}

func mustYAML(t *testing.T, o any) []byte {
	t.Helper()
	b, err := yaml.Marshal(o)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// waitDeploymentAvailable polls until every replica of the current
// generation is updated and available.
func waitDeploymentAvailable(ctx context.Context, c *framework.Cluster, ns, name string) error {
	var d appsv1.Deployment
	err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 2*framework.PodTimeout, true, func(ctx context.Context) (bool, error) {
		if err := c.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &d); err != nil {
			return false, client.IgnoreNotFound(err)
		}
		want := ptr.Deref(d.Spec.Replicas, 1)
		return d.Status.ObservedGeneration >= d.Generation && d.Status.UpdatedReplicas == want &&
			d.Status.AvailableReplicas == want && d.Status.Replicas == want, nil
	})
	if err != nil {
		return fmt.Errorf("deployment %s/%s not available (status %+v): %w", ns, name, d.Status, err)
	}
	return nil
}

// waitForPodOf waits for the one pod matching selector and until it is Ready.
func waitForPodOf(ctx context.Context, t *testing.T, c *framework.Cluster, ns, selector string) *corev1.Pod {
	t.Helper()
	var name string
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, framework.PodTimeout, true, func(ctx context.Context) (bool, error) {
		pods, err := c.Clientset.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			return false, err
		}
		var live []string
		for _, p := range pods.Items {
			if p.DeletionTimestamp == nil {
				live = append(live, p.Name)
			}
		}
		if len(live) == 1 {
			name = live[0]
			return true, nil
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("no single pod %s in %s: %v", selector, ns, err)
	}
	p, err := c.WaitForPodReady(ctx, ns, name)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// waitForLog polls the pod's log until it contains want; a GetToken
// failure (the AADSTS code) is reported when the wait ends.
func waitForLog(ctx context.Context, t *testing.T, c *framework.Cluster, ns, pod, want string) string {
	t.Helper()
	var logs string
	err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		var err error
		logs, err = c.Logs(ctx, ns, pod, "")
		return err == nil && strings.Contains(logs, want), nil
	})
	if err != nil {
		t.Fatalf("pod %s/%s never logged %q: %v; last line: %s", ns, pod, want, err, lastLine(logs))
	}
	return logs
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// nodeHasImage reports whether the node lists image among its images.
func nodeHasImage(ctx context.Context, t *testing.T, c *framework.Cluster, image string) bool {
	t.Helper()
	// Ask containerd, not the Node object: the kubelet reports images in its
	// periodic status update, which lags an import made just before the tests.
	out, err := exec.CommandContext(ctx, "ctr", "--address", c.CtrAddress, "--namespace", "k8s.io", "images", "ls", "-q").Output()
	if err != nil {
		t.Fatalf("ctr images ls: %v", err)
	}
	return slices.Contains(strings.Fields(string(out)), image)
}

// buildWIClient builds wiclient statically into a directory on the node
// (this machine) and returns it.
func buildWIClient(ctx context.Context, t *testing.T) string {
	t.Helper()
	dir := filepath.Join(framework.RepoRoot(), ".cache", "e2e", "wiclient")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", filepath.Join(dir, "wiclient"), "./test/e2e/images/wiclient")
	cmd.Dir = framework.RepoRoot()
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build wiclient: %v\n%s", err, out)
	}
	return dir
}

// newUUID returns a random (version 4) UUID, the shape of a client id.
func newUUID(t *testing.T) string {
	t.Helper()
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
