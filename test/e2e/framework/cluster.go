package framework

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	podidv1 "github.com/podid/podid/api/v1"
)

// Images built and imported by hack/image.sh. Pods must use imagePullPolicy Never.
const (
	PodidImage      = "localhost/podid:dev"
	TestClientImage = "localhost/podid-testclient:dev"
)

// EnableEnv or RequireEnv must be "1" for e2e tests to run at all: the node is one
// machine-wide resource, and a plain `go test ./...` by anyone must not deploy into
// a cluster someone else brought up.
const EnableEnv = "PODID_E2E"

// RequireEnv enables the e2e tests too, and turns "cluster not up" from a skip into
// a failure. hack/test.sh sets it.
const RequireEnv = "PODID_REQUIRE_CLUSTER"

// errDisabled is why tests skip when neither variable is set.
var errDisabled = fmt.Errorf("e2e tests are off: set %s=1 (or %s=1, as hack/test.sh does)", EnableEnv, RequireEnv)

// Cluster is a handle on the running local cluster. Its fields come from
// $PODID_CACHE/cluster/cluster.env, written by `hack/cluster.sh up`.
type Cluster struct {
	// Kubeconfig is the admin (system:masters) kubeconfig path.
	Kubeconfig string
	// Config is the admin client config.
	Config *rest.Config
	// Client is an uncached controller-runtime client knowing core types and aadpodidentity.k8s.io/v1.
	Client client.Client
	// Clientset is a client-go clientset (logs, exec, TokenRequest).
	Clientset kubernetes.Interface
	// Scheme is Client's scheme.
	Scheme *runtime.Scheme

	// NodeName is the only node's name.
	NodeName string
	// NodeIP is the node's primary address; pods and the node reach it.
	NodeIP string
	// BridgeIP is the pods' gateway on the node (the CNI bridge's address). It exists
	// before the first pod, so node-side servers may bind it.
	BridgeIP string
	// Bridge is the CNI bridge's interface name.
	Bridge string
	// PodCIDR and ServiceCIDR are the node's pod and service ranges.
	PodCIDR, ServiceCIDR string
	// APIServer is the API server's URL as pods and the node reach it.
	APIServer string
	// Issuer is the service-account token issuer (the API server's URL). Its
	// /.well-known/openid-configuration and JWKS are readable without credentials.
	Issuer string
	// CAFile is the cluster CA (PEM); it signs the API server's serving certificate.
	CAFile string
	// CtrAddress is the containerd socket (for `ctr --address ... -n k8s.io`).
	CtrAddress string
	// K8sBin is the directory holding kubectl and the other Kubernetes binaries.
	K8sBin string
	// KubeletDir is the kubelet's --root-dir (pod volumes live under pods/<uid>/).
	KubeletDir string

	// AzuriteAccount is the storage account of the node's queue service
	// (Azurite, hack/azurite.sh); AzuriteAccountURL its URL as pods use it
	// (the Service address, path style); AzuriteAddr where Azurite itself
	// listens on the node (bridge address:port).
	AzuriteAccount, AzuriteAccountURL, AzuriteAddr string
}

// RepoRoot is the repository root, found from this source file.
func RepoRoot() string {
	_, file, _, _ := goruntime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", "..", ".."))
}

// EnvFile is where `hack/cluster.sh up` writes the cluster facts.
func EnvFile() string {
	cache := os.Getenv("PODID_CACHE")
	if cache == "" {
		cache = filepath.Join(RepoRoot(), ".cache")
	}
	return filepath.Join(cache, "cluster", "cluster.env")
}

var (
	sharedOnce sync.Once
	shared     *Cluster
	sharedErr  error
)

// Connect returns the shared cluster handle, or skips the test (fails it under
// PODID_REQUIRE_CLUSTER=1) when the cluster is not up.
func Connect(t testing.TB) *Cluster {
	t.Helper()
	c, err := Shared()
	if err == errDisabled {
		t.Skipf("SKIPPED: %v", err)
	}
	if err != nil {
		if os.Getenv(RequireEnv) == "1" {
			t.Fatalf("e2e test needs the local cluster: %v", err)
		}
		t.Skipf("SKIPPED: e2e test needs the local cluster: %v (run hack/test.sh, or hack/install.sh && hack/cluster.sh up && hack/image.sh)", err)
	}
	return c
}

// Main runs an e2e test package, announcing loudly when its tests will skip.
// Use it as `func TestMain(m *testing.M) { os.Exit(framework.Main(m)) }`.
func Main(m *testing.M) int {
	if _, err := Shared(); err == errDisabled {
		fmt.Fprintf(os.Stderr, "\n*** e2e: SKIPPING every test: %v\n\n", err)
	} else if err != nil {
		word := "SKIPPING"
		if os.Getenv(RequireEnv) == "1" {
			word = "FAILING"
		}
		fmt.Fprintf(os.Stderr, "\n*** e2e: %s every test: the local cluster is not up: %v\n*** run hack/test.sh, or: hack/install.sh && hack/cluster.sh up && hack/image.sh\n\n", word, err)
	}
	return m.Run()
}

