package integration_test

import (
	"bufio"
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
	"syscall"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/podid/podid/internal/sts"
	"github.com/podid/podid/internal/sts/jwks"
	"github.com/podid/podid/internal/sts/ststest"
	"github.com/podid/podid/internal/sts/tokenverify"
	"github.com/podid/podid/internal/testenv"
	"github.com/podid/podid/internal/webhook"
	"github.com/podid/podid/internal/webhook/webhooktest"
	"github.com/podid/podid/internal/workloadidentity"
)

var env *testenv.Env

// Names the webhook manages in the control plane (as deploy/webhook ships them).
const (
	webhookNamespace  = "podid-system"
	webhookSecret     = "podid-webhook-cert"
	webhookConfigName = "podid-webhook"

	// discoveryBinding lets unauthenticated clients (the sts) read the
	// service-account issuer's discovery document and JWKS, as a managed
	// cluster's public OIDC issuer allows (docs/local-cluster.md does the same).
	discoveryBinding = "podid-it:service-account-issuer-discovery"

	// storage is the resource the workload asks a token for.
	storage = "https://storage.azure.com"
)

// TestMain starts one control plane (internal/testenv: etcd + kube-apiserver,
// podid's CRDs) with the MutatingWebhookConfiguration shipped in
// deploy/webhook installed by envtest and pointed at a local port, where each
// test runs webhook.Run in-process. testenv gives the API server an RSA
// service-account key (Entra and podid sts accept RS256 only) and a jwks_uri
// on the address it listens on.
func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
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

// stack is the workload-identity flow's server side, all in-process.
type stack struct {
	env    *testenv.Env
	cs     kubernetes.Interface
	issuer string // the API server's service-account issuer
	sts    *ststest.Server
}

// startStack starts a podid sts that trusts the envtest API server as an
// external OIDC issuer (its CA only) and podid webhook with the sts as
// authority host. Everything stops at cleanup.
func startStack(t *testing.T) *stack {
	t.Helper()
	e := env.Need(t)
	ctx := t.Context()
	cs, err := kubernetes.NewForConfig(e.Config)
	if err != nil {
		t.Fatalf("clientset: %v", err)
	}
	issuer, err := serviceAccountIssuer(ctx, cs)
	if err != nil {
		t.Fatal(err)
	}
	allowAnonymousIssuerDiscovery(t, cs)

	apiCA := x509.NewCertPool()
	if !apiCA.AppendCertsFromPEM(e.Config.CAData) {
		t.Fatal("envtest rest config carries no CA certificate")
	}
	srv := ststest.Start(t, ststest.Options{Configure: func(c *sts.Config) {
		// Trust exactly this issuer, with exactly the API server's CA.
		c.ExternalTrust = jwks.Trust{PerIssuer: map[string]*x509.CertPool{issuer: apiCA}, NoSystemRoots: true}
	}})
	waitAnonymousIssuerDiscovery(t, issuer, apiCA)
	startWebhook(t, e, srv.URL+"/", srv.TenantID)
	return &stack{env: e, cs: cs, issuer: issuer, sts: srv}
}

// serviceAccountIssuer reads the issuer from the API server's discovery
// document (envtest: https://127.0.0.1:<port>/).
func serviceAccountIssuer(ctx context.Context, cs kubernetes.Interface) (string, error) {
	raw, err := cs.CoreV1().RESTClient().Get().AbsPath("/.well-known/openid-configuration").DoRaw(ctx)
	if err != nil {
		return "", fmt.Errorf("get service-account issuer discovery: %w", err)
	}
	var doc struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		return "", fmt.Errorf("decode issuer discovery: %w", err)
	}
	if !strings.HasPrefix(doc.Issuer, "https://") || doc.JWKSURI == "" {
		return "", fmt.Errorf("unexpected issuer discovery document %s", raw)
	}
	return doc.Issuer, nil
}

