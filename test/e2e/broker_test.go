package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	podidv1 "github.com/podid/podid/api/v1"
	"github.com/podid/podid/internal/broker"
	"github.com/podid/podid/internal/sts"
	"github.com/podid/podid/internal/token"
	"github.com/podid/podid/internal/workloadidentity"
	"github.com/podid/podid/test/e2e/framework"
)

const (
	brokerServiceIP  = "10.96.0.101" // in hack/cluster.sh's service range, next to the sts
	brokerURL        = "https://" + brokerServiceIP + ":8443"
	brokerNamespaces = 25 // more than the 20 federated credentials Entra allows per identity
)

// TestBroker proves the podid broker on the real node, installed with the
// chart (values-local.yaml + broker.enabled): ONE identity whose ONE
// federated credential names the broker's service account is used by pods
// of 25 namespaces, written as for AKS identity bindings (service account
// annotated with the client id, pod annotated use-identity-binding: "true",
// a RoleBinding to a ClusterRole granting use-managed-identity on the client
// id). Each pod runs the unmodified azidentity.ManagedIdentityCredential
// (miclient, client id from the AZURE_CLIENT_ID the webhook injected, no
// token file) and its access token verifies. Then: a pod whose service
// account has no grant is refused (IMDS 404 naming the grant); the agent's
// credential cannot mint a broker token for a pod of another node (the
// token guard); one broker replica killed under load loses no request.
func TestBroker(t *testing.T) {
	c := framework.Connect(t)
	helmPath := framework.Helm(t)
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	for _, img := range []string{miClientImage, framework.TestClientImage} {
		if !nodeHasImage(ctx, t, c, img) {
			t.Fatalf("image %s not imported: run hack/image.sh", img)
		}
	}
	chart := filepath.Join(framework.RepoRoot(), "deploy", "chart", "podid")
	cid := newUUID(t)
	// Types 1/2 (broker.secretIdentities): app registrations the broker
	// authenticates as with the identity's own Secret.
	spID, spSecret, certID := newUUID(t), newUUID(t), newUUID(t)
	certPEM, keyPEM := selfSignedRSA(t, "podid-e2e-broker-cert-app")
	brokerSubject := "system:serviceaccount:" + stsNamespace + ":podid-broker"

	// Site values: the one federated credential, for the broker.
	boot := sts.Bootstrap{Tenants: []sts.BootstrapTenant{{ID: wiTenantID, Domains: []string{"podid.local"}, Identities: []sts.BootstrapIdentity{{
		Subscription: "0b1f6471-1bf0-4dda-aec3-cb9272f09590", ResourceGroup: "e2e", Name: "brokered", Location: "local", ClientID: cid,
		FederatedCreds: []sts.BootstrapFederatedIdentity{{Name: "podid-broker", Issuer: c.Issuer, Subject: brokerSubject, Audiences: []string{framework.TokenExchangeAudience}}},
	}}, Applications: []sts.BootstrapApplication{
		{ClientID: spID, DisplayName: "e2e-broker-secret-app", Secrets: []sts.BootstrapSecret{{Value: spSecret}}},
		{ClientID: certID, DisplayName: "e2e-broker-cert-app", Certificates: []sts.BootstrapCertificate{{PEM: string(certPEM)}}},
	}}}}
	bj, err := yaml.Marshal(boot)
	must(t, err)
	var bootstrap map[string]any
	must(t, yaml.Unmarshal(bj, &bootstrap))
	vb, err := yaml.Marshal(map[string]any{
		"agent":  map[string]any{"podCIDRs": []string{c.PodCIDR}},
		"sts":    map[string]any{"saIssuer": c.Issuer, "bootstrap": bootstrap},
		"broker": map[string]any{"enabled": true, "secretIdentities": true, "service": map[string]any{"clusterIP": brokerServiceIP}},
	})
	must(t, err)
	values := filepath.Join(t.TempDir(), "values-broker.yaml")
	must(t, os.WriteFile(values, vb, 0o600))
	base := []string{"--namespace", stsNamespace, "-f", filepath.Join(chart, "values-local.yaml"), "-f", values}
	helm := func(args ...string) string {
		t.Helper()
		out, err := runHelm(ctx, helmPath, c.Kubeconfig, args...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}

	// 00: a clean slate (other tests apply deploy/* under the same names),
	// then helm install.
	start := time.Now()
	sv, err := c.Clientset.Discovery().ServerVersion()
	must(t, err)
	objs, err := framework.DecodeManifest([]byte(helm(append([]string{"template", helmRelease, chart, "--kube-version", sv.GitVersion}, base...)...)))
	must(t, err)
	// A release left by hack/up.sh (same name) would refuse the install.
	helm("uninstall", helmRelease, "--namespace", stsNamespace, "--ignore-not-found", "--wait", "--timeout", "3m")
	deleteAndWait(ctx, t, c, objs)
	privilegedNamespace(ctx, t, c, stsNamespace)
	rules := nodeInterceptor(t, c)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		if _, err := runHelm(ctx, helmPath, c.Kubeconfig, "uninstall", helmRelease, "--namespace", stsNamespace, "--wait"); err != nil {
			t.Errorf("helm uninstall: %v", err)
		}
		if err := rules.Uninstall(ctx); err != nil {
			t.Errorf("remove the agent's interception rules from the node: %v", err)
		}
	})
	helm(append([]string{"install", helmRelease, chart, "--wait", "--timeout", "5m"}, base...)...)
	t.Logf("00 helm install (sts, webhook, agent, broker x2) --wait: %s", time.Since(start).Round(time.Millisecond))
	stsPod := waitForPodOf(ctx, t, c, stsNamespace, "app.kubernetes.io/name=podid-sts")
	stsTR, _ := stsClientTransport(ctx, t, stsPod.Status.PodIP)
	verifier := accessTokenVerifier(t, stsTR)

	// 01: the grant, as for AKS identity bindings.
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "podid-e2e-use-" + cid},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{broker.AccessGroup}, Resources: []string{cid}, Verbs: []string{broker.AccessVerb}}}}
	must(t, c.Client.Create(ctx, role))
	t.Cleanup(func() { _ = c.Client.Delete(context.Background(), role) })
	workload := func(ns, sa string, grant bool) {
		t.Helper()
		must(t, c.Client.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa, Namespace: ns,
			Annotations: map[string]string{workloadidentity.ClientIDAnnotation: cid}}}))
		if grant {
			must(t, c.Client.Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "use-identity", Namespace: ns},
				RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
				Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: sa, Namespace: ns}}}))
		}
	}
	bindingPod := func(p *corev1.Pod, sa string) *corev1.Pod {
		p.Labels[workloadidentity.UseLabel] = "true"
		p.Annotations = map[string]string{workloadidentity.UseIdentityBindingAnnotation: "true"}
		p.Spec.ServiceAccountName = sa
		return p
	}

	// 02: 25 namespaces, one identity, one federated credential.
	start = time.Now()
	var pods []*corev1.Pod
	for range brokerNamespaces {
		ns := c.Namespace(t)
		workload(ns, "app", true)
		p := bindingPod(miClientPod(ns, "app", "", nil, "-client-id=$(AZURE_CLIENT_ID)"), "app")
		p.Spec.DeprecatedServiceAccount = ""
		pods = append(pods, c.CreatePod(ctx, t, p))
	}
	for _, p := range pods {
		got, err := c.Clientset.CoreV1().Pods(p.Namespace).Get(ctx, p.Name, metav1.GetOptions{})
		must(t, err)
		env := map[string]string{}
		for _, e := range got.Spec.Containers[0].Env {
			env[e.Name] = e.Value
		}
		if env[workloadidentity.EnvClientID] != cid || env[workloadidentity.EnvFederatedTokenFile] != "" || len(got.Spec.Volumes) > 1 {
			t.Fatalf("identity-binding pod %s/%s: env %v, volumes %d: want AZURE_CLIENT_ID only, no token file", p.Namespace, p.Name, env, len(got.Spec.Volumes))
		}
		verifyPodToken(ctx, t, c, stsTR, p, cid)
	}
	t.Logf("02 %d namespaces, one identity, one federated credential (%s): every pod's token verified (%s)",
		brokerNamespaces, brokerSubject, time.Since(start).Round(time.Millisecond))

	t.Run("no-grant-refused", func(t *testing.T) {
		ns := c.Namespace(t)
		workload(ns, "nogrant", false)
		p := c.CreatePod(ctx, t, bindingPod(framework.TestClientPod(ns, "nogrant"), "nogrant"))
		a := waitIMDSAnswer(ctx, t, c, ns, p.Name, "")
		code, desc, err := imdsError(a.body)
		if a.status != http.StatusNotFound || err != nil || !strings.Contains(desc, broker.AccessVerb) || !strings.Contains(desc, "podid broker") {
			t.Fatalf("pod without the grant: status=%d %s %q (%v), want 404 naming the broker and %s", a.status, code, desc, err, broker.AccessVerb)
		}
		t.Logf("refused: %d %s", a.status, desc)
	})

	t.Run("other-nodes-pod-refused", func(t *testing.T) {
		// A pod of another node, granted the identity like the 25 above.
		ns := c.Namespace(t)
		workload(ns, "app", true)
		other := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "elsewhere", Namespace: ns,
			Labels:      map[string]string{workloadidentity.UseLabel: "true"},
			Annotations: map[string]string{workloadidentity.UseIdentityBindingAnnotation: "true"}},
			Spec: corev1.PodSpec{NodeName: "podid-e2e-other-node", ServiceAccountName: "app", Containers: []corev1.Container{{Name: "c", Image: framework.TestClientImage}}}}
		must(t, c.Client.Create(ctx, other))
		brokerToken := func(cs kubernetes.Interface) (string, error) {
			tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, "app", &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
				Audiences: []string{token.BrokerAudience}, ExpirationSeconds: ptr.To[int64](600),
				BoundObjectRef: &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: other.Name, UID: other.UID}}}, metav1.CreateOptions{})
			if err != nil {
				return "", err
			}
			return tr.Status.Token, nil
		}

		// 1. The agent's credential, read from the node's disk, cannot mint
		// the broker's audience for that pod: the token guard.
		_, err := brokerToken(agentCredential(ctx, t, c))
		if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "own node") {
			t.Fatalf("agent credential minted a broker token for a pod of another node: %v", err)
		}
		t.Logf("minting refused: %v", err)

		// 2. Such a token leaked (minted here by the admin) and presented by
		// this node's agent, with its own broker credential from the node's
		// disk: the broker refuses it, naming both nodes.
		leaked, err := brokerToken(c.Clientset)
		must(t, err)
		agentTok, err := os.ReadFile(agentBrokerTokenFile(ctx, t, c))
		must(t, err)
		body, _ := json.Marshal(broker.TokenRequest{ClientID: cid, Resource: wiResource})
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, brokerURL+broker.Path, bytes.NewReader(body))
		must(t, err)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+leaked)
		req.Header.Set(broker.AgentHeader, strings.TrimSpace(string(agentTok)))
		res, err := brokerHTTPClient(ctx, t, c).Do(req)
		must(t, err)
		defer res.Body.Close()
		var er broker.ErrorResponse
		raw, _ := io.ReadAll(io.LimitReader(res.Body, 64<<10))
		if err := json.Unmarshal(raw, &er); err != nil || res.StatusCode != http.StatusForbidden || er.Code != broker.CodeAccessDenied ||
			!strings.Contains(er.Description, "runs on node podid-e2e-other-node, but the agent presenting its token") {
			t.Fatalf("leaked token of another node's pod, presented by this node's agent: %d %s, want 403 %s naming both nodes", res.StatusCode, raw, broker.CodeAccessDenied)
		}
		t.Logf("presenting refused: %d %s", res.StatusCode, er.Description)
	})

	t.Run("secret-identities", func(t *testing.T) {
		// Types 1 and 2 through the broker, the one reader of their
		// Secrets: the unmodified ManagedIdentityCredential in v1 pods gets
		// tokens that verify; a missing or malformed Secret is an IMDS 404
		// naming it; the agent's own credential cannot read any Secret.
		ns := c.Namespace(t)
		secret := func(name string, data map[string]string) {
			t.Helper()
			must(t, c.Client.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, StringData: data}))
		}
		identity := func(name string, typ podidv1.IdentityType, clientID, secretName string) {
			t.Helper()
			must(t, c.Client.Create(ctx, &podidv1.AzureIdentity{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
				Spec: podidv1.AzureIdentitySpec{Type: typ, ClientID: clientID, TenantID: wiTenantID,
					ClientPassword: corev1.SecretReference{Name: secretName, Namespace: ns}}}))
			must(t, c.Client.Create(ctx, &podidv1.AzureIdentityBinding{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
				Spec: podidv1.AzureIdentityBindingSpec{AzureIdentity: name, Selector: name}}))
		}
		secret("sp", map[string]string{token.SecretKeyClientSecret: spSecret})
		secret("cert", map[string]string{token.SecretKeyCertificate: string(certPEM) + string(keyPEM)})
		secret("nokey", map[string]string{"password": "x"})
		secret("notpem", map[string]string{token.SecretKeyCertificate: "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"})
		identity("sp", podidv1.ServicePrincipal, spID, "sp")
		identity("cert", podidv1.ServicePrincipalCertificate, certID, "cert")
		identity("missing", podidv1.ServicePrincipal, newUUID(t), "absent")
		identity("nokey", podidv1.ServicePrincipal, newUUID(t), "nokey")
		identity("notpem", podidv1.ServicePrincipalCertificate, newUUID(t), "notpem")

		for _, w := range []struct{ selector, clientID string }{{"sp", spID}, {"cert", certID}} {
			p := c.CreatePod(ctx, t, miClientPod(ns, "type-"+w.selector, "", map[string]string{podidv1.PodLabelKey: w.selector}, "-client-id="+w.clientID))
			verifyPodToken(ctx, t, c, stsTR, p, w.clientID)
		}
		for _, w := range []struct{ selector, says string }{
			{"missing", "Secret " + ns + "/absent"},
			{"nokey", `has no "` + token.SecretKeyClientSecret + `" key`},
			{"notpem", "is not a PEM certificate with its private key"},
		} {
			p := framework.TestClientPod(ns, "bad-"+w.selector)
			p.Labels[podidv1.PodLabelKey] = w.selector
			p = c.CreatePod(ctx, t, p)
			a := waitIMDSAnswer(ctx, t, c, ns, p.Name, "")
			code, desc, err := imdsError(a.body)
			if a.status != http.StatusNotFound || err != nil || !strings.Contains(desc, w.says) || !strings.Contains(desc, "podid broker") {
				t.Fatalf("identity with Secret %q: status=%d %s %q (%v), want 404 from the podid broker saying %q", w.selector, a.status, code, desc, err, w.says)
			}
			t.Logf("%s: %d %s", w.selector, a.status, desc)
		}

		// The agent's credential, read from the node's disk: no Secret,
		// here or anywhere (the broker's serving key included).
		agent := agentCredential(ctx, t, c)
		for _, try := range []struct {
			what string
			call func() error
		}{
			{"get Secret " + ns + "/sp", func() error { _, err := agent.CoreV1().Secrets(ns).Get(ctx, "sp", metav1.GetOptions{}); return err }},
			{"get Secret " + stsNamespace + "/podid-broker-tls", func() error {
				_, err := agent.CoreV1().Secrets(stsNamespace).Get(ctx, "podid-broker-tls", metav1.GetOptions{})
				return err
			}},
			{"list Secrets of " + ns, func() error { _, err := agent.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{}); return err }},
			{"list Secrets cluster-wide", func() error { _, err := agent.CoreV1().Secrets("").List(ctx, metav1.ListOptions{}); return err }},
			{"watch Secrets cluster-wide", func() error {
				w, err := agent.CoreV1().Secrets("").Watch(ctx, metav1.ListOptions{})
				if err == nil {
					w.Stop()
				}
				return err
			}},
		} {
			if err := try.call(); !apierrors.IsForbidden(err) {
				t.Fatalf("agent credential: %s: %v, want Forbidden", try.what, err)
			}
		}
		t.Logf("agent credential: get/list/watch Secrets forbidden")
	})

	t.Run("replica-killed-under-load", func(t *testing.T) {
		// The agent's broker client (the same code), from the node, for
		// four of the pods above, as fast as it goes; one broker replica is
		// killed (grace 0) in the middle.
		bc, err := broker.NewClient(broker.ClientConfig{URL: brokerURL, HTTPClient: brokerHTTPClient(ctx, t, c), Tokens: token.KubeTokenRequester{Client: c.Clientset},
			AgentTokenFile: agentBrokerTokenFile(ctx, t, c)})
		must(t, err)
		var ok, failed atomic.Int64
		var mu sync.Mutex
		var failures []string
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for _, p := range pods[:4] {
			wg.Add(1)
			go func() {
				defer wg.Done()
				req := token.Request{Identity: token.Identity{Kind: token.Federated, ClientID: cid, Broker: true}, Resource: wiResource,
					Pod: token.Pod{Namespace: p.Namespace, Name: p.Name, UID: p.UID, ServiceAccount: "app"}}
				for {
					select {
					case <-stop:
						return
					default:
					}
					tok, err := bc.Token(ctx, req)
					if err == nil {
						_, err = verifier.Verify(ctx, tok.AccessToken)
					}
					if err != nil {
						failed.Add(1)
						mu.Lock()
						failures = append(failures, err.Error())
						mu.Unlock()
						continue
					}
					ok.Add(1)
				}
			}()
		}
		waitFor := func(n int64) {
			for ok.Load() < n && ctx.Err() == nil {
				time.Sleep(20 * time.Millisecond)
			}
		}
		waitFor(200)
		before := ok.Load()
		victims, err := c.Clientset.CoreV1().Pods(stsNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=podid-broker"})
		must(t, err)
		if len(victims.Items) != 2 {
			t.Fatalf("%d broker pods, want 2", len(victims.Items))
		}
		killed := time.Now()
		must(t, c.Clientset.CoreV1().Pods(stsNamespace).Delete(ctx, victims.Items[0].Name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}))
		// Load for 5 s after the kill: the Service withdraws the endpoint
		// within about a second.
		select {
		case <-time.After(5 * time.Second):
		case <-ctx.Done():
		}
		close(stop)
		wg.Wait()
		t.Logf("FIGURES broker replica %s killed (grace 0) under load: %d tokens verified (%d after the kill, over %s), %d failed",
			victims.Items[0].Name, ok.Load(), ok.Load()-before, time.Since(killed).Round(time.Millisecond), failed.Load())
		if failed.Load() != 0 {
			t.Fatalf("%d requests lost with one replica left, e.g. %s", failed.Load(), failures[0])
		}
	})
}

