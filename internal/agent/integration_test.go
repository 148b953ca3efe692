package agent

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/go-logr/logr"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	crlog "sigs.k8s.io/controller-runtime/pkg/log"

	podidv1 "github.com/podid/podid/api/v1"
	"github.com/podid/podid/internal/intercept"
	"github.com/podid/podid/internal/sts"
	"github.com/podid/podid/internal/sts/jwks"
	"github.com/podid/podid/internal/sts/ststest"
	"github.com/podid/podid/internal/sts/tokenverify"
	"github.com/podid/podid/internal/testenv"
	"github.com/podid/podid/internal/workloadidentity"
)

var env *testenv.Env

// The test binary doubles as the in-pod client: run inside a network
// namespace with PODID_IMDS_CLIENT=1 it calls the unmodified Azure SDK.
const helperEnv = "PODID_IMDS_CLIENT"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "1" {
		os.Exit(runIMDSClient())
	}
	crlog.SetLogger(logr.Discard())
	os.Exit(testenv.Main(m, &env, testenv.Options{}))
}

// clientResult is what the in-pod client prints.
type clientResult struct {
	Token string `json:"token,omitempty"`
	Error string `json:"error,omitempty"`
}

func runIMDSClient() int {
	var opts azcore.ClientOptions
	if os.Getenv("PODID_IMDS_NO_RETRY") == "1" {
		opts.Retry.MaxRetries = -1
	}
	var (
		cred azcore.TokenCredential
		err  error
	)
	cid := os.Getenv("PODID_IMDS_CLIENT_ID")
	switch os.Getenv("PODID_IMDS_MODE") {
	case "dac":
		// DefaultAzureCredential takes a user-assigned client id from AZURE_CLIENT_ID.
		if cid != "" {
			_ = os.Setenv("AZURE_CLIENT_ID", cid)
		}
		cred, err = azidentity.NewDefaultAzureCredential(&azidentity.DefaultAzureCredentialOptions{ClientOptions: opts})
	default:
		o := &azidentity.ManagedIdentityCredentialOptions{ClientOptions: opts}
		if cid != "" {
			o.ID = azidentity.ClientID(cid)
		}
		cred, err = azidentity.NewManagedIdentityCredential(o)
	}
	res := clientResult{}
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		var tok azcore.AccessToken
		tok, err = cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{os.Getenv("PODID_IMDS_RESOURCE") + "/.default"}})
		cancel()
		res.Token = tok.Token
	}
	if err != nil {
		res.Error = err.Error()
	}
	_ = json.NewEncoder(os.Stdout).Encode(res)
	return 0
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// testNet is a private subnet on a bridge; each "pod" is a network namespace
// with a veth into it, as a CNI bridge plugin would build.
type testNet struct {
	id     string
	prefix netip.Prefix
	hostIP netip.Addr
	bridge string
	n      int
}

func newTestNet(t *testing.T) *testNet {
	t.Helper()
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	id := hex.EncodeToString(b)
	tn := &testNet{id: id, prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 250, b[0], 0}), 24), bridge: "pidb" + id}
	tn.hostIP = netip.AddrFrom4([4]byte{10, 250, b[0], 1})
	run(t, "ip", "link", "add", tn.bridge, "type", "bridge")
	t.Cleanup(func() { _ = exec.Command("ip", "link", "del", tn.bridge).Run() })
	run(t, "ip", "addr", "add", tn.hostIP.String()+"/24", "dev", tn.bridge)
	run(t, "ip", "link", "set", tn.bridge, "up")
	return tn
}

