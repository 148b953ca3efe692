package cli_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/podid/podid/internal/sts"
	"github.com/podid/podid/internal/sts/jwks"
	"github.com/podid/podid/internal/sts/ststest"
	"github.com/podid/podid/internal/testenv"
	"github.com/podid/podid/internal/webhook"
	"github.com/podid/podid/internal/webhook/webhooktest"
)

var (
	env *testenv.Env
	// bin is the podid binary the tests run.
	bin string
)

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "podid-cli-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	bin = filepath.Join(dir, "podid")
	build := exec.Command("go", "build", "-o", bin, "./cmd/podid")
	build.Dir = testenv.RepoRoot()
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build podid: %v\n%s", err, out)
		return 1
	}
	mwc, err := testenv.ShippedMutatingWebhook("deploy/webhook/mutatingwebhookconfiguration.yaml")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return testenv.Main(m, &env, testenv.Options{WebhookInstall: envtest.WebhookInstallOptions{
		MutatingWebhooks: []*admissionregistrationv1.MutatingWebhookConfiguration{mwc},
		LocalServingHost: "127.0.0.1",
	}})
}

// user is one user's setup: a config dir and, when a cluster runs, a
// kubeconfig.
type user struct {
	t          *testing.T
	xdg        string
	kubeconfig string
	sts        *ststest.Server
	extraEnv   []string
}

type result struct {
	stdout, stderr string
	code           int
}

// podid runs the binary with the user's environment. Nothing inherits the
// test's KUBECONFIG or XDG dirs; no proxy, so nothing leaves the machine.
func (c *user) podid(args ...string) result {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(c.t.Context(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = []string{"HOME=" + c.xdg, "XDG_CONFIG_HOME=" + c.xdg, "PATH=/usr/bin:/bin"}
	if c.extraEnv != nil {
		cmd.Env = append(cmd.Env, c.extraEnv...)
	} else {
		cmd.Env = append(cmd.Env, "NO_PROXY=*")
	}
	if c.kubeconfig != "" {
		cmd.Env = append(cmd.Env, "KUBECONFIG="+c.kubeconfig)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		c.t.Fatalf("run podid %v: %v", args, err)
	}
	return result{out.String(), errb.String(), code}
}

// ok runs podid and fails the test unless it exits 0.
func (c *user) ok(args ...string) string {
	c.t.Helper()
	r := c.podid(args...)
	if r.code != 0 {
		c.t.Fatalf("podid %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// newCLI starts a podid sts (trusting issuerCA for issuer, when given) and
// records it as the local cloud.
func newCLI(t *testing.T, issuer string, issuerCA *x509.CertPool) *user {
	t.Helper()
	opts := ststest.Options{}
	if issuer != "" {
		opts.Configure = func(c *sts.Config) {
			c.ExternalTrust = jwks.Trust{PerIssuer: map[string]*x509.CertPool{issuer: issuerCA}, NoSystemRoots: true}
		}
	}
	srv := ststest.Start(t, opts)
	c := &user{t: t, xdg: t.TempDir(), sts: srv}
	secret := ststest.WriteFile(t, "admin-secret", []byte(ststest.AdminSecret+"\n"))
	c.ok("config", "set-cloud", "local", "--authority", srv.URL, "--ca-file", srv.CAFile, "--tenant-id", srv.TenantID,
		"--client-id", ststest.AdminClientID, "--client-secret-file", secret, "--subscription", ststest.SubscriptionID,
		"--resource-group", "rg", "--location", "westeurope")
	return c
}

// cluster is the API server, the in-process webhook and an sts that
// trusts the API server's service-account issuer.
type cluster struct {
	*user
	cs     kubernetes.Interface
	issuer string
}

func startCluster(t *testing.T) *cluster {
	t.Helper()
	e := env.Need(t)
	cs, err := kubernetes.NewForConfig(e.Config)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := cs.CoreV1().RESTClient().Get().AbsPath("/.well-known/openid-configuration").DoRaw(t.Context())
	if err != nil {
		t.Fatalf("issuer discovery: %v", err)
	}
	var d struct {
		Issuer string `json:"issuer"`
	}
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatal(err)
	}
	allowAnonymousIssuerDiscovery(t, cs)
	apiCA := x509.NewCertPool()
	apiCA.AppendCertsFromPEM(e.Config.CAData)
	c := newCLI(t, d.Issuer, apiCA)
	waitAnonymousDiscovery(t, d.Issuer, apiCA)
	c.kubeconfig = writeKubeconfig(t, e)
	startWebhook(t, e, c.sts.URL+"/", c.sts.TenantID)
	return &cluster{user: c, cs: cs, issuer: d.Issuer}
}

func writeKubeconfig(t *testing.T, e *testenv.Env) string {
	t.Helper()
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["envtest"] = &clientcmdapi.Cluster{Server: e.Config.Host, CertificateAuthorityData: e.Config.CAData}
	cfg.AuthInfos["admin"] = &clientcmdapi.AuthInfo{ClientCertificateData: e.Config.CertData, ClientKeyData: e.Config.KeyData, Token: e.Config.BearerToken}
	cfg.Contexts["envtest"] = &clientcmdapi.Context{Cluster: "envtest", AuthInfo: "admin"}
	cfg.CurrentContext = "envtest"
	p := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, p); err != nil {
		t.Fatal(err)
	}
	return p
}

const discoveryBinding = "podid-cli-test:service-account-issuer-discovery"

// allowAnonymousIssuerDiscovery lets the sts (anonymous) read the API
// server's discovery and JWKS, as a cluster's public issuer allows.
func allowAnonymousIssuerDiscovery(t *testing.T, cs kubernetes.Interface) {
	t.Helper()
	crb := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: discoveryBinding},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "system:service-account-issuer-discovery"},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.GroupKind, Name: "system:unauthenticated"}},
	}
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(t.Context(), crb, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}

// waitAnonymousDiscovery polls the issuer's JWKS anonymously until RBAC
// lets it through.
func waitAnonymousDiscovery(t *testing.T, issuer string, ca *x509.CertPool) {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca, MinVersion: tls.VersionTLS12}}, Timeout: 10 * time.Second}
	defer hc.CloseIdleConnections()
	poll(t, 30*time.Second, func() error {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, strings.TrimSuffix(issuer, "/")+"/openid/v1/jwks", nil)
		req.Header.Set("Accept", "application/jwk-set+json")
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("anonymous JWKS: %s", resp.Status)
		}
		return nil
	})
}

// startWebhook runs the real webhook in-process on envtest's webhook port.
func startWebhook(t *testing.T, e *testenv.Env, authority, tenant string) {
	t.Helper()
	if err := e.Client.Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "podid-system"}}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	webhooktest.Start(t, e, webhook.Config{
		HealthAddr:        "127.0.0.1:0",
		AuthorityHost:     authority,
		DefaultTenantID:   tenant,
		Namespace:         "podid-system",
		SecretName:        "podid-webhook-cert",
		WebhookConfigName: "podid-webhook",
		Logger:            slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
}

func poll(t *testing.T, d time.Duration, f func() error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		err := f()
		if err == nil {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("not within %v: %v", d, err)
		case <-tick.C:
		}
	}
}
