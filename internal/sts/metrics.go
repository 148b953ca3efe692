package sts

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the sts's Prometheus series. Labels never carry client ids,
// subjects or token material: only bounded sets (endpoint version, result).
type metrics struct {
	requests *prometheus.CounterVec   // by version and result ("ok" or the AADSTS code)
	latency  *prometheus.HistogramVec // by version
	rotated  prometheus.Counter
	// Key Vault data plane, by operation and result ("ok" or Key Vault's
	// error code): bounded sets, never vault or secret names.
	vaultRequests *prometheus.CounterVec
	vaultLatency  *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "podid", Subsystem: "sts", Name: "token_requests_total",
			Help: "Token requests by endpoint version and result (ok or AADSTS code).",
		}, []string{"version", "result"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "podid", Subsystem: "sts", Name: "token_request_duration_seconds",
			Help:    "Token request handling time.",
			Buckets: []float64{.0005, .001, .002, .005, .01, .025, .05, .1, .25, .5, 1},
		}, []string{"version"}),
		rotated: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "podid", Subsystem: "sts", Name: "signing_key_rotations_total",
			Help: "Signing key rotations.",
		}),
		vaultRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "podid", Subsystem: "sts", Name: "keyvault_requests_total",
			Help: "Key Vault data-plane requests by operation and result (ok or Key Vault error code).",
		}, []string{"operation", "result"}),
		vaultLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "podid", Subsystem: "sts", Name: "keyvault_request_duration_seconds",
			Help:    "Key Vault data-plane request handling time.",
			Buckets: []float64{.0005, .001, .002, .005, .01, .025, .05, .1, .25, .5, 1},
		}, []string{"operation"}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.requests, m.latency, m.rotated, m.vaultRequests, m.vaultLatency} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *metrics) observe(ver int, code int, start time.Time) {
	v := "v" + strconv.Itoa(ver)
	result := "ok"
	if code != 0 {
		result = "AADSTS" + strconv.Itoa(code)
	}
	m.requests.WithLabelValues(v, result).Inc()
	m.latency.WithLabelValues(v).Observe(time.Since(start).Seconds())
}

func (m *metrics) observeVault(op, result string, d time.Duration) {
	m.vaultRequests.WithLabelValues(op, result).Inc()
	m.vaultLatency.WithLabelValues(op).Observe(d.Seconds())
}