// addPod creates a network namespace with the next address; it returns the
// namespace name and the address.
func (tn *testNet) addPod(t *testing.T) (string, netip.Addr) {
	t.Helper()
	tn.n++
	ns := fmt.Sprintf("pidn%s%d", tn.id, tn.n)
	a4 := tn.hostIP.As4()
	a4[3] = byte(10 + tn.n)
	ip := netip.AddrFrom4(a4)
	host, peer := fmt.Sprintf("pidv%s%d", tn.id, tn.n), fmt.Sprintf("pidp%s%d", tn.id, tn.n)
	run(t, "ip", "netns", "add", ns)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	run(t, "ip", "link", "add", host, "type", "veth", "peer", "name", peer)
	t.Cleanup(func() { _ = exec.Command("ip", "link", "del", host).Run() })
	run(t, "ip", "link", "set", peer, "netns", ns)
	run(t, "ip", "link", "set", host, "master", tn.bridge, "up")
	run(t, "ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
	run(t, "ip", "netns", "exec", ns, "ip", "addr", "add", ip.String()+"/24", "dev", peer)
	run(t, "ip", "netns", "exec", ns, "ip", "link", "set", peer, "up")
	run(t, "ip", "netns", "exec", ns, "ip", "route", "add", "default", "via", tn.hostIP.String())
	return ns, ip
}

// callSDK runs the Azure SDK inside a pod's network namespace.
func callSDK(t *testing.T, netns, mode, resource, clientID string, retry bool) clientResult {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", netns, exe)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/nonexistent", helperEnv + "=1",
		"PODID_IMDS_MODE=" + mode, "PODID_IMDS_RESOURCE=" + resource, "PODID_IMDS_CLIENT_ID=" + clientID}
	if !retry {
		cmd.Env = append(cmd.Env, "PODID_IMDS_NO_RETRY=1")
	}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("in-pod client: %v\n%s", err, out)
	}
	var r clientResult
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("in-pod client output %q: %v", out, err)
	}
	return r
}

func freePort(t *testing.T, ip netip.Addr) int {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(ip.String(), "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

type world struct {
	t      *testing.T
	ns     string
	node   string
	cs     *kubernetes.Clientset
	net    *testNet
	sts    *ststest.Server
	issuer string
	verify *tokenverify.Verifier
}

func (w *world) pod(name, sa string, labels map[string]string, ip netip.Addr, hostNetwork bool) *corev1.Pod {
	w.t.Helper()
	ctx := w.t.Context()
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: w.ns, Labels: labels},
		Spec: corev1.PodSpec{NodeName: w.node, ServiceAccountName: sa, HostNetwork: hostNetwork,
			Containers: []corev1.Container{{Name: "c", Image: "localhost/none:dev"}}},
	}
	if err := env.Client.Create(ctx, p); err != nil {
		w.t.Fatalf("create pod %s: %v", name, err)
	}
	p.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip.String(), PodIPs: []corev1.PodIP{{IP: ip.String()}}}
	if err := env.Client.Status().Update(ctx, p); err != nil {
		w.t.Fatalf("pod %s status: %v", name, err)
	}
	return p
}

func (w *world) identity(name, clientID string, selector string) {
	w.t.Helper()
	ctx := w.t.Context()
	id := &podidv1.AzureIdentity{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: w.ns},
		Spec: podidv1.AzureIdentitySpec{Type: podidv1.UserAssignedMSI, ClientID: clientID, TenantID: w.sts.TenantID}}
	if err := env.Client.Create(ctx, id); err != nil {
		w.t.Fatal(err)
	}
	b := &podidv1.AzureIdentityBinding{ObjectMeta: metav1.ObjectMeta{Name: name + "-binding", Namespace: w.ns},
		Spec: podidv1.AzureIdentityBindingSpec{AzureIdentity: name, Selector: selector}}
	if err := env.Client.Create(ctx, b); err != nil {
		w.t.Fatal(err)
	}
}

// appID verifies an access token as a resource server would and returns the
// client id it was issued to.
func (w *world) appID(tok, resource string) string {
	w.t.Helper()
	c, err := w.verify.Verify(w.t.Context(), tok)
	if err != nil {
		w.t.Fatalf("token does not verify: %v", err)
	}
	if len(c.Audience) != 1 || c.Audience[0] != resource {
		w.t.Fatalf("aud = %v, want %s", c.Audience, resource)
	}
	return c.AppID
}

