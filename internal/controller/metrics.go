package controller

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/client"

	podidv1 "github.com/podid/podid/api/v1"
	"github.com/podid/podid/internal/daemon"
)

// Metrics are podid controller's own metrics; controller-runtime adds the
// reconcile counts and durations (controller_runtime_reconcile_*).
type Metrics struct {
	writes *prometheus.CounterVec
}

// NewMetrics registers the metrics with reg. assigned reads the cache on
// each scrape to report how many AzureAssignedIdentities exist.
func NewMetrics(reg prometheus.Registerer, cache client.Reader) (*Metrics, error) {
	m := &Metrics{
		writes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "podid_controller_assignment_writes_total",
			Help: "AzureAssignedIdentity writes by verb (create, update, delete).",
		}, []string{"verb"}),
	}
	assigned := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "podid_controller_assigned_identities",
		Help: "AzureAssignedIdentity objects in the controller's cache.",
	}, func() float64 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var l podidv1.AzureAssignedIdentityList
		if err := cache.List(ctx, &l, client.UnsafeDisableDeepCopy); err != nil {
			return -1
		}
		return float64(len(l.Items))
	})
	if err := daemon.Register(reg, m.writes, assigned); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *Metrics) write(verb string) {
	if m != nil {
		m.writes.WithLabelValues(verb).Inc()
	}
}
