#!/usr/bin/env bash
# Installs everything the local cluster needs: node packages from Debian apt, and the
# Kubernetes binaries and the helm CLI built from the Go module proxy at the pinned versions,
# and Azurite (the local queue service) from npm.
# Idempotent; a no-op (well under a second) when everything is present.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_root

# etcd-server: etcd for both the API-server-only harness and the node.
# containerd, runc, containernetworking-plugins: the container runtime and CNI bridge.
# iptables, conntrack, iproute2: kube-proxy, kubelet and the node's network plumbing.
# openssl: inspecting certificates. curl, kmod, procps: health checks, modprobe, sysctl.
# busybox-static is NOT installed: hack/image.sh extracts it into the test-client image.
PACKAGES="etcd-server containerd runc containernetworking-plugins iptables conntrack iproute2
openssl ca-certificates curl kmod procps"
# shellcheck disable=SC2086
apt_ensure $PACKAGES
"$REPO_ROOT/hack/build-k8s.sh" >&2
"$REPO_ROOT/hack/install-helm.sh" >&2
"$REPO_ROOT/hack/install-csi-driver.sh" >&2
"$REPO_ROOT/hack/install-azurite.sh" >&2
"$REPO_ROOT/hack/install-coredns.sh" >&2