func TestAgentEndToEndWithNetnsPods(t *testing.T) {
	e := env.Need(t)
	testenv.NeedRoot(t, "ip", "iptables", "iptables-restore")
	ctx := t.Context()
	cs, err := kubernetes.NewForConfig(e.Config)
	if err != nil {
		t.Fatal(err)
	}
	w := &world{t: t, ns: e.Namespace(t), cs: cs, net: newTestNet(t)}
	w.node = "node-" + w.net.id
	for _, sa := range []string{"app", "wi", "other"} {
		s := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa, Namespace: w.ns}}
		if err := e.Client.Create(ctx, s); err != nil {
			t.Fatal(err)
		}
	}

	// The cluster's service-account issuer, from a real token.
	w.issuer = issuerOfClusterTokens(t, cs, w.ns)

	// podid sts, trusting the API server's issuer.
	ext := apiServerIssuerTransport(t, e)
	w.sts = ststest.Start(t, ststest.Options{Configure: func(c *sts.Config) { c.ExternalTransport = ext }})
	keys := jwks.New(jwks.Config{Trust: jwks.Trust{Global: w.sts.CAPool}})
	w.verify, err = tokenverify.New(tokenverify.Config{JWKSURL: w.sts.JWKSURL(), Keys: keys,
		Issuers:   []string{w.sts.V1Issuer(), w.sts.URL + "/" + w.sts.TenantID + "/v2.0"},
		Audiences: []string{"https://vault.azure.net", "https://storage.azure.com"}})
	if err != nil {
		t.Fatal(err)
	}
	sub := func(sa string) string { return "system:serviceaccount:" + w.ns + ":" + sa }
	cidA := w.sts.AddIdentity(t, "id-a-"+w.net.id, w.issuer, sub("app"))
	cidC := w.sts.AddIdentity(t, "id-c-"+w.net.id, w.issuer, sub("app"))
	cidW := w.sts.AddIdentity(t, "id-w-"+w.net.id, w.issuer, sub("wi"))
	cidNoFIC := w.sts.AddIdentity(t, "id-n-"+w.net.id, "", "")

	w.identity("id-a", cidA, "sel-a")
	w.identity("id-c", cidC, "sel-two")
	w.identity("id-a2", cidA, "sel-two")
	w.identity("id-nofic", cidNoFIC, "sel-nofic")
	if err := e.Client.Create(ctx, &podidv1.AzurePodIdentityException{ObjectMeta: metav1.ObjectMeta{Name: "exc", Namespace: w.ns},
		Spec: podidv1.AzurePodIdentityExceptionSpec{PodLabels: map[string]podidv1.LabelValue{"noaad": "true"}}}); err != nil {
		t.Fatal(err)
	}
	wiSA := &corev1.ServiceAccount{}
	if err := e.Client.Get(ctx, types.NamespacedName{Namespace: w.ns, Name: "wi"}, wiSA); err != nil {
		t.Fatal(err)
	}
	wiSA.Annotations = map[string]string{workloadidentity.ClientIDAnnotation: cidW, workloadidentity.TenantIDAnnotation: w.sts.TenantID}
	if err := e.Client.Update(ctx, wiSA); err != nil {
		t.Fatal(err)
	}
	// A binding in another namespace selecting the same label value.
	otherNS := e.Namespace(t)
	if err := e.Client.Create(ctx, &podidv1.AzureIdentity{ObjectMeta: metav1.ObjectMeta{Name: "foreign", Namespace: otherNS},
		Spec: podidv1.AzureIdentitySpec{ClientID: cidA, TenantID: w.sts.TenantID}}); err != nil {
		t.Fatal(err)
	}
	if err := e.Client.Create(ctx, &podidv1.AzureIdentityBinding{ObjectMeta: metav1.ObjectMeta{Name: "foreign", Namespace: otherNS},
		Spec: podidv1.AzureIdentityBindingSpec{AzureIdentity: "foreign", Selector: "sel-foreign"}}); err != nil {
		t.Fatal(err)
	}

	// Interception on the host, for this test's subnet only.
	port := freePort(t, w.net.hostIP)
	ic, err := intercept.New(intercept.Config{PodCIDRs: []netip.Prefix{w.net.prefix},
		Target: netip.AddrPortFrom(w.net.hostIP, uint16(port)), ChainPrefix: "PODIDT" + strings.ToUpper(w.net.id), Interval: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := ic.Uninstall(context.Background()); err != nil {
			t.Errorf("uninstall interception: %v", err)
		}
	})

	// The agent runs with exactly the shipped RBAC and admission policy,
	// authenticated as its DaemonSet pod on this node would be.
	agentRC := agentConfig(t, e, w.node)

	startAgent := func() (stop func()) {
		actx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			done <- Run(actx, Config{
				NodeName: w.node, RESTConfig: agentRC, ListenAddr: net.JoinHostPort(w.net.hostIP.String(), strconv.Itoa(port)),
				Authority: w.sts.URL, ProviderHTTPClient: w.sts.Client(), DefaultTenantID: w.sts.TenantID,
				Interceptor: ic, Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo})),
			})
		}()
		var once atomic.Bool
		stop = func() {
			if once.Swap(true) {
				return
			}
			cancel()
			if err := <-done; err != nil {
				t.Errorf("agent.Run: %v", err)
			}
		}
		t.Cleanup(stop)
		waitUntil(t, 30*time.Second, func() bool {
			c, err := net.DialTimeout("tcp", net.JoinHostPort(w.net.hostIP.String(), strconv.Itoa(port)), 100*time.Millisecond)
			if err == nil {
				c.Close()
			}
			return err == nil && ic.Installed()
		})
		return stop
	}
	stop := startAgent()

	const vault = "https://vault.azure.net"
	nsA, ipA := w.net.addPod(t)
	w.pod("a", "app", map[string]string{"aadpodidbinding": "sel-a"}, ipA, false)

	t.Run("v1 binding: ManagedIdentityCredential gets a token that verifies", func(t *testing.T) {
		r := callSDK(t, nsA, "mi", vault, "", true)
		if r.Error != "" {
			t.Fatalf("error: %s", r.Error)
		}
		if got := w.appID(r.Token, vault); got != cidA {
			t.Fatalf("token for %s, want %s", got, cidA)
		}
	})
	t.Run("v1 binding: DefaultAzureCredential", func(t *testing.T) {
		r := callSDK(t, nsA, "dac", "https://storage.azure.com", "", true)
		if r.Error != "" {
			t.Fatalf("error: %s", r.Error)
		}
		if got := w.appID(r.Token, "https://storage.azure.com"); got != cidA {
			t.Fatalf("token for %s, want %s", got, cidA)
		}
	})

	nsW, ipW := w.net.addPod(t)
	w.pod("w", "wi", map[string]string{workloadidentity.UseLabel: "true"}, ipW, false)
	t.Run("v2 service account", func(t *testing.T) {
		r := callSDK(t, nsW, "mi", vault, "", true)
		if r.Error != "" {
			t.Fatalf("error: %s", r.Error)
		}
		if got := w.appID(r.Token, vault); got != cidW {
			t.Fatalf("token for %s, want %s", got, cidW)
		}
	})

	nsT, ipT := w.net.addPod(t)
	w.pod("two", "app", map[string]string{"aadpodidbinding": "sel-two"}, ipT, false)
	t.Run("two identities: must name one", func(t *testing.T) {
		waitIndexed(t, w, ipT)
		r := callSDK(t, nsT, "mi", vault, "", false)
		if r.Token != "" || !strings.Contains(r.Error, "Multiple user assigned identities") {
			t.Fatalf("no client_id: %+v", r)
		}
		r = callSDK(t, nsT, "mi", vault, cidC, true)
		if r.Error != "" {
			t.Fatalf("client_id: %s", r.Error)
		}
		if got := w.appID(r.Token, vault); got != cidC {
			t.Fatalf("token for %s, want %s", got, cidC)
		}
	})

	denied := func(name string, labels map[string]string, want string) {
		t.Run(name, func(t *testing.T) {
			ns, ip := w.net.addPod(t)
			w.pod(strings.ReplaceAll(strings.ToLower(strings.Fields(name)[0]), ":", ""), "app", labels, ip, false)
			waitIndexed(t, w, ip)
			r := callSDK(t, ns, "mi", vault, "", false)
			if r.Token != "" || !strings.Contains(r.Error, want) {
				t.Fatalf("got %+v, want an error containing %q", r, want)
			}
		})
	}
	denied("nobinding", nil, "no identity is assigned")
	denied("foreign: other namespace's binding", map[string]string{"aadpodidbinding": "sel-foreign"}, "no identity is assigned")
	denied("excepted", map[string]string{"aadpodidbinding": "sel-a", "noaad": "true"}, "excepted")
	denied("nofic: missing federated credential", map[string]string{"aadpodidbinding": "sel-nofic"}, "system:serviceaccount:"+w.ns+":app")

	t.Run("host process and hostNetwork pod are refused", func(t *testing.T) {
		hn := w.pod("hostnet", "app", map[string]string{"aadpodidbinding": "sel-a"}, w.net.hostIP, true)
		_ = hn
		req, _ := http.NewRequest(http.MethodGet, "http://"+net.JoinHostPort(w.net.hostIP.String(), strconv.Itoa(port))+tokenURL, nil)
		req.Header.Set("Metadata", "true")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusForbidden || !strings.Contains(string(b), "never get pod identities") {
			t.Fatalf("host caller: %d %s", res.StatusCode, b)
		}
	})

	t.Run("pod deleted and IP reused: the new pod never gets the old pod's token", func(t *testing.T) {
		nsR, ipR := w.net.addPod(t)
		old := w.pod("reuse-old", "app", map[string]string{"aadpodidbinding": "sel-a"}, ipR, false)
		if r := callSDK(t, nsR, "mi", vault, "", true); r.Error != "" || w.appID(r.Token, vault) != cidA {
			t.Fatalf("old pod: %+v", r)
		}
		// Same network namespace (same IP), new pod bound to nothing: every
		// answer from now on must be a denial until the new pod's own
		// identity exists, and then that identity only.
		if err := e.Client.Delete(ctx, old, client.GracePeriodSeconds(0)); err != nil {
			t.Fatal(err)
		}
		w.pod("reuse-new", "other", map[string]string{"aadpodidbinding": "sel-none"}, ipR, false)
		start := time.Now()
		for time.Since(start) < 3*time.Second {
			r := callSDK(t, nsR, "mi", vault, "", false)
			if r.Token != "" {
				t.Fatalf("new pod got a token (for %s) after the IP was reused", w.appID(r.Token, vault))
			}
		}
	})

	t.Run("agent stopped: pod traffic fails closed, nothing reaches the real IMDS", func(t *testing.T) {
		hits := standInIMDS(t)
		stop()
		r := callSDK(t, nsA, "mi", vault, "", false)
		if r.Token != "" || r.Error == "" {
			t.Fatalf("got %+v while the agent was down", r)
		}
		if hits.Load() != 0 {
			t.Fatalf("%d requests reached the stand-in metadata service", hits.Load())
		}
		// And after a restart the pod is served again.
		startAgent()
		if r := callSDK(t, nsA, "mi", vault, "", true); r.Error != "" || w.appID(r.Token, vault) != cidA {
			t.Fatalf("after restart: %+v", r)
		}
	})
}

