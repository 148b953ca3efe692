package testenv

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	podidv1 "github.com/podid/podid/api/v1"
	"github.com/podid/podid/internal/scheme"
)

// K8sVersion is the pinned Kubernetes version; hack/versions.sh holds the same
// value for the scripts (a test keeps the two equal).
const K8sVersion = "1.33.4"

// Env is a running control plane.
type Env struct {
	// Config is an admin (system:masters) client config.
	Config *rest.Config
	// Client is a controller-runtime client (no cache) for Config.
	Client client.Client
	// Scheme knows the core types and aadpodidentity.k8s.io/v1.
	Scheme *runtime.Scheme
	// Env is the underlying envtest environment (users, webhook options).
	Env *envtest.Environment

	assets string // directory of binary links, removed by Stop
}

// RepoRoot returns the repository root, found from this source file.
func RepoRoot() string {
	_, file, _, _ := goruntime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// BinDir is where hack/build-k8s.sh puts the Kubernetes binaries.
func BinDir() string {
	if d := os.Getenv("K8S_BIN"); d != "" {
		return d
	}
	cache := os.Getenv("PODID_CACHE")
	if cache == "" {
		cache = filepath.Join(RepoRoot(), ".cache")
	}
	return filepath.Join(cache, "k8s-v"+K8sVersion, "bin")
}

// Available reports why a control plane cannot start, or "" when it can.
func Available() string {
	for _, b := range []string{filepath.Join(BinDir(), "kube-apiserver"), filepath.Join(BinDir(), "kubectl")} {
		if _, err := os.Stat(b); err != nil {
			return fmt.Sprintf("%s missing (run ./hack/test.sh or ./hack/install.sh)", b)
		}
	}
	if _, err := exec.LookPath("etcd"); err != nil {
		return "etcd not on PATH (apt-get install etcd-server, or run ./hack/install.sh)"
	}
	return ""
}

// Options tune a control plane.
type Options struct {
	// APIServerArgs are extra kube-apiserver flags (name → values).
	APIServerArgs map[string][]string
	// WebhookInstall is passed to envtest: webhook configurations it installs
	// and points at a local server it provisions certificates for.
	WebhookInstall envtest.WebhookInstallOptions
}

// Start starts etcd and kube-apiserver and installs the CRDs.
func Start(opts Options) (*Env, error) {
	if why := Available(); why != "" {
		return nil, fmt.Errorf("control plane unavailable: %s", why)
	}
	etcd, _ := exec.LookPath("etcd")
	// envtest finds all three binaries in one directory; etcd comes from
	// Debian's package, the others from hack/build-k8s.sh.
	assets, err := os.MkdirTemp("", "podid-testenv-bin-")
	if err != nil {
		return nil, err
	}
	for name, target := range map[string]string{
		"etcd":           etcd,
		"kube-apiserver": filepath.Join(BinDir(), "kube-apiserver"),
		"kubectl":        filepath.Join(BinDir(), "kubectl"),
	} {
		if err := os.Symlink(target, filepath.Join(assets, name)); err != nil {
			return nil, fmt.Errorf("link %s: %w", name, err)
		}
	}
	// Sign service-account tokens with RSA, as real clusters (and Entra's
	// federation, which accepts RS256 only) expect; envtest defaults to ES256.
	// jwks_uri must name the address the API server listens on.
	keyFile, err := writeRSAKey(filepath.Join(assets, "sa.key"))
	if err != nil {
		os.RemoveAll(assets)
		return nil, err
	}
	args := map[string][]string{
		"external-hostname":                {"127.0.0.1"},
		"service-account-key-file":         {keyFile},
		"service-account-signing-key-file": {keyFile},
	}
	for k, vs := range opts.APIServerArgs {
		args[k] = vs
	}
	s := scheme.New()
	e := &envtest.Environment{
		BinaryAssetsDirectory:    assets,
		CRDDirectoryPaths:        []string{filepath.Join(RepoRoot(), "deploy", "crds")},
		ErrorIfCRDPathMissing:    true,
		Scheme:                   s,
		WebhookInstallOptions:    opts.WebhookInstall,
		ControlPlaneStartTimeout: 90 * time.Second,
		ControlPlaneStopTimeout:  30 * time.Second,
	}
	api := e.ControlPlane.GetAPIServer()
	for k, vs := range args {
		api.Configure().Set(k, vs...)
	}
	cfg, err := e.Start()
	if err != nil {
		os.RemoveAll(assets)
		return nil, fmt.Errorf("start control plane: %w", err)
	}
	cfg.QPS, cfg.Burst = 500, 1000
	c, err := client.New(cfg, client.Options{Scheme: s})
	if err != nil {
		_ = e.Stop()
		os.RemoveAll(assets)
		return nil, fmt.Errorf("build client: %w", err)
	}
	return &Env{Config: cfg, Client: c, Scheme: s, Env: e, assets: assets}, nil
}

// Stop stops the control plane and removes its temporary directories.
func (e *Env) Stop() error {
	if e == nil {
		return nil
	}
	err := e.Env.Stop()
	os.RemoveAll(e.assets)
	return err
}

// Need returns e, or skips (fails under PODID_REQUIRE_CLUSTER=1) when no
// control plane runs for this package.
func (e *Env) Need(t testing.TB) *Env {
	t.Helper()
	if e != nil {
		return e
	}
	why := Available()
	if why == "" {
		why = "control plane failed to start (see TestMain output)"
	}
	if os.Getenv("PODID_REQUIRE_CLUSTER") == "1" {
		t.Fatalf("integration test needs a control plane: %s", why)
	}
	t.Skipf("SKIPPED: integration test needs a control plane: %s", why)
	return nil
}

// NeedRoot skips (fails under PODID_REQUIRE_CLUSTER=1) unless the test runs
// as root with the given tools on PATH: tests that build network namespaces
// or program iptables.
func NeedRoot(t testing.TB, tools ...string) {
	t.Helper()
	why := ""
	if os.Geteuid() != 0 {
		why = "not root"
	}
	for _, b := range tools {
		if _, err := exec.LookPath(b); err != nil {
			why = b + " not found"
		}
	}
	if why == "" {
		return
	}
	if os.Getenv("PODID_REQUIRE_CLUSTER") == "1" {
		t.Fatalf("test needs root and %v: %s", tools, why)
	}
	t.Skipf("SKIPPED: test needs root and %v: %s", tools, why)
}

// Main starts one control plane for the test package, runs the tests and
// stops it. Use from TestMain: os.Exit(testenv.Main(m, &env, testenv.Options{})).
// Without binaries the tests run with *env == nil and Need skips them.
func Main(m *testing.M, env **Env, opts Options) int {
	if !flag.Parsed() {
		flag.Parse()
	}
	// Fuzzing runs TestMain in every worker process; only fuzz targets run
	// there and none needs a control plane.
	if f := flag.Lookup("test.fuzz"); f != nil && f.Value.String() != "" {
		return m.Run()
	}
	if f := flag.Lookup("test.fuzzworker"); f != nil && f.Value.String() == "true" {
		return m.Run()
	}
	if why := Available(); why != "" {
		fmt.Fprintf(os.Stderr, "\n!!! testenv: integration tests in this package will be SKIPPED: %s\n\n", why)
		return m.Run()
	}
	e, err := Start(opts)
	if err != nil {
		fmt.Fprintf(os.Stderr, "testenv: %v\n", err)
		if os.Getenv("PODID_REQUIRE_CLUSTER") == "1" {
			return 1
		}
		return m.Run()
	}
	*env = e
	code := m.Run()
	if err := e.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "testenv: stop: %v\n", err)
	}
	return code
}

