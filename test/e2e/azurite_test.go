package e2e

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue"
	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"

	podidv1 "github.com/podid/podid/api/v1"
	"github.com/podid/podid/internal/intercept"
	"github.com/podid/podid/test/e2e/framework"
)

const (
	queueClientImage = "localhost/podid-queueclient:dev"
	// azuriteServiceIP is hack/azurite.sh's AZURITE_SVC_IP, which
	// deploy/examples/queue-demo.yaml names.
	azuriteServiceIP = "10.96.0.110"
	queueDemo        = "deploy/examples/queue-demo.yaml"
	// devstoreKey is Azurite's well-known key of its default account
	// devstoreaccount1, published in Microsoft's docs.
	devstoreKey = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

// TestAzurite proves seed article 000's scenario on the real node against a
// real Azure Storage queue service, Azurite, as hack/cluster.sh runs it:
//
//	00 what runs: --oauth basic, TLS, on the bridge address, no --loose,
//	   no key on the command line; HTTPS only (plain HTTP gets no answer), a certificate from
//	   the cluster CA naming the Service address and *.queue.core.windows.net,
//	   --oauth basic really checking: no token, the wrong audience, another
//	   account's URL, an expired or not-yet-valid token, a v2 or foreign
//	   issuer, a non-JWT are refused (403); the well-known emulator key and
//	   account get nothing. A well-formed token signed by a key nobody trusts
//	   IS accepted: Azurite's basic mode does not check signatures (asserted,
//	   so docs/local-cluster.md stays true).
//	01 podid: sts (identity storageandbushandler, federated with the test
//	   namespace's default ServiceAccount), CRDs, webhook, agent.
//	02 deploy/examples/queue-demo.yaml as shipped (namespace and client id
//	   filled in): its v1 pod gets a Storage token through 169.254.169.254 and
//	   the agent, and sends and receives a message on Azurite with it.
//	03 a pod without the binding gets no token and never reaches the queue;
//	   a bound pod asking for a Key Vault token gets it, and Azurite refuses it.
func TestAzurite(t *testing.T) {
	c := framework.Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	if c.AzuriteAccountURL == "" || c.AzuriteAccount == "" || c.AzuriteAddr == "" {
		t.Fatalf("%s names no Azurite: the cluster predates it; hack/cluster.sh down && hack/cluster.sh up", framework.EnvFile())
	}
	if !nodeHasImage(ctx, t, c, queueClientImage) {
		t.Fatalf("image %s not imported: run hack/image.sh queueclient", queueClientImage)
	}
	az := newAzuriteProbe(t, c)

	// 00: Azurite on its own.
	t.Run("configuration", func(t *testing.T) {
		pid, err := os.ReadFile(filepath.Join(filepath.Dir(framework.EnvFile()), "pids", "azurite.pid"))
		must(t, err)
		raw, err := os.ReadFile("/proc/" + strings.TrimSpace(string(pid)) + "/cmdline")
		if err != nil {
			t.Fatalf("Azurite (pid %s) is not running: %v", strings.TrimSpace(string(pid)), err)
		}
		argv := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
		cmd := " " + strings.Join(argv, " ") + " "
		for _, want := range []string{"/queue/main.js ", " --oauth basic ", " --cert ", " --key ", " --queueHost " + strings.Split(c.AzuriteAddr, ":")[0] + " "} {
			if !strings.Contains(cmd, want) {
				t.Errorf("Azurite runs without %q: %s", strings.TrimSpace(want), cmd)
			}
		}
		for _, bad := range []string{"--loose", "--skipApiVersionCheck", "--disableProductStyleUrl", "AZURITE_ACCOUNTS"} {
			if strings.Contains(cmd, bad) {
				t.Errorf("Azurite runs with %s: %s", bad, cmd)
			}
		}
	})
	t.Run("https-only", func(t *testing.T) {
		for _, u := range []string{"http://" + c.AzuriteAddr + "/" + c.AzuriteAccount + "?comp=list", "http://" + azuriteServiceIP + ":443/" + c.AzuriteAccount + "?comp=list"} {
			resp, err := az.plain.Get(u)
			if err == nil {
				resp.Body.Close()
				t.Errorf("plain HTTP %s got an answer (%s): Azurite must serve HTTPS only", u, resp.Status)
			}
		}
	})
	t.Run("certificate", func(t *testing.T) {
		for _, tt := range []struct {
			name string
			ok   bool
		}{
			{azuriteServiceIP, true},
			{c.AzuriteAccount + ".queue.core.windows.net", true},
			{"azurite.podid-local.svc", true},
			{"login.microsoftonline.com", false},
		} {
			conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", azuriteServiceIP+":443",
				&tls.Config{RootCAs: az.roots, ServerName: tt.name, MinVersion: tls.VersionTLS12})
			if err == nil {
				conn.Close()
			}
			if (err == nil) != tt.ok {
				t.Errorf("TLS to the Service as %s: err=%v, want ok=%v", tt.name, err, tt.ok)
			}
		}
	})
	t.Run("oauth-basic-checks", func(t *testing.T) {
		tid := wiTenantID
		v1 := "https://sts.windows.net/" + tid + "/"
		now := time.Now()
		good := map[string]any{"iss": v1, "aud": "https://storage.azure.com", "iat": now.Add(-5 * time.Minute).Unix(),
			"nbf": now.Add(-5 * time.Minute).Unix(), "exp": now.Add(time.Hour).Unix(), "tid": tid, "ver": "1.0"}
		with := func(k string, v any) map[string]any {
			m := map[string]any{}
			for kk, vv := range good {
				m[kk] = vv
			}
			if v == nil {
				delete(m, k)
			} else {
				m[k] = v
			}
			return m
		}
		for _, tt := range []struct {
			name, auth string
			want       int
			detail     string // Storage's AuthenticationErrorDetail
		}{
			{"no credentials", "", 403, ""},
			{"audience of another resource", "Bearer " + az.forge(t, with("aud", "https://vault.azure.net")), 403, "Invalid token audience."},
			{"another account's URL", "Bearer " + az.forge(t, with("aud", "https://someoneelse.queue.core.windows.net")), 403, "Invalid token audience."},
			{"expired", "Bearer " + az.forge(t, with("exp", now.Add(-time.Minute).Unix())), 403, "Lifetime validation failed. The token is expired."},
			{"not yet valid", "Bearer " + az.forge(t, with("nbf", now.Add(time.Hour).Unix())), 403, "Lifetime validation failed."},
			{"no iat", "Bearer " + az.forge(t, with("iat", nil)), 403, "Authentication scheme Bearer is not supported."},
			{"v2 issuer", "Bearer " + az.forge(t, with("iss", "https://login.microsoftonline.com/"+tid+"/v2.0")), 403, "Invalid token issuer."},
			{"foreign issuer", "Bearer " + az.forge(t, with("iss", "https://sts.evil.example/"+tid+"/")), 403, "Invalid token issuer."},
			{"not a JWT", "Bearer not-a-jwt", 403, "Authentication scheme Bearer is not supported."},
			// The one thing basic mode does not check: the signature. Proves
			// OAuth is on (without it every Bearer request is refused) and
			// pins what docs/local-cluster.md says.
			{"well-formed, signed by an untrusted key", "Bearer " + az.forge(t, good), 200, ""},
			{"account URL audience", "Bearer " + az.forge(t, with("aud", "https://"+c.AzuriteAccount+".queue.core.windows.net")), 200, ""},
		} {
			status, detail := az.listQueues(ctx, t, c.AzuriteAccountURL, tt.auth)
			if status != tt.want || detail != tt.detail {
				t.Errorf("%s: %d %q, want %d %q", tt.name, status, detail, tt.want, tt.detail)
			}
		}
		// The production-style URL (the account in the host) on the same
		// Service: what the demo uses once the cluster resolves Azure's names.
		status, _ := az.listQueues(ctx, t, "https://"+c.AzuriteAccount+".queue.core.windows.net", "Bearer "+az.forge(t, good))
		if status != 200 {
			t.Errorf("production-style URL: %d, want 200", status)
		}
	})
	t.Run("shared-key-gets-nothing", func(t *testing.T) {
		for _, account := range []string{"devstoreaccount1", c.AzuriteAccount} {
			cred, err := azqueue.NewSharedKeyCredential(account, devstoreKey)
			must(t, err)
			u := strings.TrimSuffix(c.AzuriteAccountURL, "/"+c.AzuriteAccount) + "/" + account
			sc, err := azqueue.NewServiceClientWithSharedKeyCredential(u, cred, &azqueue.ClientOptions{ClientOptions: az.sdkOptions()})
			must(t, err)
			_, err = sc.GetServiceProperties(ctx, nil)
			var re *azcore.ResponseError
			// 404: no such account; 400 InvalidAuthenticationInfo: the key
			// does not match, and with OAuth on Azurite then wants Bearer.
			if !errors.As(err, &re) || (re.StatusCode != 400 && re.StatusCode != 403 && re.StatusCode != 404) {
				t.Errorf("shared key %s with the well-known emulator key: %v, want 400, 403 or 404", account, err)
			} else {
				t.Logf("shared key %s with the well-known emulator key: %d %s", account, re.StatusCode, re.ErrorCode)
			}
		}
	})
	if t.Failed() {
		t.FailNow()
	}

	// 01: podid.
	ns := c.Namespace(t)
	id := wiWorkload{name: "storageandbushandler", sa: "storageandbushandler", fic: true, clientID: newUUID(t),
		subject: "system:serviceaccount:" + ns + ":default"}
	start := time.Now()
	ensureNamespace(ctx, t, c, stsNamespace)
	// No role assignment: Storage roles are Azure RBAC, never token claims
	// (docs/sts.md), and Azurite does not check them (docs/local-cluster.md).
	stsPodIP := deploySTS(ctx, t, c, []wiWorkload{id})
	_, caPEM := stsClientTransport(ctx, t, stsPodIP)
	applyCRDs(ctx, t, c)
	rules := nodeInterceptor(t, c)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), framework.PodTimeout+30*time.Second)
		defer cancel()
		deleteAgent(ctx, t, c)
		if err := rules.Uninstall(ctx); err != nil {
			t.Errorf("remove the agent's interception rules from the node: %v", err)
		}
		if g, err := intercept.NewGuard(intercept.GuardConfig{}); err != nil || g.Uninstall(ctx) != nil {
			t.Errorf("remove the agent's anti-spoofing rules from the node: %v", err)
		}
	})
	deployWebhook(ctx, t, c)
	deployAgent(ctx, t, c, caPEM)
	t.Logf("01 sts, CRDs, webhook, agent ready (%s)", time.Since(start).Round(time.Millisecond))

	// 02: seed 000's manifest.
	objs := queueDemoObjects(t, c, ns, id.clientID)
	applyObjects(ctx, t, c, objs)
	pod := waitForPodOf(ctx, t, c, ns, "app=busandstoragemessagehandlers")
	logs := waitForLog(ctx, t, c, ns, pod.Name, "queueclient: result ")
	claims, result := lineWith(logs, "queueclient: key claims "), lineWith(logs, "queueclient: result ")
	t.Logf("%s\n%s", claims, result)
	if !strings.HasSuffix(result, " ok") || !strings.Contains(result, "queue=myqueue-items account="+c.AzuriteAccount+" ") {
		t.Fatalf("seed 000's queue round trip failed: %s\nlog:\n%s", result, logs)
	}
	for _, want := range []string{"aud=" + wiResource + " ", "tid=" + wiTenantID + " ", "roles=-"} {
		if !strings.Contains(claims, want) {
			t.Errorf("key claims %q lack %q", claims, want)
		}
	}
	if strings.Contains(logs, "eyJ") {
		t.Error("the queue client printed something token-like")
	}

	// 03: the adversaries.
	t.Run("no-binding-no-token", func(t *testing.T) {
		p := queueClientPod(ns, "unbound", nil, "-max-retries=-1")
		p = c.CreatePod(ctx, t, p)
		logs := waitForLog(ctx, t, c, ns, p.Name, "no identity is assigned to pod "+ns+"/"+p.Name)
		if strings.Contains(logs, "token acquired") || strings.Contains(logs, "queueclient: result") {
			t.Fatalf("a pod without a binding got a token or reached the queue:\n%s", logs)
		}
		t.Logf("%s", lineWith(logs, "GetToken failed"))
	})
	t.Run("wrong-audience-refused-by-azurite", func(t *testing.T) {
		p := queueClientPod(ns, "vault-token", map[string]string{podidv1.PodLabelKey: "storageandbushandler"}, "-audience", "https://vault.azure.net")
		p = c.CreatePod(ctx, t, p)
		logs := waitForLog(ctx, t, c, ns, p.Name, "queueclient: result ")
		claims, result := lineWith(logs, "queueclient: key claims "), lineWith(logs, "queueclient: result ")
		if !strings.Contains(claims, "aud=https://vault.azure.net ") {
			t.Fatalf("the pod did not get its Key Vault token: %s\n%s", claims, logs)
		}
		if !strings.Contains(result, `failed op="create queue" status=403 code=AuthenticationFailed detail="Invalid token audience."`) {
			t.Fatalf("Azurite did not refuse a Key Vault token: %s", result)
		}
		t.Logf("%s", result)
	})
}