// allowAnonymousIssuerDiscovery binds system:service-account-issuer-discovery
// to system:unauthenticated: the default binding covers only service
// accounts, and the sts fetches discovery and JWKS without credentials.
func allowAnonymousIssuerDiscovery(t *testing.T, cs kubernetes.Interface) {
	t.Helper()
	crb := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: discoveryBinding},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "system:service-account-issuer-discovery"},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.GroupKind, Name: "system:unauthenticated"}},
	}
	_, err := cs.RbacV1().ClusterRoleBindings().Create(t.Context(), crb, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("create ClusterRoleBinding %s: %v", discoveryBinding, err)
	}
	t.Cleanup(func() {
		_ = cs.RbacV1().ClusterRoleBindings().Delete(context.Background(), discoveryBinding, metav1.DeleteOptions{})
	})
}

// waitAnonymousIssuerDiscovery polls, without credentials and trusting only
// the API server's CA (as the sts does), the discovery document and the
// JWKS until both answer 200: the RBAC authorizer sees a new binding only
// once its informer has it.
func waitAnonymousIssuerDiscovery(t *testing.T, issuer string, ca *x509.CertPool) {
	t.Helper()
	hc := &http.Client{
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca, MinVersion: tls.VersionTLS12}},
		Timeout:   10 * time.Second,
	}
	defer hc.CloseIdleConnections()
	get := func(url string, v any) error {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := hc.Do(req)
		if err != nil {
			return fmt.Errorf("anonymous GET %s: %w", url, err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("anonymous GET %s: %s", url, resp.Status)
		}
		if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(v); err != nil {
			return fmt.Errorf("anonymous GET %s: decode: %w", url, err)
		}
		return nil
	}
	poll(t, 30*time.Second, func() error {
		var doc struct {
			Issuer  string `json:"issuer"`
			JWKSURI string `json:"jwks_uri"`
		}
		if err := get(strings.TrimSuffix(issuer, "/")+"/.well-known/openid-configuration", &doc); err != nil {
			return err
		}
		if doc.Issuer != issuer {
			return fmt.Errorf("discovery names issuer %q, want %q", doc.Issuer, issuer)
		}
		var set jose.JSONWebKeySet
		if err := get(doc.JWKSURI, &set); err != nil {
			return err
		}
		if len(set.Keys) == 0 || set.Keys[0].Algorithm != "RS256" {
			return fmt.Errorf("JWKS %s has keys %+v, want RS256", doc.JWKSURI, set.Keys)
		}
		return nil
	})
}

// startWebhook runs webhook.Run (certificate manager included) on envtest's
// webhook port until the test ends.
func startWebhook(t *testing.T, e *testenv.Env, authority, tenant string) {
	t.Helper()
	err := e.Client.Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: webhookNamespace}})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("create namespace %s: %v", webhookNamespace, err)
	}
	webhooktest.Start(t, e, webhook.Config{
		HealthAddr:        "127.0.0.1:0",
		MetricsAddr:       "127.0.0.1:0",
		AuthorityHost:     authority,
		DefaultTenantID:   tenant,
		Namespace:         webhookNamespace,
		SecretName:        webhookSecret,
		WebhookConfigName: webhookConfigName,
		Logger:            slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
}

// seed003ServiceAccount is the ServiceAccount of seed 003's quick guide
// ("azwi serviceaccount create phase sa").
func seed003ServiceAccount(ns, name, clientID string) *corev1.ServiceAccount {
	return &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{
		Name:        name,
		Namespace:   ns,
		Annotations: map[string]string{"azure.workload.identity/client-id": clientID},
		Labels:      map[string]string{"azure.workload.identity/use": "true"},
	}}
}

// seed003Pod is the pod a ReplicaSet of seed 003's azcli-deployment creates
// (generateName, the deprecated serviceAccount field the guide uses), with
// the pod label the webhook's objectSelector needs.
func seed003Pod(ns, sa string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: "azcli-deployment-5d8f7b9c6d-",
			Namespace:    ns,
			Labels:       map[string]string{"app": "azcli", "azure.workload.identity/use": "true"},
		},
		Spec: corev1.PodSpec{
			DeprecatedServiceAccount: sa,
			Containers: []corev1.Container{{
				Name:    "azcli",
				Image:   "mcr.microsoft.com/azure-cli:latest",
				Command: []string{"/bin/bash", "-c", "sleep infinity"},
			}},
		},
	}
}