// standInIMDS puts a listener on 169.254.169.254:80 on the host (a dummy
// bridge device) that counts connections: what pods would reach if interception
// failed open.
func standInIMDS(t *testing.T) *atomic.Int64 {
	t.Helper()
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	dev := "pidi" + hex.EncodeToString(b)
	run(t, "ip", "link", "add", dev, "type", "bridge")
	t.Cleanup(func() { _ = exec.Command("ip", "link", "del", dev).Run() })
	run(t, "ip", "addr", "add", "169.254.169.254/32", "dev", dev)
	run(t, "ip", "link", "set", dev, "up")
	ln, err := net.Listen("tcp", "169.254.169.254:80")
	if err != nil {
		t.Fatalf("stand-in metadata listener: %v", err)
	}
	var hits atomic.Int64
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		hits.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"access_token":"node-identity-token","expires_in":"3599","expires_on":"9999999999","resource":"x","token_type":"Bearer"}`))
	}), ConnState: func(net.Conn, http.ConnState) {}}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	// The stand-in answers host traffic (proving it is reachable).
	res, err := http.Get("http://169.254.169.254/metadata/identity/oauth2/token")
	if err != nil {
		t.Fatalf("stand-in unreachable from the host: %v", err)
	}
	res.Body.Close()
	hits.Store(0)
	return &hits
}

func waitIndexed(t *testing.T, w *world, ip netip.Addr) {
	t.Helper()
	// The agent's informer picks pods up within milliseconds; a short wait
	// keeps no-retry denial checks from racing it.
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		var pl corev1.PodList
		if err := env.Client.List(t.Context(), &pl); err == nil {
			for _, p := range pl.Items {
				if p.Status.PodIP == ip.String() {
					sleepCtx(t.Context(), 300*time.Millisecond)
					return
				}
			}
		}
		sleepCtx(t.Context(), 50*time.Millisecond)
	}
}

func waitUntil(t *testing.T, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
		sleepCtx(t.Context(), 50*time.Millisecond)
	}
}

// sleepCtx waits d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) {
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-ctx.Done():
	case <-tm.C:
	}
}

func issuerOfClusterTokens(t *testing.T, cs *kubernetes.Clientset, ns string) string {
	t.Helper()
	exp := int64(600)
	tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(t.Context(), "app",
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{Audiences: []string{"x"}, ExpirationSeconds: &exp}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("TokenRequest: %v", err)
	}
	tok, err := jwt.ParseSigned(tr.Status.Token, []jose.SignatureAlgorithm{jose.RS256, jose.ES256})
	if err != nil {
		t.Fatalf("service-account token: %v", err)
	}
	var c jwt.Claims
	if err := tok.UnsafeClaimsWithoutVerification(&c); err != nil {
		t.Fatalf("service-account token claims: %v", err)
	}
	if c.Issuer == "" {
		t.Fatal("no iss in service-account token")
	}
	return c.Issuer
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// apiServerIssuerTransport lets podid sts fetch the API server's issuer
// documents in this harness: discovery is not anonymous here (admin
// credentials), and the discovery document names the advertise address as
// the JWKS host while the API server only listens on 127.0.0.1.
func apiServerIssuerTransport(t *testing.T, e *testenv.Env) http.RoundTripper {
	t.Helper()
	adminRT, err := rest.TransportFor(e.Config)
	if err != nil {
		t.Fatal(err)
	}
	apiURL, err := url.Parse(e.Config.Host)
	if err != nil {
		t.Fatal(err)
	}
	return roundTripFunc(func(r *http.Request) (*http.Response, error) {
		r = r.Clone(r.Context())
		r.URL.Host, r.Host = apiURL.Host, ""
		// kube-apiserver answers 406 to "Accept: application/json" on
		// /openid/v1/jwks (it serves application/jwk-set+json), which is
		// what the sts's jwks package sends (reported to its owner).
		r.Header.Set("Accept", "application/jwk-set+json, application/json")
		return adminRT.RoundTrip(r)
	})
}

var localhost = netip.MustParseAddr("127.0.0.1")

func httpGet(u string) (int, error) {
	res, err := http.Get(u)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res.StatusCode, nil
}
