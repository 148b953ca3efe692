package controller

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	podidv1 "github.com/podid/podid/api/v1"
	"github.com/podid/podid/internal/binding"
)

// Options configure a controller process.
type Options struct {
	// Rules is the matching policy (namespaced unless ClusterWide).
	Rules binding.Rules
	// MetricsAddr, HealthAddr and DebugAddr (net/http/pprof) are listen
	// addresses of the manager's servers; "" disables ("0", controller-
	// runtime's own word for it, too).
	MetricsAddr string
	HealthAddr  string
	DebugAddr   string
	// LeaderElection makes replicas safe: only the lease holder reconciles.
	LeaderElection          bool
	LeaderElectionNamespace string
	LeaderElectionID        string
	LeaseDuration           time.Duration
	RenewDeadline           time.Duration
	RetryPeriod             time.Duration
	// Workers bounds concurrent pod reconciles.
	Workers int
	// SyncPeriod is how often every object is reconciled again regardless
	// of events; with unchanged state that makes no API writes.
	SyncPeriod time.Duration
	// SeveralInProcess allows more than one manager in this process (tests):
	// controller names must otherwise be unique per process.
	SeveralInProcess bool
	// Client overrides (tests count writes with it); nil uses the manager's.
	NewClient client.NewClientFunc
}

// NewManager assembles a manager with the controller set up, without starting it.
func NewManager(ctx context.Context, cfg *rest.Config, scheme *runtime.Scheme, o Options) (ctrl.Manager, error) {
	le := o.LeaderElectionID
	if le == "" {
		le = "podid-controller"
	}
	var sync *time.Duration
	if o.SyncPeriod > 0 {
		sync = &o.SyncPeriod
	}
	metricsAddr := o.MetricsAddr
	if metricsAddr == "" {
		metricsAddr = "0" // controller-runtime reads "" as its default :8080
	}
	mopts := ctrl.Options{
		Scheme:                        scheme,
		Metrics:                       metricsserver.Options{BindAddress: metricsAddr},
		HealthProbeBindAddress:        o.HealthAddr,
		PprofBindAddress:              o.DebugAddr,
		LeaderElection:                o.LeaderElection,
		LeaderElectionID:              le,
		LeaderElectionNamespace:       o.LeaderElectionNamespace,
		LeaderElectionReleaseOnCancel: true,
		NewClient:                     o.NewClient,
		Cache: cache.Options{
			SyncPeriod: sync,
			// The controller never writes pods, so it caches only what a
			// decision reads: a fraction of a full pod's memory at 10k pods.
			// Assignments are cached trimmed too (assignment_cache.go).
			ByObject: map[client.Object]cache.ByObject{
				&corev1.Pod{}:                    {Transform: trimPod},
				&podidv1.AzureAssignedIdentity{}: {Transform: trimAssignment},
			},
			DefaultTransform: cache.TransformStripManagedFields(),
		},
	}
	if o.SeveralInProcess {
		mopts.Controller.SkipNameValidation = &o.SeveralInProcess
	}
	if o.LeaseDuration > 0 {
		mopts.LeaseDuration, mopts.RenewDeadline, mopts.RetryPeriod = &o.LeaseDuration, &o.RenewDeadline, &o.RetryPeriod
	}
	mgr, err := ctrl.NewManager(cfg, mopts)
	if err != nil {
		return nil, fmt.Errorf("could not create manager: %w", err)
	}
	reg := prometheus.Registerer(ctrlmetrics.Registry) // what the manager's metrics server serves
	if o.SeveralInProcess {
		// Managers sharing a process (tests) cannot share the global
		// registry's series: each counts into its own.
		reg = prometheus.NewRegistry()
	}
	m, err := NewMetrics(reg, mgr.GetCache())
	if err != nil {
		return nil, fmt.Errorf("controller metrics: %w", err)
	}
	if err := Setup(ctx, mgr, Config{
		Client:                  mgr.GetClient(),
		Recorder:                mgr.GetEventRecorderFor(FieldManager),
		Rules:                   o.Rules,
		Metrics:                 m,
		MaxConcurrentReconciles: o.Workers,
	}); err != nil {
		return nil, err
	}
	if o.HealthAddr != "" && o.HealthAddr != "0" {
		if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
			return nil, fmt.Errorf("add healthz: %w", err)
		}
		if err := mgr.AddReadyzCheck("caches", func(req *http.Request) error {
			if !mgr.GetCache().WaitForCacheSync(req.Context()) {
				return fmt.Errorf("caches not synced")
			}
			return nil
		}); err != nil {
			return nil, fmt.Errorf("add readyz: %w", err)
		}
	}
	return mgr, nil
}

// Run runs the controller until ctx ends.
func Run(ctx context.Context, cfg *rest.Config, scheme *runtime.Scheme, o Options) error {
	mgr, err := NewManager(ctx, cfg, scheme, o)
	if err != nil {
		return err
	}
	if err := mgr.Start(ctx); err != nil {
		return fmt.Errorf("controller stopped: %w", err)
	}
	return nil
}

// trimPod keeps the fields the controller reads.
func trimPod(obj any) (any, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	return &corev1.Pod{
		TypeMeta: p.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{
			Name: p.Name, Namespace: p.Namespace, UID: p.UID, ResourceVersion: p.ResourceVersion,
			Labels: p.Labels, DeletionTimestamp: p.DeletionTimestamp, Generation: p.Generation,
		},
		Spec:   corev1.PodSpec{NodeName: p.Spec.NodeName, HostNetwork: p.Spec.HostNetwork},
		Status: corev1.PodStatus{Phase: p.Status.Phase},
	}, nil
}
