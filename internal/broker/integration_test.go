package broker

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
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/go-logr/logr"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	crlog "sigs.k8s.io/controller-runtime/pkg/log"

	podidv1 "github.com/podid/podid/api/v1"
	"github.com/podid/podid/internal/pki"
	"github.com/podid/podid/internal/sts"
	"github.com/podid/podid/internal/sts/jwks"
	"github.com/podid/podid/internal/sts/ststest"
	"github.com/podid/podid/internal/sts/tokenverify"
	"github.com/podid/podid/internal/testenv"
	"github.com/podid/podid/internal/token"
	"github.com/podid/podid/internal/workloadidentity"
)

var env *testenv.Env

func TestMain(m *testing.M) {
	crlog.SetLogger(logr.Discard())
	os.Exit(testenv.Main(m, &env, testenv.Options{}))
}

const (
	brokerNS = "podid-system"
	brokerSA = "podid-broker"
	node     = "node-1"
)

// rig is a running broker on the envtest API server, exchanging at a real
// podid sts that trusts the API server's service-account issuer.
type rig struct {
	t      testing.TB
	e      *testenv.Env
	admin  *kubernetes.Clientset
	sts    *ststest.Server
	issuer string
	url    string
	http   *http.Client
	verify *tokenverify.Verifier
	// agentToken is the node's agent's own token (AgentAudience), in the
	// file agentTokenFile as the kubelet projects it.
	agentToken, agentTokenFile string
	idp                        atomic.Int64 // token requests the sts received from the broker
	reviews                    atomic.Int64 // TokenReviews the broker created
	stop                       func()       // stops the broker
}

func newRig(t testing.TB) *rig {
	t.Helper()
	return newRigWith(t, rigConfig{})
}

// rigConfig varies a rig.
type rigConfig struct {
	// secrets: the broker serves types 1/2 (and runs with that RBAC too).
	secrets bool
	// bootstrap adds to the sts's default tenant.
	bootstrap *sts.Bootstrap
}

