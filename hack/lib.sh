# Helpers shared by the hack/ scripts. Sourced, not executed.
# shellcheck shell=bash
# shellcheck disable=SC2034 # the layout variables are for the scripts that source this
. "$(dirname "${BASH_SOURCE[0]}")/versions.sh"

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

log() { printf '%s\n' "$*" >&2; }
die() { printf 'ERROR: %s\n' "$*" >&2; exit 1; }

# now_ms / since START_MS: wall-clock timing for the progress lines.
now_ms() { date +%s%3N; }
since() { echo "$(( $(now_ms) - $1 ))ms"; }

need_root() { [ "$(id -u)" = 0 ] || die "$(basename "$0") must run as root (it starts a kubelet and changes iptables)"; }

# apt_ensure PKG...: installs the missing packages (apt-get update once per call).
# The services these packages ship (containerd, etcd) must not start: the cluster
# runs its own instances on its own sockets and ports. policy-rc.d forbids that for
# the duration of the install when the machine does not already forbid it.
apt_ensure() {
  local missing=() p
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ ${#missing[@]} -eq 0 ]; then log "apt: $* present"; return 0; fi
  log "apt: installing ${missing[*]}"
  local policy=/usr/sbin/policy-rc.d own_policy=0
  if [ ! -e $policy ]; then
    printf '#!/bin/sh\nexit 101\n' > $policy && chmod +x $policy && own_policy=1
  fi
  local out; out=$(mktemp)
  if ! { DEBIAN_FRONTEND=noninteractive apt-get update -q &&
         DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"; } >"$out" 2>&1; then
    [ $own_policy = 1 ] && rm -f $policy
    tail -n 30 "$out" >&2; rm -f "$out"
    die "apt-get install ${missing[*]} failed"
  fi
  [ $own_policy = 1 ] && rm -f $policy
  rm -f "$out"
  log "apt: installed ${missing[*]}"
}

# --- the local cluster's fixed layout (hack/cluster.sh, hack/image.sh) -------------
CLUSTER_DIR=$PODID_CACHE/cluster      # PKI, kubeconfigs, configs, logs, pids, etcd, kubelet, containerd's image store
CLUSTER_RUN=/run/podid                # sockets and runtime state (tmpfs; short paths for unix sockets)
CTR_SOCK=$CLUSTER_RUN/containerd/containerd.sock
IMAGES_DIR=$PODID_CACHE/images        # built image tarballs and their inputs

# ctr talks to the cluster's own containerd, in the namespace the CRI uses.
ctr_() { ctr --address "$CTR_SOCK" --namespace k8s.io "$@"; }