// Namespace creates a fresh namespace for one test and deletes it afterwards.
func (e *Env) Namespace(t testing.TB) string {
	t.Helper()
	ns := &corev1.Namespace{}
	ns.GenerateName = "t-"
	if err := e.Client.Create(t.Context(), ns); err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	t.Cleanup(func() {
		// No namespace controller runs here, so empty the namespace first;
		// later tests (cluster-wide ones especially) must not see leftovers.
		ctx := context.Background()
		for _, o := range []client.Object{
			&corev1.Pod{}, &podidv1.AzureIdentity{}, &podidv1.AzureIdentityBinding{},
			&podidv1.AzurePodIdentityException{}, &podidv1.AzureAssignedIdentity{},
		} {
			_ = e.Client.DeleteAllOf(ctx, o, client.InNamespace(ns.Name), client.GracePeriodSeconds(0))
		}
		_ = e.Client.Delete(ctx, ns)
	})
	return ns.Name
}

// writeRSAKey writes a new RSA-2048 private key (PKCS#1 PEM) to path.
func writeRSAKey(path string) (string, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return "", fmt.Errorf("generate service-account key: %w", err)
	}
	b := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return "", fmt.Errorf("write service-account key: %w", err)
	}
	return path, nil
}

// ShippedMutatingWebhook reads a MutatingWebhookConfiguration from the
// repository (path relative to the root) in the form envtest installs:
// service paths without their leading slash, since envtest builds the URL as
// https://host:port/<path>.
func ShippedMutatingWebhook(path string) (*admissionregistrationv1.MutatingWebhookConfiguration, error) {
	var c admissionregistrationv1.MutatingWebhookConfiguration
	if err := readShippedWebhook(path, &c); err != nil {
		return nil, err
	}
	for i := range c.Webhooks {
		envtestPath(&c.Webhooks[i].ClientConfig)
	}
	return &c, nil
}

// ShippedValidatingWebhook is ShippedMutatingWebhook for a
// ValidatingWebhookConfiguration.
func ShippedValidatingWebhook(path string) (*admissionregistrationv1.ValidatingWebhookConfiguration, error) {
	var c admissionregistrationv1.ValidatingWebhookConfiguration
	if err := readShippedWebhook(path, &c); err != nil {
		return nil, err
	}
	for i := range c.Webhooks {
		envtestPath(&c.Webhooks[i].ClientConfig)
	}
	return &c, nil
}

func readShippedWebhook(path string, into any) error {
	p := filepath.Join(RepoRoot(), path)
	b, err := os.ReadFile(p)
	if err != nil {
		return fmt.Errorf("read shipped webhook configuration: %w", err)
	}
	if err := yaml.UnmarshalStrict(b, into); err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	return nil
}

func envtestPath(cc *admissionregistrationv1.WebhookClientConfig) {
	if svc := cc.Service; svc != nil && svc.Path != nil {
		path := strings.TrimPrefix(*svc.Path, "/")
		svc.Path = &path
	}
}
