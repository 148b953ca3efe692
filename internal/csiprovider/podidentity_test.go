package csiprovider

import (
	"context"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/podid/podid/internal/agent"
	"github.com/podid/podid/internal/sts/keyvault"
	"github.com/podid/podid/internal/sts/ststest"
	"github.com/podid/podid/internal/token"
)

// boundDecider stands for the agent's binding rules: pods labelled
// aadpodidbinding=web have the identity; others none.
type boundDecider struct{ id token.Identity }

func (d boundDecider) Identities(_ context.Context, p *corev1.Pod) ([]token.Identity, error) {
	if p.Labels["aadpodidbinding"] == "web" {
		return []token.Identity{d.id}, nil
	}
	return nil, &agent.Denial{Reason: agent.DenyNoIdentity, Msg: "no AzureIdentityBinding selects pod " + p.Namespace + "/" + p.Name}
}

// podRequester mints the pod's service-account token as the API server
// would (the test issuer stands for the cluster's).
type podRequester struct {
	t  testing.TB
	is *ststest.Issuer
}

func (r podRequester) RequestToken(_ context.Context, p token.Pod, aud string, exp int64) (string, error) {
	return r.is.Token(r.t, p.Subject(), aud, time.Now(), time.Duration(exp)*time.Second, nil), nil
}

// usePodIdentity: the provider asks the node agent's pod-token endpoint
// (the agent's handler, with the agent's real token provider and cache
// against the sts) for the mounting pod's identity.
func TestMountPodIdentity(t *testing.T) {
	e := newEnv(t)
	id := e.identity(t, "web-v1", "shop/web", keyvault.RoleSecretsUser)
	e.set(t, "demosecret", "demovalue")

	pods := map[types.UID]*corev1.Pod{
		"uid-web":   {ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web", UID: "uid-web", Labels: map[string]string{"aadpodidbinding": "web"}}, Spec: corev1.PodSpec{ServiceAccountName: "web"}},
		"uid-other": {ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "other", UID: "uid-other"}, Spec: corev1.PodSpec{ServiceAccountName: "web"}},
	}
	tokens := token.NewCache(token.CacheConfig{Source: token.NewProvider(token.ProviderConfig{
		Authority: e.srv.URL, HTTPClient: e.srv.Client(), TokenRequester: podRequester{t: t, is: e.is}})})
	sock := filepath.Join(t.TempDir(), "pod-token.sock")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 2)
	go func() { done <- tokens.Run(ctx) }()
	go func() {
		done <- agent.ServePodTokens(ctx, discard(), sock, &agent.PodTokens{Pod: func(u types.UID) *corev1.Pod { return pods[u] },
			Decider: boundDecider{id: token.Identity{Kind: token.Federated, ClientID: id, TenantID: e.srv.TenantID, Origin: "test"}}, Tokens: tokens})
	}()
	t.Cleanup(func() { cancel(); <-done; <-done })

	p, err := New(Config{
		Clouds: []Cloud{{Name: localCloud, VaultDNSSuffix: e.srv.VaultDNSSuffix(), Authority: e.srv.URL}}, DefaultCloud: localCloud,
		Credentials: &PodCredentials{Transport: e.srv.Client(), PodIdentity: &AgentPodIdentities{Socket: sock}},
		Transport:   e.srv.VaultClient(),
	})
	if err != nil {
		t.Fatal(err)
	}
	params := map[string]string{"usePodIdentity": "true", "objects": objects("demosecret")}
	mount := func(name, uid string) error {
		attrs := map[string]string{"keyvaultName": e.vault, "tenantId": e.srv.TenantID, AttrPodNamespace: "shop", AttrPodName: name, AttrPodUID: uid, AttrServiceAccount: "web"}
		for k, v := range params {
			attrs[k] = v
		}
		m, err := Parse(attrs, 0o644)
		if err != nil {
			return err
		}
		files, _, err := p.Fetch(t.Context(), m)
		if err != nil {
			return grpcError(err)
		}
		if string(files[0].Contents) != "demovalue" {
			t.Errorf("demosecret = %q", files[0].Contents)
		}
		return nil
	}
	waitFor(t, sock)
	if err := mount("web", "uid-web"); err != nil {
		t.Fatalf("the bound pod: %v", err)
	}
	for _, tt := range []struct {
		name, pod, uid, has string
	}{
		{"a pod without a binding", "other", "uid-other", "no AzureIdentityBinding selects pod shop/other"},
		{"the bound pod's name with another UID (not on this node)", "web", "uid-gone", "no pod shop/web with UID uid-gone on this node"},
		{"another pod claiming the bound pod's UID", "other", "uid-web", "no pod shop/other with UID uid-web"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := mount(tt.pod, tt.uid)
			if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), tt.has) {
				t.Fatalf("got %v, want PermissionDenied with %q", err, tt.has)
			}
		})
	}
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

func waitFor(t *testing.T, sock string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if c, err := net.Dial("unix", sock); err == nil {
			_ = c.Close()
			return
		}
	}
	t.Fatalf("no socket at %s", sock)
}
