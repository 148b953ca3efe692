package broker

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/podid/podid/internal/daemon"
)

// Metrics are the broker's own; no label carries a token, pod or identity.
type Metrics struct {
	requests *prometheus.CounterVec
	reviews  *prometheus.CounterVec
	lookups  *prometheus.CounterVec
	upstream *prometheus.CounterVec
}

func newMetrics() *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "podid_broker_requests_total", Help: "Broker token requests by outcome code."}, []string{"code"}),
		reviews:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "podid_broker_token_reviews_total", Help: "Token validations by result (cached: remembered; agent_*: the agents' own tokens)."}, []string{"result"}),
		lookups:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "podid_broker_token_cache_lookups_total", Help: "Token cache lookups by result."}, []string{"result"}),
		upstream: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "podid_broker_upstream_requests_total", Help: "Exchanges at the identity provider by result."}, []string{"result"}),
	}
	return m
}

// NewMetrics registers the broker's metrics with reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := newMetrics()
	return m, daemon.Register(reg, m.requests, m.reviews, m.lookups, m.upstream)
}