func newRigWith(t testing.TB, rc rigConfig) *rig {
	t.Helper()
	e := env.Need(t)
	ctx := t.Context()
	r := &rig{t: t, e: e}
	var err error
	if r.admin, err = kubernetes.NewForConfig(e.Config); err != nil {
		t.Fatal(err)
	}
	ensureNamespace(t, r.admin, brokerNS)
	applyManifest(t, e, "deploy/broker/rbac.yaml") // the shipped RBAC, and nothing more
	if rc.secrets {
		applyManifest(t, e, "deploy/broker/rbac-secrets.yaml")
		t.Cleanup(func() { // the other tests hold the broker to no Secret access
			_ = r.admin.RbacV1().ClusterRoleBindings().Delete(context.Background(), "podid-broker-secrets", metav1.DeleteOptions{})
			_ = r.admin.RbacV1().ClusterRoles().Delete(context.Background(), "podid-broker-secrets", metav1.DeleteOptions{})
		})
	}
	self := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{GenerateName: "podid-broker-", Namespace: brokerNS},
		Spec: corev1.PodSpec{NodeName: node, ServiceAccountName: brokerSA, Containers: []corev1.Container{{Name: "broker", Image: "localhost/podid:dev"}}}}
	if self, err = r.admin.CoreV1().Pods(brokerNS).Create(ctx, self, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = r.admin.CoreV1().Pods(brokerNS).Delete(context.Background(), self.Name, metav1.DeleteOptions{})
	})
	// The broker's own projected token, as the kubelet writes it.
	own := mint(t, r.admin, self, workloadidentity.TokenAudience, 3600)
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(own), 0o600); err != nil {
		t.Fatal(err)
	}
	r.issuer = issuerOf(t, own)
	// The agent of node: its pod and its projected token for the broker.
	r.agentToken = r.agentOn(node)
	r.agentTokenFile = filepath.Join(dir, "agent-token")
	if err := os.WriteFile(r.agentTokenFile, []byte(r.agentToken), 0o600); err != nil {
		t.Fatal(err)
	}
	// The broker's API credential: its pod's default projected token.
	brokerRC := credentialOf(t, r.admin, self)

	ext := apiServerIssuerTransport(t, e)
	r.sts = ststest.Start(t, ststest.Options{Bootstrap: rc.bootstrap, Configure: func(c *sts.Config) { c.ExternalTransport = ext }})
	keys := jwks.New(jwks.Config{Trust: jwks.Trust{Global: r.sts.CAPool}})
	if r.verify, err = tokenverify.New(tokenverify.Config{JWKSURL: r.sts.JWKSURL(), Keys: keys,
		Issuers:   []string{r.sts.V1Issuer(), r.sts.URL + "/" + r.sts.TenantID + "/v2.0"},
		Audiences: []string{"https://vault.azure.net", "https://storage.azure.com"}}); err != nil {
		t.Fatal(err)
	}
	stsRT := r.sts.Transport()
	idpClient := &http.Client{Timeout: 30 * time.Second, Transport: roundTripFunc(func(q *http.Request) (*http.Response, error) {
		if q.Method == http.MethodPost && strings.HasSuffix(q.URL.Path, "/token") {
			r.idp.Add(1)
		}
		return stsRT.RoundTrip(q)
	})}

	// Serving certificate for 127.0.0.1.
	ca, err := pki.NewCA("broker test CA", time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.IssueServing([]string{"127.0.0.1"}, time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if err := os.WriteFile(certFile, leaf.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, leaf.KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	r.http = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, MaxIdleConnsPerHost: 64}}

	krc := brokerRC
	krc.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(q *http.Request) (*http.Response, error) {
			if q.Method == http.MethodPost && strings.HasSuffix(q.URL.Path, "/tokenreviews") {
				r.reviews.Add(1)
			}
			return rt.RoundTrip(q)
		})
	})
	listen, health := freeAddr(t), freeAddr(t)
	r.url = "https://" + listen
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Config{RESTConfig: krc, ServeSecretIdentities: rc.secrets, ListenAddr: listen, HealthAddr: health, TLSCertFile: certFile, TLSKeyFile: keyFile,
			TokenFile: tokenFile, Authority: r.sts.URL, ProviderHTTPClient: idpClient, DefaultTenantID: r.sts.TenantID,
			Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))})
	}()
	var once sync.Once
	r.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("broker: %v", err)
			}
		})
	}
	t.Cleanup(r.stop)
	deadline := time.Now().Add(30 * time.Second)
	for {
		res, err := http.Get("http://" + health + "/readyz")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("broker not ready within 30s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return r
}

// agentOn runs an agent pod (service account podid-agent) on nodeName and
// returns its token for AgentAudience.
func (r *rig) agentOn(nodeName string) string {
	r.t.Helper()
	ensureServiceAccount(r.t, r.admin, brokerNS, "podid-agent")
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{GenerateName: "podid-agent-", Namespace: brokerNS},
		Spec: corev1.PodSpec{NodeName: nodeName, ServiceAccountName: "podid-agent", HostNetwork: true, Containers: []corev1.Container{{Name: "agent", Image: "localhost/podid:dev"}}}}
	p, err := r.admin.CoreV1().Pods(brokerNS).Create(r.t.Context(), p, metav1.CreateOptions{})
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() {
		_ = r.admin.CoreV1().Pods(brokerNS).Delete(context.Background(), p.Name, metav1.DeleteOptions{})
	})
	return mint(r.t, r.admin, p, AgentAudience, 3600)
}

// identity creates an identity at the sts whose one federated credential
// names the broker's service account.
func (r *rig) identity(name string) string {
	return r.sts.AddIdentity(r.t, name+"-"+fmt.Sprint(time.Now().UnixNano()), r.issuer, "system:serviceaccount:"+brokerNS+":"+brokerSA)
}

// grant lets subject use clientID through the broker (the AKS model).
func (r *rig) grant(ns string, clientID string, subject rbacv1.Subject) {
	r.t.Helper()
	ctx := r.t.Context()
	name := "use-" + strings.ToLower(clientID)
	_, _ = r.admin.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: name},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{AccessGroup}, Resources: []string{strings.ToLower(clientID)}, Verbs: []string{AccessVerb}}}}, metav1.CreateOptions{})
	if _, err := r.admin.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{GenerateName: "use-"},
		RoleRef: rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: name}, Subjects: []rbacv1.Subject{subject}}, metav1.CreateOptions{}); err != nil {
		r.t.Fatal(err)
	}
	// The RBAC authorizer reads through informers: wait until it sees the
	// grant, so the broker's first (remembered) answer is the granted one.
	user, groups := "system:serviceaccount:"+subject.Namespace+":"+subject.Name, []string{"system:serviceaccounts", "system:serviceaccounts:" + ns}
	if subject.Kind == "Group" {
		user, groups = "system:serviceaccount:"+ns+":probe", []string{subject.Name}
	}
	waitFor(r.t, 10*time.Second, func() bool {
		sar, err := r.admin.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User: user, Groups: groups, ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: ns, Group: AccessGroup, Resource: strings.ToLower(clientID), Verb: AccessVerb}}}, metav1.CreateOptions{})
		return err == nil && sar.Status.Allowed
	})
}

