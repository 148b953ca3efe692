package main

import (
	"errors"
	"time"

	"github.com/spf13/cobra"

	"github.com/podid/podid/internal/controller"
	"github.com/podid/podid/internal/scheme"
)

type controllerOptions struct {
	serverOptions
	kubeconfig string
	qps        float32
	burst      int
	controller.Options
}

func newControllerCommand() *cobra.Command {
	o := controllerOptions{serverOptions: serverOptions{component: "controller"}}
	cmd := &cobra.Command{
		Use:   "controller",
		Short: "Reconcile pods × AzureIdentityBindings into AzureAssignedIdentities",
		Long: `Runs the podid controller: for every pod labelled aadpodidbinding=<selector> it records
the identities the pod may hold as AzureAssignedIdentity objects, and keeps conditions on
identities, bindings and exceptions that say what to fix. Namespaced by default: a pod only
matches bindings in its own namespace unless --cluster-wide is given.`,
		Args: noArgs,
		PreRunE: func(cmd *cobra.Command, _ []string) error {
			zeroDisables(cmd, flagMetricsAddr, flagHealthAddr, flagDebugAddr)
			errs := []error{o.serverOptions.validate(cmd)}
			if o.Workers < 1 || o.Workers > 256 {
				errs = append(errs, errors.New("--workers must be between 1 and 256"))
			}
			if o.LeaderElection && o.LeaseDuration <= o.RenewDeadline {
				errs = append(errs, errors.New("--leader-elect-lease-duration must exceed --leader-elect-renew-deadline"))
			}
			return usage(errs...)
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.logger() // controller-runtime logs through it
			cfg, err := restConfig(o.kubeconfig, o.qps, o.burst)
			if err != nil {
				return err
			}
			o.MetricsAddr, o.HealthAddr, o.DebugAddr = o.metricsAddr, o.healthAddr, o.debugAddr
			return controller.Run(cmd.Context(), cfg, scheme.New(), o.Options)
		},
	}
	f := cmd.Flags()
	addKubeconfigFlag(f, &o.kubeconfig)
	o.serverOptions.addFlags(f, serverDefaults{health: ":8081", metrics: ":8080"})
	f.Float32Var(&o.qps, "kube-api-qps", 100, "client-side QPS limit towards the API server")
	f.IntVar(&o.burst, "kube-api-burst", 200, "client-side burst towards the API server")
	f.BoolVar(&o.Rules.ClusterWide, flagClusterWide, false, "let bindings select pods in every namespace (legacy AAD Pod Identity behaviour); identities annotated aadpodidentity.k8s.io/Behavior=namespaced stay namespaced")
	f.BoolVar(&o.LeaderElection, "leader-elect", true, "elect a leader so several replicas are safe")
	f.StringVar(&o.LeaderElectionNamespace, "leader-elect-namespace", "", "namespace of the lease (default: the pod's namespace)")
	f.DurationVar(&o.LeaseDuration, "leader-elect-lease-duration", 15*time.Second, "lease duration")
	f.DurationVar(&o.RenewDeadline, "leader-elect-renew-deadline", 10*time.Second, "renew deadline")
	f.DurationVar(&o.RetryPeriod, "leader-elect-retry-period", 2*time.Second, "retry period")
	f.IntVar(&o.Workers, "workers", 8, "concurrent pod reconciles")
	f.DurationVar(&o.SyncPeriod, "sync-period", 10*time.Hour, "full resync period (a resync of unchanged state writes nothing)")
	return cmd
}