// createMutatedPod creates pod once the webhook mutates it: until the
// webhook serves with its certificate in the caBundle and its cache holds
// the ServiceAccount, a dry run comes back unmutated or denied ("not found").
func createMutatedPod(t *testing.T, c client.Client, pod *corev1.Pod) *corev1.Pod {
	t.Helper()
	poll(t, 60*time.Second, func() error {
		p := pod.DeepCopy()
		if err := c.Create(t.Context(), p, client.DryRunAll); err != nil {
			return fmt.Errorf("dry-run create: %w", err)
		}
		if p.Annotations[webhook.InjectedAnnotation] == "" {
			return errors.New("dry-run pod not mutated by the webhook yet")
		}
		return nil
	})
	p := pod.DeepCopy()
	if err := c.Create(t.Context(), p); err != nil {
		t.Fatalf("create pod: %v", err)
	}
	var stored corev1.Pod
	if err := c.Get(t.Context(), client.ObjectKeyFromObject(p), &stored); err != nil {
		t.Fatalf("get stored pod: %v", err)
	}
	return &stored
}

// poll runs f until it succeeds or d passes (no sleeps as synchronisation:
// each attempt is a real check, the pause between them honours the context).
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

// tokenProjection is the projected service-account token the webhook added
// and where a container sees it.
type tokenProjection struct {
	source    *corev1.ServiceAccountTokenProjection
	mountPath string
}

// assertInjected checks the stored pod against docs/contracts.md §5 and returns
// the container's env and the projection.
func assertInjected(t *testing.T, pod *corev1.Pod, s *stack, clientID string) (map[string]string, tokenProjection) {
	t.Helper()
	if len(pod.Spec.Containers) != 1 {
		t.Fatalf("pod has %d containers", len(pod.Spec.Containers))
	}
	c := pod.Spec.Containers[0]
	env := map[string]string{}
	for _, e := range c.Env {
		if _, dup := env[e.Name]; dup {
			t.Errorf("env %s set twice", e.Name)
		}
		if e.ValueFrom != nil {
			t.Errorf("env %s uses valueFrom", e.Name)
		}
		env[e.Name] = e.Value
	}
	for k, want := range map[string]string{
		"AZURE_CLIENT_ID":            clientID,
		"AZURE_TENANT_ID":            s.sts.TenantID,
		"AZURE_FEDERATED_TOKEN_FILE": "/var/run/secrets/azure/tokens/azure-identity-token",
		"AZURE_AUTHORITY_HOST":       s.sts.URL + "/",
	} {
		if env[k] != want {
			t.Errorf("env %s = %q, want %q", k, env[k], want)
		}
	}
	var proj tokenProjection
	for _, m := range c.VolumeMounts {
		if m.Name != workloadidentity.TokenVolumeName {
			continue
		}
		if !m.ReadOnly || m.MountPath != "/var/run/secrets/azure/tokens" {
			t.Errorf("token mount = %+v, want read-only at /var/run/secrets/azure/tokens", m)
		}
		proj.mountPath = m.MountPath
	}
	for _, v := range pod.Spec.Volumes {
		if v.Name != workloadidentity.TokenVolumeName {
			continue
		}
		if v.Projected == nil || len(v.Projected.Sources) != 1 || v.Projected.Sources[0].ServiceAccountToken == nil {
			t.Fatalf("token volume = %+v, want one projected serviceAccountToken", v)
		}
		proj.source = v.Projected.Sources[0].ServiceAccountToken
	}
	if proj.source == nil || proj.mountPath == "" {
		t.Fatalf("stored pod lacks the token volume or its mount: volumes %+v, mounts %+v", pod.Spec.Volumes, c.VolumeMounts)
	}
	if proj.source.Audience != "api://AzureADTokenExchange" || proj.source.Path != "azure-identity-token" ||
		proj.source.ExpirationSeconds == nil || *proj.source.ExpirationSeconds != 3600 {
		t.Errorf("projection = %+v (exp %v), want audience api://AzureADTokenExchange, path azure-identity-token, 3600 s",
			proj.source, proj.source.ExpirationSeconds)
	}
	if got := filepath.Join(proj.mountPath, proj.source.Path); got != env["AZURE_FEDERATED_TOKEN_FILE"] {
		t.Errorf("AZURE_FEDERATED_TOKEN_FILE %q is not where the token is projected (%q)", env["AZURE_FEDERATED_TOKEN_FILE"], got)
	}
	return env, proj
}

