package main

import (
	"fmt"

	"github.com/spf13/pflag"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// restConfig loads a client config: the explicit kubeconfig, else $KUBECONFIG
// and the default loading rules, else the in-cluster config.
func restConfig(kubeconfig string, qps float32, burst int) (*rest.Config, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if kubeconfig != "" {
		rules.ExplicitPath = kubeconfig
	}
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		if ic, icErr := rest.InClusterConfig(); icErr == nil {
			cfg = ic
		} else {
			return nil, fmt.Errorf("no kubeconfig (set --kubeconfig or KUBECONFIG) and not in a cluster: %w", err)
		}
	}
	cfg.QPS, cfg.Burst = qps, burst
	return cfg, nil
}

func addKubeconfigFlag(f *pflag.FlagSet, path *string) {
	f.StringVar(path, flagKubeconfig, "", "kubeconfig file (default: $KUBECONFIG and ~/.kube/config, else the in-cluster service account)")
}
