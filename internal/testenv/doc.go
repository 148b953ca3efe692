// Package testenv starts a real control plane (etcd + kube-apiserver built by
// hack/build-k8s.sh at the pinned version) for integration tests, with the
// project's CRDs from deploy/crds installed. One instance serves a whole test
// package: start it from TestMain with Main.
//
// It never fakes the API server. When the binaries are missing, tests that
// need them are skipped with a loud message, unless PODID_REQUIRE_CLUSTER=1
// (set by hack/test.sh and CI), which turns the skip into a failure.
package testenv