// Shared loads the cluster handle once per test binary.
func Shared() (*Cluster, error) {
	sharedOnce.Do(func() {
		if os.Getenv(EnableEnv) != "1" && os.Getenv(RequireEnv) != "1" {
			sharedErr = errDisabled
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		shared, sharedErr = Load(ctx, EnvFile())
	})
	return shared, sharedErr
}

// Load reads the cluster facts from envFile and checks that the API server answers
// and the node is Ready.
func Load(ctx context.Context, envFile string) (*Cluster, error) {
	env, err := readEnv(envFile)
	if err != nil {
		return nil, err
	}
	c := &Cluster{
		Kubeconfig: env["KUBECONFIG"], NodeName: env["PODID_NODE_NAME"], NodeIP: env["PODID_NODE_IP"],
		BridgeIP: env["PODID_BRIDGE_IP"], Bridge: env["PODID_BRIDGE"], PodCIDR: env["PODID_POD_CIDR"],
		ServiceCIDR: env["PODID_SERVICE_CIDR"], APIServer: env["PODID_API_SERVER"], Issuer: env["PODID_SA_ISSUER"],
		CAFile: env["PODID_CA_FILE"], CtrAddress: env["PODID_CTR_ADDRESS"], K8sBin: env["PODID_K8S_BIN"],
		KubeletDir: env["PODID_KUBELET_DIR"], AzuriteAccount: env["PODID_AZURITE_ACCOUNT"],
		AzuriteAccountURL: env["PODID_AZURITE_ACCOUNT_URL"], AzuriteAddr: env["PODID_AZURITE_ADDR"],
	}
	for k, v := range map[string]string{"KUBECONFIG": c.Kubeconfig, "PODID_NODE_NAME": c.NodeName,
		"PODID_NODE_IP": c.NodeIP, "PODID_BRIDGE_IP": c.BridgeIP, "PODID_SA_ISSUER": c.Issuer, "PODID_CA_FILE": c.CAFile} {
		if v == "" {
			return nil, fmt.Errorf("%s lacks %s", envFile, k)
		}
	}
	c.Config, err = clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", c.Kubeconfig, err)
	}
	c.Config.QPS, c.Config.Burst = 100, 200
	c.Scheme = runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(c.Scheme); err != nil {
		return nil, err
	}
	if err := podidv1.AddToScheme(c.Scheme); err != nil {
		return nil, err
	}
	if c.Client, err = client.New(c.Config, client.Options{Scheme: c.Scheme}); err != nil {
		return nil, fmt.Errorf("build client: %w", err)
	}
	if c.Clientset, err = kubernetes.NewForConfig(c.Config); err != nil {
		return nil, fmt.Errorf("build clientset: %w", err)
	}
	if _, err := c.Clientset.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx); err != nil {
		return nil, fmt.Errorf("API server not ready: %w", err)
	}
	var node corev1.Node
	if err := c.Client.Get(ctx, client.ObjectKey{Name: c.NodeName}, &node); err != nil {
		return nil, fmt.Errorf("node %s: %w", c.NodeName, err)
	}
	for _, cond := range node.Status.Conditions {
		if cond.Type == corev1.NodeReady && cond.Status != corev1.ConditionTrue {
			return nil, fmt.Errorf("node %s not Ready: %s", c.NodeName, cond.Message)
		}
	}
	return c, nil
}

func readEnv(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		if os.IsNotExist(err) {
			return nil, fmt.Errorf("%s does not exist (hack/cluster.sh up writes it)", path)
		}
		return nil, err
	}
	defer f.Close()
	env := map[string]string{}
	s := bufio.NewScanner(f)
	for s.Scan() {
		if k, v, ok := strings.Cut(strings.TrimSpace(s.Text()), "="); ok && !strings.HasPrefix(k, "#") {
			env[k] = v
		}
	}
	return env, s.Err()
}

// AnonymousHTTPClient trusts the cluster CA and presents no credentials: what an
// external party (an identity provider fetching the issuer's discovery document)
// would use.
func (c *Cluster) AnonymousHTTPClient() (*http.Client, error) {
	pem, err := os.ReadFile(c.CAFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("no certificate in %s", c.CAFile)
	}
	return &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}},
	}, nil
}

// Kubectl runs the cluster's kubectl with the admin kubeconfig and returns its
// combined output; a non-zero exit is an error that includes the output.
func (c *Cluster) Kubectl(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(c.K8sBin, "kubectl"), append([]string{"--kubeconfig", c.Kubeconfig}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}