// queueDemoObjects is deploy/examples/queue-demo.yaml for namespace ns and
// the identity clientID: its own Namespace left out, every other object moved
// to ns, the placeholders filled. The Secret's URL must be this cluster's.
func queueDemoObjects(t *testing.T, c *framework.Cluster, ns, clientID string) []*unstructured.Unstructured {
	t.Helper()
	b, err := os.ReadFile(framework.RepoRoot() + "/" + queueDemo)
	must(t, err)
	s := strings.NewReplacer("__QUEUE_CLIENT_ID__", clientID, "__SUBSCRIPTION_ID__", "0b1f6471-1bf0-4dda-aec3-cb9272f09590").Replace(string(b))
	all, err := framework.DecodeManifest([]byte(s))
	must(t, err)
	var objs []*unstructured.Unstructured
	kinds := map[string]bool{}
	for _, o := range all {
		kinds[o.GetKind()] = true
		if o.GetKind() == "Namespace" {
			continue
		}
		if o.GetKind() == "Secret" {
			u, _, _ := unstructured.NestedString(o.Object, "stringData", "AzureWebJobsStorage__queueServiceUri")
			if u != c.AzuriteAccountURL {
				t.Fatalf("%s: queueServiceUri %q, but the cluster's Azurite is at %q (hack/azurite.sh)", queueDemo, u, c.AzuriteAccountURL)
			}
		}
		o.SetNamespace(ns)
		objs = append(objs, o)
	}
	for _, k := range []string{"Secret", "AzureIdentity", "AzureIdentityBinding", "Deployment"} {
		if !kinds[k] {
			t.Fatalf("%s has no %s", queueDemo, k)
		}
	}
	return objs
}

