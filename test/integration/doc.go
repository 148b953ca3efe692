// Package integration holds cross-component tests that run podid's parts
// in-process against a real kube-apiserver (internal/testenv): for example
// the workload-identity flow webhook → projected token → podid sts →
// unmodified azidentity → tokenverify.
//
// The tests skip loudly when the control-plane binaries are absent (run
// ./hack/install.sh) and fail instead under PODID_REQUIRE_CLUSTER=1. They
// bind only to 127.0.0.1.
package integration