// v1Identity creates an AzureIdentity and a binding selecting selector.
func (r *rig) v1Identity(ns, name, clientID, selector string) {
	r.t.Helper()
	ctx := r.t.Context()
	if err := r.e.Client.Create(ctx, &podidv1.AzureIdentity{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: podidv1.AzureIdentitySpec{Type: podidv1.UserAssignedMSI, ClientID: clientID, TenantID: r.sts.TenantID}}); err != nil {
		r.t.Fatal(err)
	}
	if err := r.e.Client.Create(ctx, &podidv1.AzureIdentityBinding{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: podidv1.AzureIdentityBindingSpec{AzureIdentity: name, Selector: selector}}); err != nil {
		r.t.Fatal(err)
	}
}

func (r *rig) pod(ns, name, sa string, labels map[string]string) *corev1.Pod {
	r.t.Helper()
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels},
		Spec: corev1.PodSpec{NodeName: node, ServiceAccountName: sa, Containers: []corev1.Container{{Name: "c", Image: "localhost/none:dev"}}}}
	p, err := r.admin.CoreV1().Pods(ns).Create(r.t.Context(), p, metav1.CreateOptions{})
	if err != nil {
		r.t.Fatal(err)
	}
	return p
}

// ask posts a raw request to the broker, as the agent of node, and returns
// status and body.
func (r *rig) ask(bearer string, body string) (int, []byte) {
	r.t.Helper()
	return r.askAs(r.agentToken, bearer, body)
}

