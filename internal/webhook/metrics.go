package webhook

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/podid/podid/internal/admission"
)

// Outcome is the bounded label value of a handled request.
type Outcome = admission.Outcome

// Outcomes of the mutating webhook; with the token guard's
// (tokenguard.OutcomeAllowed, tokenguard.OutcomeDenied) the only values of
// the "outcome" label.
const (
	OutcomeMutated          Outcome = "mutated"            // allowed with a patch
	OutcomeUnchanged        Outcome = "unchanged"          // selected pod, nothing to change
	OutcomeIgnored          Outcome = "ignored"            // not a pod CREATE, or not selected
	OutcomeMissingSADenied  Outcome = "missing_sa_denied"  // ServiceAccount not in cache, denied
	OutcomeMissingSAAllowed Outcome = "missing_sa_allowed" // ServiceAccount not in cache, admitted as is
	OutcomeInvalid          Outcome = "invalid"            // denied: bad annotation
	OutcomeBadRequest               = admission.OutcomeBadRequest
	OutcomeError                    = admission.OutcomeError
)

// Metrics are the webhook's Prometheus collectors. A nil *Metrics records
// nothing.
type Metrics struct {
	latency *prometheus.HistogramVec
}

// NewMetrics creates the collectors and registers them with reg (which may
// be nil).
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "podid",
			Subsystem: "webhook",
			Name:      "admission_duration_seconds",
			Help:      "Time to answer one AdmissionReview, by outcome.",
			Buckets:   []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5},
		}, []string{"outcome"}),
	}
	if reg != nil {
		if err := reg.Register(m.latency); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// Observe implements admission.Observer.
func (m *Metrics) Observe(o Outcome, d time.Duration) {
	if m == nil {
		return
	}
	m.latency.WithLabelValues(string(o)).Observe(d.Seconds())
}