// projectToken does what the kubelet does for the projected volume: a
// TokenRequest for the pod's ServiceAccount with the projection's audience
// and expiration, bound to the pod, written to <root><mountPath>/<path>.
func projectToken(t *testing.T, s *stack, pod *corev1.Pod, proj tokenProjection, root string) string {
	t.Helper()
	tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		Audiences:         []string{proj.source.Audience},
		ExpirationSeconds: proj.source.ExpirationSeconds,
		BoundObjectRef:    &authenticationv1.BoundObjectReference{APIVersion: "v1", Kind: "Pod", Name: pod.Name, UID: pod.UID},
	}}
	out, err := s.cs.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(t.Context(), pod.Spec.ServiceAccountName, tr, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("TokenRequest for %s/%s: %v", pod.Namespace, pod.Spec.ServiceAccountName, err)
	}
	tok := out.Status.Token
	claims, err := decodeK8sClaims(tok)
	if err != nil {
		t.Fatalf("projected token: %v", err)
	}
	wantSub := "system:serviceaccount:" + pod.Namespace + ":" + pod.Spec.ServiceAccountName
	if claims.Alg != "RS256" {
		t.Fatalf("projected token alg = %q: Entra ID and podid sts accept only RS256", claims.Alg)
	}
	if claims.Iss != s.issuer || claims.Sub != wantSub || len(claims.Aud) != 1 || claims.Aud[0] != proj.source.Audience ||
		claims.K8s.Pod.Name != pod.Name || claims.K8s.Pod.UID != string(pod.UID) {
		t.Fatalf("projected token claims = %+v, want iss %s, sub %s, aud [%s], bound to pod %s/%s",
			claims, s.issuer, wantSub, proj.source.Audience, pod.Name, pod.UID)
	}
	dir := filepath.Join(root, proj.mountPath)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, proj.source.Path), []byte(tok), 0o600); err != nil {
		t.Fatalf("write projected token: %v", err)
	}
	return tok
}

type k8sClaims struct {
	Alg string   `json:"-"` // from the JOSE header
	Iss string   `json:"iss"`
	Sub string   `json:"sub"`
	Aud []string `json:"aud"`
	K8s struct {
		Pod struct {
			Name string `json:"name"`
			UID  string `json:"uid"`
		} `json:"pod"`
	} `json:"kubernetes.io"`
}

// decodeK8sClaims reads the payload without verifying it (the sts does).
// Any algorithm an API server may sign with is parsed, so the caller's
// check of Alg is what rejects a wrong one.
func decodeK8sClaims(token string) (k8sClaims, error) {
	var c k8sClaims
	tok, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.ES256, jose.ES384, jose.ES512})
	if err != nil {
		return c, fmt.Errorf("parse JWT: %w", err)
	}
	if err := tok.UnsafeClaimsWithoutVerification(&c); err != nil {
		return c, fmt.Errorf("decode JWT claims: %w", err)
	}
	c.Alg = tok.Headers[0].Algorithm
	return c, nil
}