// askAs posts a raw request with agent as the agent's token (none: "").
func (r *rig) askAs(agent, bearer string, body string) (int, []byte) {
	r.t.Helper()
	req, err := http.NewRequestWithContext(r.t.Context(), http.MethodPost, r.url+Path, strings.NewReader(body))
	if err != nil {
		r.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	if agent != "" {
		req.Header.Set(AgentHeader, agent)
	}
	res, err := r.http.Do(req)
	if err != nil {
		r.t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, b
}

func (r *rig) body(clientID, resource string) string {
	b, _ := json.Marshal(TokenRequest{ClientID: clientID, Resource: resource})
	return string(b)
}

// appID verifies an access token as a resource server would.
func (r *rig) appID(tok, resource string) string {
	r.t.Helper()
	c, err := r.verify.Verify(r.t.Context(), tok)
	if err != nil {
		r.t.Fatalf("token does not verify: %v", err)
	}
	if len(c.Audience) != 1 || c.Audience[0] != resource {
		r.t.Fatalf("aud = %v, want %s", c.Audience, resource)
	}
	return c.AppID
}

func TestBroker(t *testing.T) {
	r := newRig(t)
	ctx := t.Context()
	ns := r.e.Namespace(t)
	vault := "https://vault.azure.net"

	cidV2 := r.identity("v2")
	cidV1 := r.identity("v1")
	cidNoGrant := r.identity("nogrant")
	cidNoFIC := r.sts.AddIdentity(t, fmt.Sprintf("nofic-%d", time.Now().UnixNano()), "", "")

	// v2: a service account annotated with the identity, granted by RBAC.
	for sa, cid := range map[string]string{"app": cidV2, "nogrant": cidNoGrant, "nofic": cidNoFIC} {
		if _, err := r.admin.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa, Namespace: ns,
			Annotations: map[string]string{workloadidentity.ClientIDAnnotation: cid}}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	ensureServiceAccount(t, r.admin, ns, "v1")
	r.grant(ns, cidV2, rbacv1.Subject{Kind: "ServiceAccount", Name: "app", Namespace: ns})
	r.grant(ns, cidNoFIC, rbacv1.Subject{Kind: "ServiceAccount", Name: "nofic", Namespace: ns})
	// v1: a binding, and the namespace's service accounts granted as a group.
	if err := r.e.Client.Create(ctx, &podidv1.AzureIdentity{ObjectMeta: metav1.ObjectMeta{Name: "id1", Namespace: ns},
		Spec: podidv1.AzureIdentitySpec{Type: podidv1.UserAssignedMSI, ClientID: cidV1, TenantID: r.sts.TenantID}}); err != nil {
		t.Fatal(err)
	}
	if err := r.e.Client.Create(ctx, &podidv1.AzureIdentityBinding{ObjectMeta: metav1.ObjectMeta{Name: "id1", Namespace: ns},
		Spec: podidv1.AzureIdentityBindingSpec{AzureIdentity: "id1", Selector: "sel1"}}); err != nil {
		t.Fatal(err)
	}
	r.grant(ns, cidV1, rbacv1.Subject{Kind: "Group", Name: "system:serviceaccounts:" + ns})

	wi := map[string]string{workloadidentity.UseLabel: "true"}
	podV2 := r.pod(ns, "v2", "app", wi)
	podV1 := r.pod(ns, "v1", "v1", map[string]string{podidv1.PodLabelKey: "sel1"})
	podNoGrant := r.pod(ns, "nogrant", "nogrant", wi)
	podNoFIC := r.pod(ns, "nofic", "nofic", wi)
	podNoBinding := r.pod(ns, "nobinding", "v1", map[string]string{podidv1.PodLabelKey: "other"})

	t.Run("allowed-v2-via-rbac", func(t *testing.T) {
		st, b := r.ask(mint(t, r.admin, podV2, Audience, 600), r.body(cidV2, vault+"/.default"))
		if st != http.StatusOK {
			t.Fatalf("status %d: %s", st, b)
		}
		var tr TokenResponse
		if err := json.Unmarshal(b, &tr); err != nil {
			t.Fatal(err)
		}
		if got := r.appID(tr.AccessToken, vault); got != cidV2 {
			t.Fatalf("appid %s, want %s", got, cidV2)
		}
		if tr.Resource != vault || tr.ExpiresOn < time.Now().Add(10*time.Minute).Unix() {
			t.Fatalf("answer %+v", tr)
		}
	})
	t.Run("allowed-v1-binding", func(t *testing.T) {
		st, b := r.ask(mint(t, r.admin, podV1, Audience, 600), r.body(cidV1, vault))
		if st != http.StatusOK {
			t.Fatalf("status %d: %s", st, b)
		}
		var tr TokenResponse
		_ = json.Unmarshal(b, &tr)
		if got := r.appID(tr.AccessToken, vault); got != cidV1 {
			t.Fatalf("appid %s, want %s", got, cidV1)
		}
	})

	refusals := []struct {
		name   string
		bearer func() string
		body   string
		status int
		code   string
		says   string
	}{
		{"no-rbac-grant", func() string { return mint(t, r.admin, podNoGrant, Audience, 600) }, r.body(cidNoGrant, vault), 403, CodeAccessDenied, AccessVerb},
		{"no-binding", func() string { return mint(t, r.admin, podNoBinding, Audience, 600) }, r.body(cidV1, vault), 403, CodeAccessDenied, "no identity is assigned"},
		{"other-pods-identity", func() string { return mint(t, r.admin, podV1, Audience, 600) }, r.body(cidV2, vault), 403, CodeAccessDenied, "not assigned"},
		{"exchange-audience-token", func() string { return mint(t, r.admin, podV2, workloadidentity.TokenAudience, 600) }, r.body(cidV2, vault), 401, CodeInvalidToken, "rejected"},
		{"not-pod-bound", func() string { return unbound(t, r.admin, ns, "app") }, r.body(cidV2, vault), 401, CodeInvalidToken, "not bound to a pod"},
		{"garbage-token", func() string { return "a.b.c" }, r.body(cidV2, vault), 401, CodeInvalidToken, "rejected"},
		{"no-federated-credential", func() string { return mint(t, r.admin, podNoFIC, Audience, 600) }, r.body(cidNoFIC, vault), 404, CodeNoCredential, brokerSA},
		{"unknown-field", func() string { return mint(t, r.admin, podV2, Audience, 600) }, `{"clientID":"` + cidV2 + `","resource":"x","scope":"y"}`, 400, CodeInvalidRequest, "unknown field"},
		{"trailing-data", func() string { return mint(t, r.admin, podV2, Audience, 600) }, r.body(cidV2, vault) + "{}", 400, CodeInvalidRequest, "after the JSON"},
		{"client-id-not-guid", func() string { return mint(t, r.admin, podV2, Audience, 600) }, `{"clientID":"nope","resource":"x"}`, 400, CodeInvalidRequest, "GUID"},
		{"resource-whitespace", func() string { return mint(t, r.admin, podV2, Audience, 600) }, `{"clientID":"` + cidV2 + `","resource":"a b"}`, 400, CodeInvalidRequest, "whitespace"},
		{"huge-body", func() string { return mint(t, r.admin, podV2, Audience, 600) }, `{"clientID":"` + strings.Repeat("a", 5000) + `"}`, 400, CodeInvalidRequest, "larger"},
		{"no-token", func() string { return "" }, r.body(cidV2, vault), 401, CodeInvalidToken, "Authorization"},
	}
	for _, c := range refusals {
		t.Run(c.name, func(t *testing.T) {
			st, b := r.ask(c.bearer(), c.body)
			var er ErrorResponse
			if err := json.Unmarshal(b, &er); err != nil {
				t.Fatalf("status %d, body not JSON: %s", st, b)
			}
			if st != c.status || er.Code != c.code || !strings.Contains(er.Description, c.says) {
				t.Fatalf("got %d %s %q, want %d %s containing %q", st, er.Code, er.Description, c.status, c.code, c.says)
			}
		})
	}

	// The presenting agent: only the podid agent's own pod-bound token
	// for AgentAudience, and only for pods of its node.
	agentOfNode2 := r.agentOn("node-2")
	agentPods, _ := r.admin.CoreV1().Pods(brokerNS).List(ctx, metav1.ListOptions{})
	var agentPod *corev1.Pod
	for i := range agentPods.Items {
		if p := &agentPods.Items[i]; p.Spec.ServiceAccountName == "podid-agent" && p.Spec.NodeName == node {
			agentPod = p
		}
	}
	if agentPod == nil {
		t.Fatal("the rig's agent pod is missing")
	}
	agents := []struct {
		name   string
		agent  func() string
		status int
		code   string
		says   string
	}{
		{"no-agent-token", func() string { return "" }, 401, CodeInvalidToken, AgentHeader},
		{"agent-token-of-a-workload", func() string { return mint(t, r.admin, podV2, AgentAudience, 600) }, 403, CodeAccessDenied, "not the podid agent's"},
		{"agent-token-for-the-pod-audience", func() string { return mint(t, r.admin, agentPod, Audience, 600) }, 401, CodeInvalidToken, "agent token rejected"},
		{"agent-token-not-pod-bound", func() string { return unboundFor(t, r.admin, brokerNS, "podid-agent", AgentAudience) }, 401, CodeInvalidToken, "not bound to a pod"},
		{"agent-of-another-node", func() string { return agentOfNode2 }, 403, CodeAccessDenied, "runs on node " + node + ", but the agent presenting its token"},
	}
	for _, c := range agents {
		t.Run(c.name, func(t *testing.T) {
			st, b := r.askAs(c.agent(), mint(t, r.admin, podV2, Audience, 600), r.body(cidV2, vault))
			var er ErrorResponse
			if err := json.Unmarshal(b, &er); err != nil {
				t.Fatalf("status %d, body not JSON: %s", st, b)
			}
			if st != c.status || er.Code != c.code || !strings.Contains(er.Description, c.says) {
				t.Fatalf("got %d %s %q, want %d %s containing %q", st, er.Code, er.Description, c.status, c.code, c.says)
			}
		})
	}

	t.Run("pod-gone-and-replaced", func(t *testing.T) {
		p := r.pod(ns, "shortlived", "app", wi)
		tok := mint(t, r.admin, p, Audience, 600)
		if err := r.admin.CoreV1().Pods(ns).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
			t.Fatal(err)
		}
		waitGone(t, r.admin, ns, p.Name)
		st, b := r.ask(tok, r.body(cidV2, vault))
		if st != http.StatusUnauthorized {
			t.Fatalf("gone pod: %d %s", st, b)
		}
		// A namesake with another UID: the old token is still refused.
		r.pod(ns, "shortlived", "app", wi)
		st, b = r.ask(tok, r.body(cidV2, vault))
		if st != http.StatusUnauthorized {
			t.Fatalf("replaced pod: %d %s", st, b)
		}
	})
}

// Many pods of one identity cost one exchange at the identity provider,
// and each pod token one TokenReview, however often it asks.
func TestBrokerCaches(t *testing.T) {
	r := newRig(t)
	ctx := t.Context()
	ns := r.e.Namespace(t)
	cid := r.identity("shared")
	if _, err := r.admin.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "app", Namespace: ns,
		Annotations: map[string]string{workloadidentity.ClientIDAnnotation: cid}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	r.grant(ns, cid, rbacv1.Subject{Kind: "ServiceAccount", Name: "app", Namespace: ns})
	const pods = 40
	var toks []string
	for i := range pods {
		p := r.pod(ns, fmt.Sprintf("p%d", i), "app", map[string]string{workloadidentity.UseLabel: "true"})
		toks = append(toks, mint(t, r.admin, p, Audience, 600))
	}
	idp0, rev0 := r.idp.Load(), r.reviews.Load()
	for round := range 3 {
		var wg sync.WaitGroup
		errs := make(chan string, pods)
		for _, tok := range toks {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if st, b := r.ask(tok, r.body(cid, "https://storage.azure.com")); st != http.StatusOK {
					errs <- fmt.Sprintf("round %d: %d %s", round, st, b)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for e := range errs {
			t.Fatal(e)
		}
	}
	if got := r.idp.Load() - idp0; got != 1 {
		t.Errorf("identity-provider calls for %d pods x 3 rounds of one identity: %d, want 1", pods, got)
	}
	// One per pod token, and one for the agent's own token (the same for
	// every request of the node's agent).
	if got := r.reviews.Load() - rev0; got != pods+1 {
		t.Errorf("TokenReviews for %d pod tokens x 3 rounds from one agent: %d, want %d", pods, got, pods+1)
	}
	// Another resource is another token: one more call.
	if st, b := r.ask(toks[0], r.body(cid, "https://vault.azure.net")); st != http.StatusOK {
		t.Fatalf("%d %s", st, b)
	}
	if got := r.idp.Load() - idp0; got != 2 {
		t.Errorf("identity-provider calls after a second resource: %d, want 2", got)
	}
}

// The agent's side: the Client mints the pod's broker token with the
// TokenRequest API and passes refusals on as typed token errors.
func TestClient(t *testing.T) {
	r := newRig(t)
	ctx := t.Context()
	ns := r.e.Namespace(t)
	cid := r.identity("client")
	if _, err := r.admin.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "app", Namespace: ns,
		Annotations: map[string]string{workloadidentity.ClientIDAnnotation: cid}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	p := r.pod(ns, "p", "app", map[string]string{workloadidentity.UseLabel: "true"})
	c, err := NewClient(ClientConfig{URL: r.url, HTTPClient: r.http, Tokens: token.KubeTokenRequester{Client: r.admin}, AgentTokenFile: r.agentTokenFile})
	if err != nil {
		t.Fatal(err)
	}
	req := token.Request{Identity: token.Identity{Kind: token.Federated, ClientID: cid, Broker: true}, Resource: "https://vault.azure.net",
		Pod: token.Pod{Namespace: ns, Name: p.Name, UID: p.UID, ServiceAccount: "app"}}
	_, err = c.Token(ctx, req)
	if token.ReasonOf(err) != token.ReasonBrokerRefused || !strings.Contains(err.Error(), AccessVerb) {
		t.Fatalf("before the grant: %v, want %s naming %s", err, token.ReasonBrokerRefused, AccessVerb)
	}
	r.grant(ns, cid, rbacv1.Subject{Kind: "ServiceAccount", Name: "app", Namespace: ns})
	// The broker remembers the refusal for its AccessTTL (30s): a fresh
	// identity, granted from the start, shows the allowed path now.
	cid2 := r.identity("client2")
	sa, _ := r.admin.CoreV1().ServiceAccounts(ns).Get(ctx, "app", metav1.GetOptions{})
	sa.Annotations[workloadidentity.ClientIDAnnotation] = cid2
	if _, err := r.admin.CoreV1().ServiceAccounts(ns).Update(ctx, sa, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	r.grant(ns, cid2, rbacv1.Subject{Kind: "ServiceAccount", Name: "app", Namespace: ns})
	req.Identity.ClientID = cid2
	var tok token.Token
	waitFor(t, 10*time.Second, func() bool {
		tok, err = c.Token(ctx, req)
		return err == nil
	})
	if got := r.appID(tok.AccessToken, "https://vault.azure.net"); got != cid2 {
		t.Fatalf("appid %s, want %s", got, cid2)
	}

	// Broker unreachable: a typed error naming the broker.
	dead, _ := NewClient(ClientConfig{URL: "https://" + freeAddr(t), HTTPClient: r.http, Tokens: token.KubeTokenRequester{Client: r.admin}, AgentTokenFile: r.agentTokenFile})
	_, err = dead.Token(ctx, req)
	if token.ReasonOf(err) != token.ReasonBrokerUnavailable || !strings.Contains(err.Error(), "podid broker") {
		t.Fatalf("dead broker: %v", err)
	}
}

func mint(t testing.TB, cs kubernetes.Interface, p *corev1.Pod, aud string, exp int64) string {
	t.Helper()
	sa := workloadidentity.ServiceAccountName(p)
	var auds []string // none: the API server's own audience
	if aud != "" {
		auds = []string{aud}
	}
	tr, err := cs.CoreV1().ServiceAccounts(p.Namespace).CreateToken(t.Context(), sa, &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		Audiences: auds, ExpirationSeconds: &exp,
		BoundObjectRef: &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: p.Name, UID: p.UID}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("TokenRequest: %v", err)
	}
	return tr.Status.Token
}

// credentialOf is the API credential of a pod's service account as the
// kubelet projects it: a token bound to the pod.
func credentialOf(t testing.TB, cs kubernetes.Interface, p *corev1.Pod) *rest.Config {
	t.Helper()
	c := rest.AnonymousClientConfig(env.Config)
	c.BearerToken = mint(t, cs, p, "", 3600)
	c.QPS, c.Burst = 500, 1000
	return c
}

// applyManifest creates every object of a YAML file from deploy/.
func applyManifest(t testing.TB, e *testenv.Env, rel string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), rel))
	if err != nil {
		t.Fatal(err)
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(b), 4096)
	for {
		u := &unstructured.Unstructured{}
		if err := dec.Decode(&u.Object); err != nil {
			if errors.Is(err, io.EOF) {
				return
			}
			t.Fatalf("%s: %v", rel, err)
		}
		if len(u.Object) == 0 {
			continue
		}
		if err := e.Client.Create(t.Context(), u); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatalf("%s: create %s %s: %v", rel, u.GetKind(), u.GetName(), err)
		}
	}
}

