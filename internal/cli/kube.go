package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/podid/podid/internal/scheme"
)

// kube are the clients of the current cluster.
type kube struct {
	cfg *rest.Config
	c   client.Client
	cs  kubernetes.Interface
}

func (g *globals) kube() (*kube, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if g.kubeconfig != "" {
		rules.ExplicitPath = g.kubeconfig
	}
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %s", oneLine(err.Error()))
	}
	cfg.QPS, cfg.Burst = 50, 100
	c, err := client.New(cfg, client.Options{Scheme: scheme.New()})
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %s", oneLine(err.Error()))
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return &kube{cfg: cfg, c: c, cs: cs}, nil
}

// namespace is the kubeconfig context's namespace, else "default".
func (g *globals) namespace() string {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if g.kubeconfig != "" {
		rules.ExplicitPath = g.kubeconfig
	}
	ns, _, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).Namespace()
	if err != nil || ns == "" {
		return "default"
	}
	return ns
}

// issuer reads the cluster's service-account issuer from its OIDC discovery
// document (authenticated, through the kubeconfig's credentials).
func (k *kube) issuer(ctx context.Context) (string, error) {
	b, err := k.cs.Discovery().RESTClient().Get().AbsPath("/.well-known/openid-configuration").DoRaw(ctx)
	if err != nil {
		return "", fmt.Errorf("discover the cluster's service-account issuer (pass --issuer): %s", oneLine(err.Error()))
	}
	var d struct {
		Issuer string `json:"issuer"`
	}
	if err := json.Unmarshal(b, &d); err != nil || d.Issuer == "" {
		return "", fmt.Errorf("the cluster's /.well-known/openid-configuration has no issuer (pass --issuer)")
	}
	if u, err := url.Parse(d.Issuer); err != nil || u.Scheme != "https" {
		return "", fmt.Errorf("the cluster's issuer %q is not https: Entra refuses it", d.Issuer)
	}
	return d.Issuer, nil
}
