#!/usr/bin/env bash
# The test command (README, .ci/run). On a fresh machine it installs what the
# tests need — Debian packages, the pinned Kubernetes binaries built from the Go
# module proxy — then runs:
#   0. hack/verify.sh: gofmt, go mod tidy, generated code, staticcheck, shellcheck;
#   1. go vet and the unit + integration tests (a real etcd + kube-apiserver per
#      package, via internal/testenv);
#   2. the end-to-end suite on a real single node (hack/cluster.sh: kubelet,
#      containerd, CNI, kube-proxy …) with podid's images built locally, then
#      the main job (hack/up.sh) on that node.
# PODID_REQUIRE_CLUSTER=1 turns every "binaries missing" skip into a failure.
#   hack/test.sh            everything
#   hack/test.sh --no-e2e   skip step 2 (no node is started)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/local/go/bin
e2e=1
[ "${1:-}" = "--no-e2e" ] && e2e=0

./hack/install.sh
t=$(date +%s)
./hack/verify.sh
echo "verify: $(( $(date +%s) - t ))s"

export PODID_REQUIRE_CLUSTER=1
t=$(date +%s)
go vet ./...
# Integration packages each start their own control plane; -p 2 matches the
# machine's cores so they do not starve each other's API servers.
mapfile -t pkgs < <(go list ./... | grep -v /test/e2e)
go test -count=1 -p 2 -timeout 25m "${pkgs[@]}"
echo "unit + integration tests: $(( $(date +%s) - t ))s"
[ $e2e = 1 ] || exit 0

t=$(date +%s)
trap './hack/up.sh down' EXIT
./hack/cluster.sh up
./hack/image.sh
./hack/image.sh azcli # Debian's azure-cli for seed 003's azcli pod (TestHelmLifecycle)
go test -count=1 -timeout 20m ./test/e2e/...
echo "e2e tests: $(( $(date +%s) - t ))s"

# The main job itself on the same node: it fails unless every demo pod gets its
# token, so a broken README first command cannot land.
t=$(date +%s)
./hack/up.sh
echo "main job (hack/up.sh on the running node): $(( $(date +%s) - t ))s"