func unbound(t testing.TB, cs kubernetes.Interface, ns, sa string) string {
	t.Helper()
	return unboundFor(t, cs, ns, sa, Audience)
}

// unboundFor is a token of sa for aud bound to no pod.
func unboundFor(t testing.TB, cs kubernetes.Interface, ns, sa, aud string) string {
	t.Helper()
	exp := int64(600)
	tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(t.Context(), sa, &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		Audiences: []string{aud}, ExpirationSeconds: &exp}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("TokenRequest: %v", err)
	}
	return tr.Status.Token
}

func issuerOf(t testing.TB, tok string) string {
	t.Helper()
	parsed, err := jwt.ParseSigned(tok, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		t.Fatal(err)
	}
	var c jwt.Claims
	if err := parsed.UnsafeClaimsWithoutVerification(&c); err != nil || c.Issuer == "" {
		t.Fatalf("no issuer: %v", err)
	}
	return c.Issuer
}

func ensureNamespace(t testing.TB, cs kubernetes.Interface, ns string) {
	t.Helper()
	_, _ = cs.CoreV1().Namespaces().Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
}

func ensureServiceAccount(t testing.TB, cs kubernetes.Interface, ns, name string) {
	t.Helper()
	_, _ = cs.CoreV1().ServiceAccounts(ns).Create(t.Context(), &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}}, metav1.CreateOptions{})
}

