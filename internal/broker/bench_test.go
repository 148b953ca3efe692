package broker

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podid/podid/internal/agent"
	"github.com/podid/podid/internal/token"
	"github.com/podid/podid/internal/workloadidentity"
)

// BenchmarkCachedToken compares, in one run, a cache hit at the broker
// (TLS, pod token validated and access answer remembered, token cached)
// with a cache hit on the agent's path (its IMDS handler, decision and
// token cache, plain HTTP on loopback): what a broker replica serves
// relative to what an agent serves from its own cache.
//
//	go test -run '^$' -bench BenchmarkCachedToken ./internal/broker/
func BenchmarkCachedToken(b *testing.B) {
	r := newRig(b)
	ctx := b.Context()
	ns := benchNamespace(b, r)
	cid := r.identity("bench")
	saWithIdentity(b, r, ns, "app", cid)
	r.grant(ns, cid, rbacv1.Subject{Kind: "ServiceAccount", Name: "app", Namespace: ns})
	pod := r.pod(ns, "p", "app", map[string]string{workloadidentity.UseLabel: "true"})
	podTok := mint(b, r.admin, pod, Audience, 3600)
	body := r.body(cid, "https://vault.azure.net")
	if st, out := r.ask(podTok, body); st != http.StatusOK {
		b.Fatalf("warm-up: %d %s", st, out)
	}

	// The agent's cached path, fed by the same broker for its one miss.
	informers, err := agent.NewDecisionCache(ctx, r.e.Config)
	if err != nil {
		b.Fatal(err)
	}
	ictx, stop := context.WithCancel(context.Background())
	b.Cleanup(stop)
	go func() { _ = informers.Start(ictx) }()
	informers.WaitForCacheSync(ctx)
	client, err := NewClient(ClientConfig{URL: r.url, HTTPClient: r.http, Tokens: token.KubeTokenRequester{Client: r.admin}, AgentTokenFile: r.agentTokenFile})
	if err != nil {
		b.Fatal(err)
	}
	pod.Annotations = map[string]string{workloadidentity.UseIdentityBindingAnnotation: "true"}
	h := agent.NewHandler(agent.HandlerConfig{
		Resolver: anyIP{pod},
		Decider:  &agent.BindingDecider{Reader: informers, DefaultTenantID: r.sts.TenantID, Authority: r.sts.URL},
		Tokens:   token.NewCache(token.CacheConfig{Source: token.Routed{Broker: client}}),
	})
	imds := httptest.NewServer(h)
	b.Cleanup(imds.Close)
	imdsURL := imds.URL + "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://vault.azure.net"
	plain := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}

	get := func() error {
		req, _ := http.NewRequest(http.MethodGet, imdsURL, nil)
		req.Header.Set("Metadata", "true")
		return do(plain, req)
	}
	post := func() error {
		req, _ := http.NewRequest(http.MethodPost, r.url+Path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+podTok)
		req.Header.Set(AgentHeader, r.agentToken)
		return do(r.http, req)
	}
	if err := get(); err != nil {
		b.Fatalf("agent warm-up: %v", err)
	}
	reviews, idp := r.reviews.Load(), r.idp.Load()
	for _, bc := range []struct {
		name string
		call func() error
	}{{"agent-cached", get}, {"broker-cached", post}} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetParallelism(8)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := bc.call(); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
	if r.reviews.Load() != reviews || r.idp.Load() != idp {
		b.Fatalf("cache hits cost %d TokenReviews and %d exchanges", r.reviews.Load()-reviews, r.idp.Load()-idp)
	}
}

// BenchmarkIdentityProviderCalls: 1,000 pods x 10 identities through the
// broker (pods of 10 namespaces, one service account each, every pod asking
// for every identity of its namespace... here every pod may use all 10).
// Reported: exchanges at the identity provider (goal 10: one per identity
// and resource per token lifetime) and TokenReviews per pod (goal ~1).
//
//	go test -run '^$' -bench BenchmarkIdentityProviderCalls -benchtime 1x ./internal/broker/
func BenchmarkIdentityProviderCalls(b *testing.B) {
	const pods, identities = 1000, 10
	r := newRig(b)
	ctx := b.Context()
	ns := benchNamespace(b, r)
	var cids []string
	for i := range identities {
		cid := r.identity(fmt.Sprintf("id%d", i))
		cids = append(cids, cid)
		// v1: one AzureIdentity and binding per identity, all selecting the pods.
		r.v1Identity(ns, fmt.Sprintf("id%d", i), cid, "all")
		r.grant(ns, cid, rbacv1.Subject{Kind: "Group", Name: "system:serviceaccounts:" + ns})
	}
	ensureServiceAccount(b, r.admin, ns, "app")
	var toks []string
	for i := range pods {
		p := r.pod(ns, fmt.Sprintf("p%d", i), "app", map[string]string{"aadpodidbinding": "all"})
		toks = append(toks, mint(b, r.admin, p, Audience, 3600))
	}
	for b.Loop() {
		reviews, idp := r.reviews.Load(), r.idp.Load()
		work := make(chan int)
		var wg sync.WaitGroup
		for range 32 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range work {
					for _, cid := range cids {
						if st, out := r.ask(toks[i], r.body(cid, "https://vault.azure.net")); st != http.StatusOK {
							b.Errorf("pod %d identity %s: %d %s", i, cid, st, out)
							return
						}
					}
				}
			}()
		}
		for i := range pods {
			work <- i
		}
		close(work)
		wg.Wait()
		b.ReportMetric(float64(r.idp.Load()-idp), "idp-calls")
		b.ReportMetric(float64(r.reviews.Load()-reviews)/pods, "tokenreviews/pod")
		b.ReportMetric(pods*identities, "requests")
	}
	_ = ctx
}

type anyIP struct{ pod *corev1.Pod }

func (a anyIP) Resolve(context.Context, netip.Addr) (*corev1.Pod, error) { return a.pod, nil }

func do(c *http.Client, req *http.Request) error {
	res, err := c.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", res.StatusCode)
	}
	return nil
}

func benchNamespace(b *testing.B, r *rig) string {
	b.Helper()
	ns, err := r.admin.CoreV1().Namespaces().Create(b.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "bench-"}}, metav1.CreateOptions{})
	if err != nil {
		b.Fatal(err)
	}
	return ns.Name
}

func saWithIdentity(b *testing.B, r *rig, ns, name, cid string) {
	b.Helper()
	if _, err := r.admin.CoreV1().ServiceAccounts(ns).Create(b.Context(), &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns,
		Annotations: map[string]string{workloadidentity.ClientIDAnnotation: cid}}}, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
}
