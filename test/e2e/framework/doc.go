// Package framework is what podid's end-to-end tests use to drive the real local
// cluster that hack/cluster.sh runs (a kubelet, containerd and a CNI bridge on this
// machine): a handle on the cluster and the facts about it (node and bridge
// addresses, service-account issuer, CA), namespaces and manifests that clean up
// after themselves, pods built from the locally imported images, waiting, logs and
// exec, a recording HTTP server on the node, and service-account token checks.
//
// It never brings the cluster up. Tests run only with PODID_E2E=1 or
// PODID_REQUIRE_CLUSTER=1 (the node is a machine-wide resource: a plain
// `go test ./...` must not deploy into it). A test calls Connect; when the cluster
// is not up the test is skipped with a loud message, or fails under
// PODID_REQUIRE_CLUSTER=1 (hack/test.sh sets it). Waits poll the API with a
// deadline; nothing sleeps.
package framework