func waitGone(t testing.TB, cs kubernetes.Interface, ns, name string) {
	t.Helper()
	waitFor(t, 10*time.Second, func() bool {
		_, err := cs.CoreV1().Pods(ns).Get(t.Context(), name, metav1.GetOptions{})
		return err != nil
	})
}

func waitFor(t testing.TB, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// apiServerIssuerTransport lets podid sts fetch the API server's issuer
// documents in this harness (as in the agent's integration test: discovery
// is not anonymous here and names the advertise address).
func apiServerIssuerTransport(t testing.TB, e *testenv.Env) http.RoundTripper {
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
		r.Header.Set("Accept", "application/jwk-set+json, application/json")
		return adminRT.RoundTrip(r)
	})
}

// The broker's credential, under the shipped RBAC, cannot read Secrets nor
// mint tokens: compromising it yields tokens of the brokered identities
// only, never the cluster's credentials.
func TestBrokerLeastPrivilege(t *testing.T) {
	e := env.Need(t)
	ctx := t.Context()
	admin, err := kubernetes.NewForConfig(e.Config)
	if err != nil {
		t.Fatal(err)
	}
	ensureNamespace(t, admin, brokerNS)
	applyManifest(t, e, "deploy/broker/rbac.yaml")
	self, err := admin.CoreV1().Pods(brokerNS).Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{GenerateName: "podid-broker-", Namespace: brokerNS},
		Spec: corev1.PodSpec{NodeName: node, ServiceAccountName: brokerSA, Containers: []corev1.Container{{Name: "broker", Image: "x"}}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = admin.CoreV1().Pods(brokerNS).Delete(context.Background(), self.Name, metav1.DeleteOptions{})
	})
	ns := e.Namespace(t)
	if _, err := admin.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "s", Namespace: ns}, StringData: map[string]string{"clientsecret": "x"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	ensureServiceAccount(t, admin, ns, "app")
	p, err := admin.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: ns},
		Spec: corev1.PodSpec{NodeName: node, ServiceAccountName: "app", Containers: []corev1.Container{{Name: "c", Image: "x"}}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := kubernetes.NewForConfig(credentialOf(t, admin, self))
	if err != nil {
		t.Fatal(err)
	}
	exp := int64(600)
	for name, call := range map[string]func() error{
		"get Secret":   func() error { _, err := b.CoreV1().Secrets(ns).Get(ctx, "s", metav1.GetOptions{}); return err },
		"list Secrets": func() error { _, err := b.CoreV1().Secrets("").List(ctx, metav1.ListOptions{}); return err },
		"watch Secrets": func() error {
			w, err := b.CoreV1().Secrets(ns).Watch(ctx, metav1.ListOptions{})
			if w != nil {
				w.Stop()
			}
			return err
		},
		"mint a token": func() error {
			_, err := b.CoreV1().ServiceAccounts(ns).CreateToken(ctx, "app", &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
				Audiences: []string{workloadidentity.TokenAudience}, ExpirationSeconds: &exp,
				BoundObjectRef: &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: p.Name, UID: p.UID}}}, metav1.CreateOptions{})
			return err
		},
		"list pods":    func() error { _, err := b.CoreV1().Pods("").List(ctx, metav1.ListOptions{}); return err },
		"delete a pod": func() error { return b.CoreV1().Pods(ns).Delete(ctx, p.Name, metav1.DeleteOptions{}) },
		"grant itself": func() error {
			_, err := b.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "x"},
				RoleRef: rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "cluster-admin"}}, metav1.CreateOptions{})
			return err
		},
	} {
		if err := call(); !apierrors.IsForbidden(err) {
			t.Errorf("broker credential could %s: %v", name, err)
		}
	}
	// What it needs works.
	if _, err := b.CoreV1().Pods(ns).Get(ctx, p.Name, metav1.GetOptions{}); err != nil {
		t.Errorf("broker cannot read a pod: %v", err)
	}
	if _, err := b.AuthenticationV1().TokenReviews().Create(ctx, &authenticationv1.TokenReview{Spec: authenticationv1.TokenReviewSpec{Token: "a.b.c"}}, metav1.CreateOptions{}); err != nil {
		t.Errorf("broker cannot create a TokenReview: %v", err)
	}
}
