package broker

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	podidv1 "github.com/podid/podid/api/v1"
	"github.com/podid/podid/internal/agent"
	"github.com/podid/podid/internal/sts"
	"github.com/podid/podid/internal/sts/ststest"
	"github.com/podid/podid/internal/token"
)

// Types 1/2 through the broker (broker.secretIdentities): the broker, the
// one reader of their Secrets, authenticates with the identity's client
// secret or certificate for pods its binding selects; a missing or
// malformed Secret is a refusal naming it.
func TestBrokerSecretIdentities(t *testing.T) {
	const certClientID = "5d1e2f3a-4b5c-4d6e-8f70-8192a3b4c5d6"
	certPEM, keyPEM := selfSignedRSA(t)
	r := newRigWith(t, rigConfig{secrets: true, bootstrap: &sts.Bootstrap{Tenants: []sts.BootstrapTenant{{ID: ststest.TenantID,
		Applications: []sts.BootstrapApplication{{ClientID: certClientID, DisplayName: "cert-app", Certificates: []sts.BootstrapCertificate{{PEM: string(certPEM)}}}}}}}})
	ctx := t.Context()
	ns := r.e.Namespace(t)
	ensureServiceAccount(t, r.admin, ns, "app")
	secret := func(name string, data map[string]string) {
		t.Helper()
		if _, err := r.admin.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, StringData: data}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	identity := func(name string, typ podidv1.IdentityType, clientID, secretName string) *corev1.Pod {
		t.Helper()
		if err := r.e.Client.Create(ctx, &podidv1.AzureIdentity{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec: podidv1.AzureIdentitySpec{Type: typ, ClientID: clientID, TenantID: r.sts.TenantID,
				ClientPassword: corev1.SecretReference{Name: secretName, Namespace: ns}}}); err != nil {
			t.Fatal(err)
		}
		if err := r.e.Client.Create(ctx, &podidv1.AzureIdentityBinding{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec: podidv1.AzureIdentityBindingSpec{AzureIdentity: name, Selector: name}}); err != nil {
			t.Fatal(err)
		}
		return r.pod(ns, name, "app", map[string]string{podidv1.PodLabelKey: name})
	}
	secret("sp", map[string]string{token.SecretKeyClientSecret: ststest.AdminSecret})
	secret("cert", map[string]string{token.SecretKeyCertificate: string(certPEM) + string(keyPEM)})
	secret("wrong", map[string]string{token.SecretKeyClientSecret: "not-the-secret"})
	secret("nokey", map[string]string{"password": "x"})
	const other = "0f0e0d0c-0b0a-4909-8807-060504030201"
	cases := []struct {
		name     string
		pod      *corev1.Pod
		clientID string
		status   int
		says     string
	}{
		{"type-1-client-secret", identity("sp", podidv1.ServicePrincipal, ststest.AdminClientID, "sp"), ststest.AdminClientID, 200, ""},
		{"type-2-certificate", identity("cert", podidv1.ServicePrincipalCertificate, certClientID, "cert"), certClientID, 200, ""},
		{"secret-missing", identity("missing", podidv1.ServicePrincipal, other, "absent"), other, 403, "cannot read Secret " + ns + "/absent"},
		{"secret-malformed", identity("nokey", podidv1.ServicePrincipal, other, "nokey"), other, 403, `has no "clientsecret" key`},
		{"secret-wrong", identity("wrong", podidv1.ServicePrincipal, ststest.AdminClientID, "wrong"), ststest.AdminClientID, 403, "refused"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var st int
			var b []byte
			// The broker's informers may not have seen the new objects yet.
			waitFor(t, 10*time.Second, func() bool {
				st, b = r.ask(mint(t, r.admin, c.pod, Audience, 600), r.body(c.clientID, "https://vault.azure.net"))
				return !strings.Contains(string(b), "no identity is assigned")
			})
			if st != c.status {
				t.Fatalf("status %d: %s", st, b)
			}
			if c.status == 200 {
				var tr TokenResponse
				_ = json.Unmarshal(b, &tr)
				if got := r.appID(tr.AccessToken, "https://vault.azure.net"); got != c.clientID {
					t.Fatalf("appid %s, want %s", got, c.clientID)
				}
				return
			}
			var er ErrorResponse
			_ = json.Unmarshal(b, &er)
			if er.Code != CodeAccessDenied || !strings.Contains(er.Description, c.says) {
				t.Fatalf("got %s %q, want %s containing %q", er.Code, er.Description, CodeAccessDenied, c.says)
			}
		})
	}

	// The agent's path: with BrokerSecretIdentities it sends a type 1
	// identity to the broker (it has no Secret access of its own) and serves
	// the answer as IMDS JSON.
	informers, err := agent.NewDecisionCache(ctx, r.e.Config)
	if err != nil {
		t.Fatal(err)
	}
	ictx, stopInformers := context.WithCancel(context.Background())
	t.Cleanup(stopInformers)
	go func() { _ = informers.Start(ictx) }()
	informers.WaitForCacheSync(ctx)
	client, err := NewClient(ClientConfig{URL: r.url, HTTPClient: r.http, Tokens: token.KubeTokenRequester{Client: r.admin}, AgentTokenFile: r.agentTokenFile})
	if err != nil {
		t.Fatal(err)
	}
	noSecrets := token.NewProvider(token.ProviderConfig{Authority: r.sts.URL, HTTPClient: r.sts.Client()}) // as the agent without Secret access
	h := agent.NewHandler(agent.HandlerConfig{
		Resolver: anyIP{cases[0].pod},
		Decider:  &agent.BindingDecider{Reader: informers, DefaultTenantID: r.sts.TenantID, Authority: r.sts.URL, BrokerSecretIdentities: true},
		Tokens:   token.NewCache(token.CacheConfig{Source: token.Routed{Direct: noSecrets, Broker: client}}),
	})
	req := httptest.NewRequest(http.MethodGet, "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://vault.azure.net", nil)
	req.RemoteAddr = "127.0.0.1:40000"
	req.Header.Set("Metadata", "true")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	var m map[string]string
	_ = json.Unmarshal(rec.Body.Bytes(), &m)
	if rec.Code != http.StatusOK || r.appID(m["access_token"], "https://vault.azure.net") != ststest.AdminClientID {
		t.Fatalf("type 1 identity through the agent and the broker: %d %v", rec.Code, m)
	}
}

// selfSignedRSA is a certificate and key as an app registration holds them
// (MSAL's certificate credential signs with RSA).
func selfSignedRSA(t *testing.T) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "cert-app"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kd, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd})
}