// selfSignedRSA is an app registration's certificate and key (MSAL's
// certificate credential signs with RSA).
func selfSignedRSA(t *testing.T, cn string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	must(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	must(t, err)
	kd, err := x509.MarshalPKCS8PrivateKey(key)
	must(t, err)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd})
}

// agentBrokerTokenFile is the agent pod's projected token for the broker
// (audience broker.AgentAudience), where the kubelet keeps it on the node.
func agentBrokerTokenFile(ctx context.Context, t *testing.T, c *framework.Cluster) string {
	t.Helper()
	f := filepath.Join(c.KubeletDir, "pods", string(agentPod(ctx, t, c).UID), "volumes", "kubernetes.io~projected", "broker-agent-token", "token")
	if _, err := os.Stat(f); err != nil {
		t.Fatalf("the agent's broker token: %v", err)
	}
	return f
}

// brokerHTTPClient trusts the broker's CA (ConfigMap podid-broker-ca).
func brokerHTTPClient(ctx context.Context, t *testing.T, c *framework.Cluster) *http.Client {
	t.Helper()
	var cm corev1.ConfigMap
	must(t, c.Client.Get(ctx, client.ObjectKey{Namespace: stsNamespace, Name: "podid-broker-ca"}, &cm))
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(cm.Data["ca.pem"])) {
		t.Fatal("ConfigMap podid-broker-ca holds no CA")
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, MaxIdleConnsPerHost: 8}}
}
