package main

import (
	"errors"
	"log/slog"
	"os"
	"time"

	"github.com/go-logr/logr"
	"github.com/spf13/cobra"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/podid/podid/internal/controller"
	"github.com/podid/podid/internal/scheme"
)

type controllerOptions struct {
	kubeconfig string
	qps        float32
	burst      int
	controller.Options
}

func newControllerCommand() *cobra.Command {
	o := controllerOptions{}
	cmd := &cobra.Command{
		Use:   "controller",
		Short: "Reconcile pods × AzureIdentityBindings into AzureAssignedIdentities",
		Long: `Runs the podid controller: for every pod labelled aadpodidbinding=<selector> it records
the identities the pod may hold as AzureAssignedIdentity objects, and keeps conditions on
identities, bindings and exceptions that say what to fix. Namespaced by default: a pod only
matches bindings in its own namespace unless --cluster-wide is given.`,
		Args: cobra.NoArgs,
		PreRunE: func(*cobra.Command, []string) error {
			if o.Workers < 1 || o.Workers > 256 {
				return usageError{errors.New("--workers must be between 1 and 256")}
			}
			if o.LeaderElection && o.LeaseDuration <= o.RenewDeadline {
				return usageError{errors.New("--leader-elect-lease-duration must exceed --leader-elect-renew-deadline")}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctrl.SetLogger(logr.FromSlogHandler(slog.NewJSONHandler(os.Stderr, nil)))
			cfg, err := restConfig(o.kubeconfig, o.qps, o.burst)
			if err != nil {
				return err
			}
			return controller.Run(cmd.Context(), cfg, scheme.New(), o.Options)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, then in-cluster)")
	f.Float32Var(&o.qps, "kube-api-qps", 100, "client-side QPS limit towards the API server")
	f.IntVar(&o.burst, "kube-api-burst", 200, "client-side burst towards the API server")
	f.BoolVar(&o.Rules.ClusterWide, "cluster-wide", false, "let bindings select pods in every namespace (legacy AAD Pod Identity behaviour); identities annotated aadpodidentity.k8s.io/Behavior=namespaced stay namespaced")
	f.StringVar(&o.MetricsAddr, "metrics-addr", ":8080", `Prometheus metrics listen address ("0" disables)`)
	f.StringVar(&o.HealthAddr, "health-addr", ":8081", `/healthz and /readyz listen address ("0" disables)`)
	f.StringVar(&o.DebugAddr, "debug-addr", "", `net/http/pprof listen address (off by default; keep it on loopback)`)
	f.BoolVar(&o.LeaderElection, "leader-elect", true, "elect a leader so several replicas are safe")
	f.StringVar(&o.LeaderElectionNamespace, "leader-elect-namespace", "", "namespace of the lease (default: the pod's namespace)")
	f.DurationVar(&o.LeaseDuration, "leader-elect-lease-duration", 15*time.Second, "lease duration")
	f.DurationVar(&o.RenewDeadline, "leader-elect-renew-deadline", 10*time.Second, "renew deadline")
	f.DurationVar(&o.RetryPeriod, "leader-elect-retry-period", 2*time.Second, "retry period")
	f.IntVar(&o.Workers, "workers", 8, "concurrent pod reconciles")
	f.DurationVar(&o.SyncPeriod, "sync-period", 10*time.Hour, "full resync period (a resync of unchanged state writes nothing)")
	return cmd
}
