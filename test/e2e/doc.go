// Package e2e holds podid's end-to-end tests: real pods on the real local node
// (hack/cluster.sh), driven through test/e2e/framework. Run them with hack/test.sh,
// or by hand after `hack/install.sh && hack/cluster.sh up && hack/image.sh`:
//
//	PODID_REQUIRE_CLUSTER=1 go test ./test/e2e/...
//
// They run only with PODID_E2E=1 or PODID_REQUIRE_CLUSTER=1; without the cluster
// they skip with a loud message, or fail under PODID_REQUIRE_CLUSTER=1.
package e2e
