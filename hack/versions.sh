# Pinned versions shared by every hack/ script. Sourced, not executed.
# shellcheck shell=bash
# shellcheck disable=SC2034 # the variables are for the scripts that source this
# Kubernetes 1.33 is the newest line whose kubelet still runs on a cgroup v1 host
# without extra flags (1.35 refuses cgroup v1 by default); client libraries match it.
K8S_VERSION=1.33.4
# staticcheck (module honnef.co/go/tools) for hack/verify.sh, built from the Go module proxy.
STATICCHECK_VERSION=v0.8.2
ETCD_CLIENT_PORT=12379
ETCD_PEER_PORT=12380
# Everything slow and reusable lives here, keyed on the pinned version.
PODID_CACHE=${PODID_CACHE:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.cache}
K8S_BIN=${K8S_BIN:-$PODID_CACHE/k8s-v$K8S_VERSION/bin}
# helm, built from the Go module proxy by hack/install-helm.sh (its own module graph,
# so podid's go.mod keeps its Kubernetes client versions).
HELM_VERSION=3.21.4
HELM=${HELM:-$PODID_CACHE/bin/helm}
# The Secrets Store CSI driver (sigs.k8s.io/secrets-store-csi-driver), built from the Go
# module proxy by hack/install-csi-driver.sh in its own module graph. podid's go.mod
# requires the same version (the provider API, provider/v1alpha1, and the CRDs come from it).
CSI_DRIVER_VERSION=1.6.0
CSI_DRIVER=${CSI_DRIVER:-$PODID_CACHE/bin/secrets-store-csi-driver-v$CSI_DRIVER_VERSION}
# Azurite, Microsoft's storage emulator (npm; hack/azurite/package-lock.json pins the tree):
# the local cluster's queue service (hack/azurite.sh). 3.33.0 is the newest release
# without telemetry (3.34 added Application Insights, on by default) and still runs
# on Debian 12's Node.js 18 (3.36 and later need Node 21/22).
AZURITE_VERSION=3.33.0
AZURITE_DIR=${AZURITE_DIR:-$PODID_CACHE/azurite-$AZURITE_VERSION}
# CoreDNS, the local cluster's DNS: hack/coredns (its own module, go.mod pins the
# version) built by hack/install-coredns.sh.
COREDNS_VERSION=1.14.7
COREDNS=${COREDNS:-$PODID_CACHE/bin/coredns-v$COREDNS_VERSION}