// workloadCredential is the workload's side: the env the webhook injected
// (the token path relocated under root, where the "kubelet" wrote it) and
// the unmodified azidentity.WorkloadIdentityCredential reading it. Only the
// sts CA is supplied (the Go SDK honours SSL_CERT_FILE in a real pod; here
// the transport carries the same CA), and instance discovery is disabled.
func workloadCredential(t *testing.T, s *stack, env map[string]string, root string) azcore.TokenCredential {
	t.Helper()
	for _, k := range []string{"AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_AUTHORITY_HOST"} {
		t.Setenv(k, env[k])
	}
	t.Setenv("AZURE_FEDERATED_TOKEN_FILE", filepath.Join(root, env["AZURE_FEDERATED_TOKEN_FILE"]))
	cred, err := azidentity.NewWorkloadIdentityCredential(&azidentity.WorkloadIdentityCredentialOptions{
		ClientOptions: azcore.ClientOptions{
			Transport: s.sts.Client(),
			Retry:     policy.RetryOptions{MaxRetries: -1},
		},
		// In-process: the sts is on a loopback address and there is no
		// cluster DNS to answer login.microsoftonline.com, where MSAL would
		// validate this authority. Pods use default options against the
		// public names (test/e2e/localcloud_test.go; docs/local-cloud.md).
		DisableInstanceDiscovery: true,
	})
	if err != nil {
		t.Fatalf("NewWorkloadIdentityCredential: %v", err)
	}
	return cred
}

// verifyAccessToken checks tok as a resource server for storage would.
func verifyAccessToken(t *testing.T, s *stack, tok, clientID string) {
	t.Helper()
	v, err := tokenverify.New(tokenverify.Config{
		JWKSURL:   s.sts.JWKSURL(),
		Keys:      jwks.New(jwks.Config{Trust: jwks.Trust{Global: s.sts.CAPool, NoSystemRoots: true}}),
		Issuers:   []string{s.sts.V1Issuer()},
		Audiences: []string{storage},
	})
	if err != nil {
		t.Fatal(err)
	}
	c, err := v.Verify(t.Context(), tok)
	if err != nil {
		t.Fatalf("access token does not verify: %v", err)
	}
	p, err := s.sts.Principal(clientID)
	if err != nil {
		t.Fatalf("principal %s: %v", clientID, err)
	}
	if len(c.Audience) != 1 || c.Audience[0] != storage || c.Issuer != s.sts.V1Issuer() || c.TenantID != s.sts.TenantID ||
		c.AppID != clientID || c.ObjectID != p.ObjectID || c.IDType != "app" || c.Version != "1.0" {
		t.Errorf("access token claims = %+v, want aud %s, iss %s, tid %s, appid %s, oid %s", c, storage, s.sts.V1Issuer(), s.sts.TenantID, clientID, p.ObjectID)
	}
}

