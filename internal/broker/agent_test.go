package broker

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podid/podid/internal/agent"
	"github.com/podid/podid/internal/token"
	"github.com/podid/podid/internal/workloadidentity"
)

// The agent's IMDS handler, its caller resolution (the compact PodIndex),
// decision and token cache as the agent wires them, with the broker client
// for broker identities: a pod annotated for
// identity bindings gets an IMDS token from the broker; refusals and a
// broker outage reach the pod as IMDS errors; cached tokens keep flowing.
func TestAgentThroughBroker(t *testing.T) {
	r := newRig(t)
	ctx := t.Context()
	ns := r.e.Namespace(t)
	cid := r.identity("agent")
	for _, sa := range []string{"granted", "ungranted"} {
		if _, err := r.admin.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa, Namespace: ns,
			Annotations: map[string]string{workloadidentity.ClientIDAnnotation: cid}}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	r.grant(ns, cid, rbacv1.Subject{Kind: "ServiceAccount", Name: "granted", Namespace: ns})
	mk := func(name, sa string) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns,
			Labels:      map[string]string{workloadidentity.UseLabel: "true"},
			Annotations: map[string]string{workloadidentity.UseIdentityBindingAnnotation: "true"}},
			Spec: corev1.PodSpec{NodeName: node, ServiceAccountName: sa, Containers: []corev1.Container{{Name: "c", Image: "x"}}}}
		p, err := r.admin.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	granted, ungranted := mk("granted", "granted"), mk("ungranted", "ungranted")

	informers, err := agent.NewDecisionCache(ctx, r.e.Config)
	if err != nil {
		t.Fatal(err)
	}
	ictx, stopInformers := context.WithCancel(context.Background())
	t.Cleanup(stopInformers)
	go func() { _ = informers.Start(ictx) }()
	if !informers.WaitForCacheSync(ctx) {
		t.Fatal("informers not synced")
	}
	client, err := NewClient(ClientConfig{URL: r.url, HTTPClient: r.http, Tokens: token.KubeTokenRequester{Client: r.admin}, AgentTokenFile: r.agentTokenFile})
	if err != nil {
		t.Fatal(err)
	}
	direct := token.SourceFunc(func(context.Context, token.Request) (token.Token, error) {
		t.Error("a broker identity went to per-pod federation")
		return token.Token{}, &token.Error{Reason: token.ReasonProviderRejected, Msg: "per-pod federation used"}
	})
	cache := token.NewCache(token.CacheConfig{Source: token.Routed{Direct: direct, Broker: client}})
	// The pods as the agent's pod watch delivers them to its index (which
	// keeps only what a decision reads: the identity-binding annotation
	// must survive it).
	index := agent.NewPodIndex()
	addrGranted, addrUngranted := netip.MustParseAddr("10.244.9.1"), netip.MustParseAddr("10.244.9.2")
	for ip, p := range map[netip.Addr]*corev1.Pod{addrGranted: granted, addrUngranted: ungranted} {
		p = p.DeepCopy()
		p.Status.Phase, p.Status.PodIP, p.Status.PodIPs = corev1.PodRunning, ip.String(), []corev1.PodIP{{IP: ip.String()}}
		index.Upsert(p)
	}
	h := agent.NewHandler(agent.HandlerConfig{
		Resolver: &agent.IndexResolver{Index: index, NodeName: node},
		Decider:  &agent.BindingDecider{Reader: informers, DefaultTenantID: r.sts.TenantID, Authority: r.sts.URL},
		Tokens:   cache,
	})
	imds := func(from netip.Addr, resource string) (int, map[string]string) {
		t.Helper()
		req := httptest.NewRequest(http.MethodGet, "/metadata/identity/oauth2/token?api-version=2018-02-01&resource="+resource, nil)
		req.RemoteAddr = from.String() + ":40000"
		req.Header.Set("Metadata", "true")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		body, _ := io.ReadAll(rec.Result().Body)
		var m map[string]string
		if err := json.Unmarshal(body, &m); err != nil {
			t.Fatalf("IMDS answer not JSON of strings: %s", body)
		}
		return rec.Code, m
	}

	st, m := imds(addrGranted, "https://vault.azure.net")
	if st != http.StatusOK {
		t.Fatalf("granted pod: %d %v", st, m)
	}
	if got := r.appID(m["access_token"], "https://vault.azure.net"); got != cid || m["client_id"] != cid {
		t.Fatalf("appid %s client_id %s, want %s", got, m["client_id"], cid)
	}
	st, m = imds(addrUngranted, "https://vault.azure.net")
	if st != http.StatusNotFound || !strings.Contains(m["error_description"], AccessVerb) || !strings.Contains(m["error_description"], "podid broker") {
		t.Fatalf("ungranted pod: %d %v, want 404 naming the broker and %s", st, m, AccessVerb)
	}

	// Broker gone: the cached token keeps flowing, a new one is a 503
	// naming the broker.
	r.stop()
	if st, m = imds(addrGranted, "https://vault.azure.net"); st != http.StatusOK {
		t.Fatalf("cached token with the broker down: %d %v", st, m)
	}
	st, m = imds(addrGranted, "https://storage.azure.com")
	if st != http.StatusServiceUnavailable || !strings.Contains(m["error_description"], "podid broker "+r.url) {
		t.Fatalf("new token with the broker down: %d %v, want 503 naming the broker", st, m)
	}
}
