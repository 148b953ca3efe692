// Package daemon runs the serving side of a podid component, the same way
// for every subcommand: listeners that shut down gracefully and alike, the
// /healthz, /readyz, /metrics and pprof endpoints, the Prometheus registry
// and the process logger.
//
// A component hands Run its own long-running tasks (informers, servers,
// rotation loops) and says where its endpoints listen; Run owns every
// goroutine, the first failure stops them all, and an empty address means
// that endpoint is not served.
package daemon