// TestWorkloadIdentity runs the v2 flow end to end: seed 003's
// ServiceAccount and pod → podid webhook injects env + projected token →
// the API server signs the pod-bound token → unmodified azidentity
// exchanges it at podid sts, which fetches the API server's issuer
// discovery and JWKS anonymously → the access token verifies.
func TestWorkloadIdentity(t *testing.T) {
	s := startStack(t)
	ns := s.env.Namespace(t)
	subject := func(sa string) string { return "system:serviceaccount:" + ns + ":" + sa }

	for _, tt := range []struct {
		name string
		sa   string
		// ficSubject is the subject of the identity's federated credential
		// (issuer: the API server); "" registers none.
		ficSubject string
		wantErr    string // AADSTS code surfaced by azidentity; "" = success
	}{
		{name: "seed-003-quick-guide", sa: "sademo", ficSubject: subject("sademo")},
		{name: "identity-without-federated-credential", sa: "sa-nofic", wantErr: "AADSTS70021"},
		{name: "federated-credential-for-another-sa", sa: "sa-otherfic", ficSubject: subject("someone-else"), wantErr: "AADSTS700213"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			issuer := ""
			if tt.ficSubject != "" {
				issuer = s.issuer
			}
			clientID := s.sts.AddIdentity(t, "id-"+tt.sa, issuer, tt.ficSubject)
			if err := s.env.Client.Create(t.Context(), seed003ServiceAccount(ns, tt.sa, clientID)); err != nil {
				t.Fatalf("create ServiceAccount: %v", err)
			}
			pod := createMutatedPod(t, s.env.Client, seed003Pod(ns, tt.sa))
			if pod.Spec.ServiceAccountName != tt.sa {
				t.Fatalf("stored pod serviceAccountName = %q, want %q", pod.Spec.ServiceAccountName, tt.sa)
			}
			env, proj := assertInjected(t, pod, s, clientID)

			root := t.TempDir() // the container's filesystem root
			projectToken(t, s, pod, proj, root)
			cred := workloadCredential(t, s, env, root)

			ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
			defer cancel()
			tk, err := cred.GetToken(ctx, policy.TokenRequestOptions{Scopes: []string{storage + "/.default"}})
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("GetToken succeeded, want %s", tt.wantErr)
				}
				if !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("GetToken error does not carry %s: %v", tt.wantErr, err)
				}
				var afe *azidentity.AuthenticationFailedError
				if !errors.As(err, &afe) || afe.RawResponse == nil || afe.RawResponse.StatusCode != 400 {
					t.Errorf("GetToken error = %T %v, want an AuthenticationFailedError with HTTP 400", err, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("GetToken: %v", err)
			}
			// Managed identities get 24 h tokens, as from Entra.
			if d := time.Until(tk.ExpiresOn); d < 23*time.Hour || d > 24*time.Hour {
				t.Errorf("ExpiresOn in %v, want about 24h", d)
			}
			verifyAccessToken(t, s, tk.Token, clientID)

			// The e2e workload binary, as a process that trusts the sts only
			// through SSL_CERT_FILE and reads only the injected env.
			verifyAccessToken(t, s, runWIClient(t, s, env, root), clientID)
		})
	}
}

// runWIClient builds test/e2e/images/wiclient, runs it with exactly the
// pod's injected env (token path under root) plus SSL_CERT_FILE, waits for
// "token acquired", stops it and returns the token it wrote.
func runWIClient(t *testing.T, s *stack, env map[string]string, root string) string {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "wiclient")
	build := exec.CommandContext(t.Context(), "go", "build", "-o", bin, "./test/e2e/images/wiclient")
	build.Dir = testenv.RepoRoot()
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build wiclient: %v\n%s", err, out)
	}
	out := filepath.Join(dir, "access-token")
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	// On the host no DNS answers login.microsoftonline.com (and nothing may
	// ask the internet's): no instance discovery, as workloadCredential.
	cmd := exec.CommandContext(ctx, bin, "-no-instance-discovery", "-out", out)
	cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + dir,
		"AZURE_CLIENT_ID=" + env["AZURE_CLIENT_ID"],
		"AZURE_TENANT_ID=" + env["AZURE_TENANT_ID"],
		"AZURE_AUTHORITY_HOST=" + env["AZURE_AUTHORITY_HOST"],
		"AZURE_FEDERATED_TOKEN_FILE=" + filepath.Join(root, env["AZURE_FEDERATED_TOKEN_FILE"]),
		"SSL_CERT_FILE=" + s.sts.CAFile,
	}
	cmd.WaitDelay = 10 * time.Second // after ctx ends: kill, then stop waiting for output
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start wiclient: %v", err)
	}
	var last string
	acquired := false
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		last = sc.Text()
		if strings.HasPrefix(last, "wiclient: token acquired") {
			acquired = true
			break
		}
	}
	go func() { _, _ = io.Copy(io.Discard, stdout) }()
	if acquired {
		// It now waits for SIGTERM and must exit 0 on it.
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Errorf("signal wiclient: %v", err)
		}
	}
	if err := cmd.Wait(); err != nil && acquired {
		t.Errorf("wiclient did not exit cleanly on SIGTERM: %v", err)
	}
	if !acquired {
		t.Fatalf("wiclient got no token within 60s; last output: %s", last)
	}
	tok, err := os.ReadFile(out)
	if err != nil {
		t.Fatalf("read wiclient token: %v", err)
	}
	return string(tok)
}
