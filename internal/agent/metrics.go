package agent

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/podid/podid/internal/daemon"
	"github.com/podid/podid/internal/token"
)

// Request outcomes: the bounded label set of podid_agent_requests_total.
const (
	outcomeOK                = "ok"
	outcomeBadRequest        = "bad_request"
	outcomeBadPath           = "bad_path"
	outcomeNotFound          = "not_found"
	outcomeInstance          = "instance_denied"
	outcomeHostCaller        = "host_caller"
	outcomeUnknownCaller     = "unknown_caller"
	outcomeAmbiguousCaller   = "ambiguous_caller"
	outcomeStaleCaller       = "stale_caller"
	outcomeUnguardedCaller   = "unguarded_caller"
	outcomeNoIdentity        = "no_identity"
	outcomeNotAllowed        = "identity_not_allowed"
	outcomeExcepted          = "excepted"
	outcomeThrottled         = "throttled"
	outcomeUpstream          = "upstream_error"
	outcomeMissingFIC        = "missing_federated_credential"
	outcomeKubernetesError   = "kubernetes_error"
	outcomeInternal          = "internal_error"
	outcomeBrokerUnavailable = "broker_unavailable"
)

// Metrics are the agent's Prometheus collectors.
type Metrics struct {
	requests  *prometheus.CounterVec
	latency   *prometheus.HistogramVec
	lookups   *prometheus.CounterVec
	upstream  *prometheus.HistogramVec
	pods      prometheus.GaugeFunc
	podsValue func() float64
}

// NewMetrics builds the collectors and registers them with reg (nil:
// not registered). pods reports the number of pods watched (may be nil).
func NewMetrics(reg prometheus.Registerer, pods func() float64) (*Metrics, error) {
	m := newMetrics(pods)
	if err := daemon.Register(reg, m.requests, m.latency, m.lookups, m.upstream, m.pods); err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	return m, nil
}

// newMetrics builds the collectors without registering them.
func newMetrics(pods func() float64) *Metrics {
	if pods == nil {
		pods = func() float64 { return 0 }
	}
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "podid_agent_requests_total", Help: "IMDS requests by outcome.",
		}, []string{"outcome"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "podid_agent_request_duration_seconds", Help: "IMDS request latency by cache result (hit, miss, none).",
			Buckets: []float64{.0001, .00025, .0005, .001, .002, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"cache"}),
		lookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "podid_agent_token_cache_lookups_total", Help: "Token cache lookups by result (hit, miss).",
		}, []string{"result"}),
		upstream: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "podid_agent_upstream_duration_seconds", Help: "Identity provider fetches (including the TokenRequest) by identity kind and result.",
			Buckets: prometheus.ExponentialBuckets(.001, 2.5, 12),
		}, []string{"kind", "result"}),
		podsValue: pods,
	}
	m.pods = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "podid_agent_pods", Help: "Pods on this node in the agent's index."}, func() float64 { return m.podsValue() })
	// Pre-create the label values so dashboards see zeros.
	for _, o := range []string{outcomeOK, outcomeBadRequest, outcomeBadPath, outcomeNotFound, outcomeInstance, outcomeHostCaller,
		outcomeUnknownCaller, outcomeAmbiguousCaller, outcomeStaleCaller, outcomeUnguardedCaller, outcomeNoIdentity, outcomeNotAllowed, outcomeExcepted,
		outcomeThrottled, outcomeUpstream, outcomeMissingFIC, outcomeKubernetesError, outcomeInternal, outcomeBrokerUnavailable} {
		m.requests.WithLabelValues(o)
	}
	return m
}

func (m *Metrics) request(outcome, cache string, d time.Duration) {
	m.requests.WithLabelValues(outcome).Inc()
	m.latency.WithLabelValues(cache).Observe(d.Seconds())
}

// Lookup is a token.CacheConfig.OnLookup hook.
func (m *Metrics) Lookup(result string) { m.lookups.WithLabelValues(result).Inc() }

// Upstream is a token.CacheConfig.OnUpstream hook.
func (m *Metrics) Upstream(kind token.Kind, d time.Duration, err error) {
	res := "ok"
	if err != nil {
		res = token.ReasonOf(err)
		if res == "" {
			res = "error"
		}
	}
	m.upstream.WithLabelValues(kind.String(), res).Observe(d.Seconds())
}