// queueClientPod runs queueclient as the namespace's default ServiceAccount
// with the demo's Secret and CA, extra labels and args.
func queueClientPod(ns, name string, labels map[string]string, args ...string) *corev1.Pod {
	l := map[string]string{"app": name}
	for k, v := range labels {
		l[k] = v
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: l},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: ptr.To[int64](1),
			Containers: []corev1.Container{{
				Name: "client", Image: queueClientImage, ImagePullPolicy: corev1.PullNever,
				Command: append([]string{"/queueclient"}, args...),
				EnvFrom: []corev1.EnvFromSource{{SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "misecret"}}}},
				Env:     []corev1.EnvVar{{Name: "SSL_CERT_FILE", Value: "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"}},
			}},
		},
	}
}

// azuriteProbe talks to the node's Azurite from the host as an outside
// client would: TLS under the cluster CA, and no name resolution at all
// (*.queue.core.windows.net is dialled at the Service address).
type azuriteProbe struct {
	roots    *x509.CertPool
	client   *http.Client
	plain    *http.Client
	forgeKey *rsa.PrivateKey
}

func newAzuriteProbe(t *testing.T, c *framework.Cluster) *azuriteProbe {
	t.Helper()
	pemBytes, err := os.ReadFile(c.CAFile)
	must(t, err)
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pemBytes) {
		t.Fatalf("no certificate in %s", c.CAFile)
	}
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		if net.ParseIP(host) == nil {
			if !strings.HasSuffix(host, ".queue.core.windows.net") {
				return nil, fmt.Errorf("refusing to resolve %s", host)
			}
			addr = azuriteServiceIP + ":443"
		}
		return dialer.DialContext(ctx, network, addr)
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	must(t, err)
	tr := &http.Transport{DialContext: dial, TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}}
	plainTr := &http.Transport{DialContext: dial}
	t.Cleanup(tr.CloseIdleConnections)
	t.Cleanup(plainTr.CloseIdleConnections)
	return &azuriteProbe{roots: roots, forgeKey: key,
		client: &http.Client{Timeout: 10 * time.Second, Transport: tr},
		plain:  &http.Client{Timeout: 10 * time.Second, Transport: plainTr}}
}

// forge signs claims with a key no identity provider has.
func (a *azuriteProbe) forge(t *testing.T, claims map[string]any) string {
	t.Helper()
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: a.forgeKey}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", "forged"))
	must(t, err)
	tok, err := jwt.Signed(sig).Claims(claims).Serialize()
	must(t, err)
	return tok
}

func (a *azuriteProbe) sdkOptions() azcore.ClientOptions {
	return azcore.ClientOptions{Transport: a.client, Retry: policy.RetryOptions{MaxRetries: -1}}
}

// listQueues sends List Queues (read-only) with the Authorization header
// auth and returns the status and Storage's AuthenticationErrorDetail.
func (a *azuriteProbe) listQueues(ctx context.Context, t *testing.T, accountURL, auth string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, accountURL+"?comp=list", nil)
	must(t, err)
	req.Header.Set("x-ms-version", "2018-03-28")
	req.Header.Set("x-ms-date", time.Now().UTC().Format(http.TimeFormat))
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := a.client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", req.URL.Redacted(), err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	_, rest, _ := strings.Cut(string(b), "<AuthenticationErrorDetail>")
	detail, _, _ := strings.Cut(rest, "</AuthenticationErrorDetail>")
	return resp.StatusCode, detail
}
