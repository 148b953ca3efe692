#!/usr/bin/env bash
# A real single-node Kubernetes cluster on this machine, for podid's end-to-end tests:
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy,
# containerd + runc and a CNI bridge; and the local Azure Storage queue service
# (Azurite, hack/azurite.sh) that pods reach at a ClusterIP. See docs/local-cluster.md.
#
#   hack/cluster.sh up          start it (idempotent: a healthy cluster is left alone)
#   hack/cluster.sh down        stop it and remove every trace from the host, then verify
#   hack/cluster.sh status      exit 0 when every daemon runs and the node is Ready
#   hack/cluster.sh kubeconfig  print the admin kubeconfig path
#   hack/cluster.sh env         print the cluster facts (KEY=value) tests and tools use
#   hack/cluster.sh leftovers   list host state a previous run left behind (exit 1 if any)
#
# Prerequisite: hack/install.sh. Must run as root.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

K=$CLUSTER_DIR                      # short alias: state root
NODE_NAME=podid-node
POD_CIDR=10.244.0.0/24
BRIDGE=podid0
BRIDGE_IP=10.244.0.1
SVC_CIDR=10.96.0.0/24
KUBERNETES_SVC_IP=10.96.0.1
CLUSTER_DNS_IP=10.96.0.10           # hack/coredns/coredns.yaml's Service
CLUSTER_DOMAIN=cluster.local
API_PORT=6443
# The local queue service (Azurite) on the node: azurite_up/down, its addresses.
. "$REPO_ROOT/hack/azurite.sh"
# Daemons in start order; stopped in reverse.
DAEMONS="containerd etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy azurite"
# Ports the daemons listen on; none may be in use after down.
PORTS="$API_PORT $ETCD_CLIENT_PORT $ETCD_PEER_PORT 10248 10249 10250 10256 10257 10259 $AZURITE_PORT"
# Kernel settings the node changes (we, kubelet, kube-proxy); restored by down.
SYSCTLS="net.ipv4.ip_forward net.ipv4.conf.all.route_localnet net.bridge.bridge-nf-call-iptables
net.bridge.bridge-nf-call-ip6tables vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
kernel.keys.root_maxkeys kernel.keys.root_maxbytes"
# What identifies our iptables rules and chains.
# PODID- covers the agent's metadata interception chains (internal/intercept).
IPT_PATTERN="KUBE-|CNI-|PODID-|$BRIDGE|${POD_CIDR%.0/24}\.|${SVC_CIDR%.0/24}\."
# Host directories the kubelet creates outside its root dir (device-plugins sockets and
# container logs have fixed paths); removed by down unless they existed before up.
# So do podid's DirectoryOrCreate hostPaths (the agent's socket for the CSI provider,
# the CSI driver's provider sockets).
HOST_DIRS="/var/log/pods /var/log/containers /var/lib/kubelet /var/run/podid-agent /var/run/secrets-store-csi-providers"
# Directories containerd creates whatever its state dir (/run/containerd/s holds the
# shim sockets) and /run/netns (anyone may use it): removed only when empty.
SHARED_DIRS="/run/containerd/s /run/containerd /run/netns"
# Where libcni caches every ADD's result until the DEL (containerd's default).
CNI_RESULTS=/var/lib/cni/results

node_ip() {
  local ip
  ip=$(ip -4 route get 1.1.1.1 2>/dev/null | sed -n 's/.* src \([0-9.]*\).*/\1/p')
  [ -n "$ip" ] || ip=$(ip -4 -o addr show scope global | awk '{split($4,a,"/"); print a[1]; exit}')
  [ -n "$ip" ] || die "cannot find this machine's IPv4 address"
  echo "$ip"
}

kubectl_() { "$K8S_BIN/kubectl" --kubeconfig "$K/admin.kubeconfig" "$@"; }

pid_of() { local f=$K/pids/$1.pid; [ -f "$f" ] && cat "$f"; }
alive() { local p; p=$(pid_of "$1") && [ -n "$p" ] && kill -0 "$p" 2>/dev/null; }

fail_with_log() { # DAEMON MESSAGE
  log "ERROR: $2"
  if [ -f "$K/logs/$1.log" ]; then log "--- last lines of $K/logs/$1.log ---"; tail -n 25 "$K/logs/$1.log" >&2; fi
  log "(the cluster is left as is for inspection; hack/cluster.sh down removes it)"
  exit 1
}

# start NAME CMD...: runs CMD as a daemon in its own session; its PID is recorded
# (bash execs into CMD, so $$ is the daemon's PID). The daemon keeps no inherited
# descriptor but stdio: `flock /tmp/podid-node.lock cmd` hands its lock to cmd as
# fd 3, and a daemon holding it would keep the node locked for as long as the
# cluster runs (every later flock waits forever). Each close has its own 2>/dev/null:
# one on the whole loop would save stderr in a descriptor the loop then closes, and
# the daemon's stderr (klog's, containerd's log) would stay /dev/null.
start() {
  local n=$1; shift
  : >"$K/logs/$n.log"
  # shellcheck disable=SC2016 # $$, $0 and $@ belong to the inner shell
  setsid bash -c 'echo $$ >"$0"; for fd in /proc/$$/fd/*; do fd=${fd##*/}; [ "$fd" -gt 2 ] && { eval "exec $fd>&-"; } 2>/dev/null; done; exec "$@"' \
    "$K/pids/$n.pid" "$@" >>"$K/logs/$n.log" 2>&1 </dev/null 9>&- &
  for _ in $(seq 50); do [ -s "$K/pids/$n.pid" ] && return 0; sleep 0.02; done
  fail_with_log "$n" "$n did not start"
}

# wait_for DAEMON TIMEOUT_S DESC CMD...: polls CMD; fails fast if DAEMON dies.
wait_for() {
  local d=$1 to=$2 desc=$3; shift 3
  local t; t=$(now_ms)
  while ! "$@" >/dev/null 2>&1; do
    alive "$d" || fail_with_log "$d" "$d exited while waiting for: $desc"
    [ $(( $(now_ms) - t )) -lt $(( to * 1000 )) ] || fail_with_log "$d" "timed out after ${to}s waiting for: $desc"
    sleep 0.2
  done
  STAGES="${STAGES:+$STAGES, }$desc $(since "$t")"
  [ -z "${PODID_VERBOSE:-}" ] || log "  $desc ($(since "$t"))"
}
STAGES=

# ---------------------------------------------------------------- PKI, configs ---
make_pki() { # NODE_IP
  local ip=$1 p=$K/pki
  if [ -f "$p/ca.crt" ] && [ "$(cat "$p/node-ip" 2>/dev/null)" = "$ip" ]; then return 0; fi
  command -v go >/dev/null || die "go is not on PATH: hack/pki makes the cluster PKI"
  rm -rf "$p"
  # podid's own certificate code (internal/pki) makes the CA, the serving and
  # client certificates (ECDSA P-256) and the service-account key (RSA 2048).
  (cd "$REPO_ROOT" && go run ./hack/pki -dir "$p" -node-name "$NODE_NAME" -node-ip "$ip" -service-ip "$KUBERNETES_SVC_IP") ||
    die "hack/pki failed: cannot make the cluster PKI"
  echo "$ip" >"$p/node-ip"
  local n
  for n in admin kubelet controller-manager scheduler kube-proxy; do
    cat >"$K/$n.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: podid-local
  cluster: {server: "https://127.0.0.1:$API_PORT", certificate-authority: "$p/ca.crt"}
users:
- name: $n
  user: {client-certificate: "$p/$n.crt", client-key: "$p/$n.key"}
contexts:
- name: podid-local
  context: {cluster: podid-local, user: $n}
current-context: podid-local
EOF
  done
}

write_configs() { # NODE_IP
  local ip=$1 c=$K/config
  mkdir -p "$c" "$CLUSTER_RUN/cni/net.d" "$CLUSTER_RUN/cni/ipam"
  cat >"$c/containerd.toml" <<EOF
version = 2
root = "$K/containerd"
state = "$CLUSTER_RUN/containerd"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]
[grpc]
  address = "$CTR_SOCK"
[plugins."io.containerd.internal.v1.opt"]
  path = "$K/containerd-opt"
[plugins."io.containerd.grpc.v1.cri"]
  # Built and imported by hack/image.sh; nothing is ever pulled.
  sandbox_image = "localhost/pause:3.10"
  stream_server_address = "127.0.0.1"
  # This VM lacks CAP_SYS_RESOURCE, so nothing may set oom_score_adj below containerd's
  # own; the kubelet asks -998 for sandboxes and runc init would die with
  # "can't get final child's PID from pipe: EOF". Clamp instead.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false          # no systemd as PID 1: cgroupfs, as the kubelet
        Root = "$CLUSTER_RUN/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$CLUSTER_RUN/cni/net.d"
    max_conf_num = 1
EOF
  cat >"$CLUSTER_RUN/cni/net.d/10-podid.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "podid",
  "plugins": [
    {"type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": true, "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": "$CLUSTER_RUN/cni/ipam",
              "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$BRIDGE_IP"}]],
              "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
  cat >"$c/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: unix://$CTR_SOCK
cgroupDriver: cgroupfs            # matches containerd SystemdCgroup = false
failCgroupV1: false               # this host has cgroup v1
failSwapOn: false
oomScoreAdj: 0                    # no CAP_SYS_RESOURCE: the kubelet cannot lower its own score
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: "$K/pki/ca.crt"}
authorization: {mode: AlwaysAllow}
tlsCertFile: "$K/pki/kubelet-serving.crt"
tlsPrivateKeyFile: "$K/pki/kubelet-serving.key"
healthzBindAddress: 127.0.0.1
# CoreDNS (hack/coredns/coredns.yaml): ClusterFirst pods resolve through it, never through
# the node's resolv.conf (a name it does not serve is NXDOMAIN, not forwarded).
clusterDNS: [$CLUSTER_DNS_IP]
clusterDomain: $CLUSTER_DOMAIN
# Pods (and their ConfigMap volumes) are re-synced every 10 s instead of 1 min, so a
# changed kube-system/local-cloud-dns reaches CoreDNS within seconds (docs/local-cloud.md).
syncFrequency: 10s
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
imageGCHighThresholdPercent: 100  # local images cannot be pulled again: never collect them
imageGCLowThresholdPercent: 99
EOF
  cat >"$c/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: "$K/kube-proxy.kubeconfig"}
hostnameOverride: $NODE_NAME
mode: iptables
clusterCIDR: $POD_CIDR
nodePortAddresses: [primary]
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}  # leave the host's conntrack sysctls alone
EOF
}

# -------------------------------------------------------------------- host state ---
save_host_state() {
  mkdir -p "$K/host"
  if [ ! -f "$K/host/sysctl.orig" ]; then
    local s v
    for s in $SYSCTLS; do v=$(sysctl -n "$s" 2>/dev/null) && echo "$s=$v"; done >"$K/host/sysctl.orig.tmp"
    mv "$K/host/sysctl.orig.tmp" "$K/host/sysctl.orig"
    local d; for d in $HOST_DIRS $SHARED_DIRS; do [ -e "$d" ] && echo "$d"; done >"$K/host/dirs.orig" || true
  fi
}

# ipt_ours: every iptables/ip6tables rule and chain that looks like ours, one per line.
ipt_ours() {
  local cmd
  for cmd in iptables-save ip6tables-save; do
    command -v $cmd >/dev/null || continue
    $cmd 2>/dev/null | awk -v c="$cmd" '/^\*/{t=$1} /^[:-]/{print c, t, $0}' | sed 's/ \[[0-9]*:[0-9]*\]$//' |
      grep -E -- "$IPT_PATTERN" || true
  done | sort
}

setup_host_network() {
  sysctl -qw net.ipv4.ip_forward=1
  if [ ! -e /proc/sys/net/bridge/bridge-nf-call-iptables ]; then
    modprobe br_netfilter 2>/dev/null || die "kernel module br_netfilter is missing (needed so service traffic between pods is NATed)"
  fi
  sysctl -qw net.bridge.bridge-nf-call-iptables=1
  # The bridge exists before the first pod, so node-side servers can bind its address.
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link add "$BRIDGE" type bridge
  fi
  ip addr replace "$BRIDGE_IP/${POD_CIDR#*/}" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  # Lets a DNAT from pods to 127.0.0.1 (an interception rule) be routed.
  sysctl -qw "net.ipv4.conf.$BRIDGE.route_localnet=1"
}

# ---------------------------------------------------------------------- status ---
api_ready() { kubectl_ get --raw /readyz >/dev/null 2>&1; }
node_ready() {
  [ "$(kubectl_ get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]
}

cmd_status() {
  local ok=0 d
  for d in $DAEMONS; do
    if alive "$d"; then log "  $d: running (pid $(pid_of "$d"))"; else log "  $d: not running"; ok=1; fi
  done
  if [ $ok = 0 ] && api_ready && node_ready; then
    log "cluster up: node $NODE_NAME Ready; KUBECONFIG=$K/admin.kubeconfig"; return 0
  fi
  [ $ok = 0 ] && log "daemons run but the API server or the node is not ready"
  return 1
}

write_env() { # NODE_IP
  local ip=$1
  cat >"$K/cluster.env.tmp" <<EOF
KUBECONFIG=$K/admin.kubeconfig
PODID_NODE_NAME=$NODE_NAME
PODID_NODE_IP=$ip
PODID_BRIDGE=$BRIDGE
PODID_BRIDGE_IP=$BRIDGE_IP
PODID_POD_CIDR=$POD_CIDR
PODID_SERVICE_CIDR=$SVC_CIDR
PODID_CLUSTER_DNS=$CLUSTER_DNS_IP
PODID_CLUSTER_DOMAIN=$CLUSTER_DOMAIN
PODID_API_SERVER=https://$ip:$API_PORT
PODID_SA_ISSUER=https://$ip:$API_PORT
PODID_CA_FILE=$K/pki/ca.crt
PODID_SA_SIGNING_KEY=$K/pki/sa.key
PODID_CTR_ADDRESS=$CTR_SOCK
PODID_K8S_BIN=$K8S_BIN
PODID_KUBELET_DIR=$K/kubelet
PODID_AZURITE_ACCOUNT=$AZURITE_ACCOUNT
PODID_AZURITE_ACCOUNT_URL=$AZURITE_ACCOUNT_URL
PODID_AZURITE_ADDR=$BRIDGE_IP:$AZURITE_PORT
EOF
  mv "$K/cluster.env.tmp" "$K/cluster.env"
}

# preflight: what would make "up" fail half-way, refused before anything starts,
# each with the fix. Run after our own leftovers are gone, so whatever still holds a
# port belongs to someone else.
preflight() {
  local port line proc need_kb=$((4 * 1024 * 1024)) avail
  # cgroup v2, or v1 with the controllers the kubelet cannot run without.
  if [ ! -f /sys/fs/cgroup/cgroup.controllers ]; then
    local c
    for c in cpu memory pids; do
      [ -d /sys/fs/cgroup/$c ] || die "no cgroup support for '$c' (neither cgroup v2 at /sys/fs/cgroup nor a v1 $c hierarchy): the kubelet cannot run here; mount cgroup2 at /sys/fs/cgroup"
    done
  fi
  for port in $PORTS; do
    line=$(ss -Htlnp "sport = :$port" 2>/dev/null | head -n 1)
    [ -z "$line" ] && continue
    proc=$(sed -n 's/.*users:(("\([^"]*\)",pid=\([0-9]*\).*/\1 (pid \2)/p' <<<"$line")
    die "port $port is already in use by ${proc:-a process ss cannot name}; another Kubernetes or etcd on this machine? Stop it, then run this again"
  done
  mkdir -p "$PODID_CACHE"
  avail=$(df -Pk "$PODID_CACHE" | awk 'NR==2 {print $4}')
  [ "${avail:-0}" -ge $need_kb ] ||
    die "only $((avail / 1024)) MiB free under $PODID_CACHE; the cluster needs 4 GiB (images, etcd, logs): free some space or set PODID_CACHE elsewhere"
}

# -------------------------------------------------------------------------- up ---
cmd_up() {
  need_root
  local b
  for b in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl; do
    [ -x "$K8S_BIN/$b" ] || die "$K8S_BIN/$b is missing: run hack/install.sh first"
  done
  for b in etcd containerd runc ctr iptables conntrack; do
    command -v $b >/dev/null || die "$b is not installed: run hack/install.sh first"
  done
  azurite_check_installed
  [ -x "$COREDNS" ] || die "$COREDNS is missing: run hack/install.sh first (the cluster's DNS)"
  if cmd_status >/dev/null 2>&1; then
    if grep -q '^clusterDNS:' "$K/config/kubelet.yaml" 2>/dev/null; then
      # Idempotent and cheap: the queue service's Service, the cluster DNS and the
      # cluster facts, in case the control plane was restarted under a running
      # Azurite by a checkout of this script that predates it.
      azurite_service
      wait_for kube-proxy 60 "azurite Service programmed" \
        bash -c "iptables -t nat -S KUBE-SERVICES | grep -q -- '-d $AZURITE_SVC_IP/32'"
      start_dns
      write_env "$(node_ip)"
      log "cluster already up and healthy (KUBECONFIG=$K/admin.kubeconfig)"; return 0
    fi
    log "the running cluster predates its cluster DNS (the kubelet has no clusterDNS): recreating it"
  fi
  local d any=0
  for d in $DAEMONS; do alive "$d" && any=1; done
  # A listener on one of our ports with none of our daemons alive is someone
  # else's (another Kubernetes, etcd …): preflight names it, down cannot help.
  local ours
  ours=$(leftovers 2>/dev/null | grep -v '^LEFTOVER listener on port' || true)
  if [ $any = 1 ] || [ -n "$ours" ]; then
    log "a previous cluster is partly running or left state behind: taking it down first"
    cmd_down
  fi
  preflight

  local t0 t ip
  t0=$(now_ms); ip=$(node_ip)
  log "starting the local cluster (node $NODE_NAME, $ip, Kubernetes v$K8S_VERSION)"
  mkdir -p "$K"/{logs,pids,kubelet,containerd} "$CLUSTER_RUN"
  rm -f "$K/cluster.env"
  save_host_state
  make_pki "$ip"
  write_configs "$ip"
  setup_host_network
  azurite_up

  start containerd containerd --config "$K/config/containerd.toml"
  wait_for containerd 30 "containerd" ctr_ version
  "$REPO_ROOT/hack/image.sh" pause

  rm -rf "$K/etcd"; mkdir -m 700 "$K/etcd"
  start etcd etcd --name podid --data-dir "$K/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "podid=http://127.0.0.1:$ETCD_PEER_PORT" --listen-metrics-urls "" \
    --quota-backend-bytes 2147483648
  wait_for etcd 30 "etcd" curl -sf "http://127.0.0.1:$ETCD_CLIENT_PORT/health"

  local p=$K/pki
  # The service-account issuer is the API server's own address, reachable from the
  # node and from pods; its discovery document and JWKS are readable anonymously
  # (see the RBAC binding below), as with a managed cluster's OIDC issuer.
  start kube-apiserver "$K8S_BIN/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --bind-address=0.0.0.0 --secure-port=$API_PORT --advertise-address="$ip" \
    --tls-cert-file="$p/apiserver.crt" --tls-private-key-file="$p/apiserver.key" --client-ca-file="$p/ca.crt" \
    --service-account-issuer="https://$ip:$API_PORT" \
    --service-account-key-file="$p/sa.pub" --service-account-signing-key-file="$p/sa.key" \
    --service-cluster-ip-range=$SVC_CIDR \
    --authorization-mode=Node,RBAC --anonymous-auth=true \
    --enable-admission-plugins=NodeRestriction --allow-privileged=true \
    --kubelet-client-certificate="$p/apiserver-kubelet-client.crt" --kubelet-client-key="$p/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority="$p/ca.crt" --kubelet-preferred-address-types=InternalIP,Hostname \
    --profiling=false
  wait_for kube-apiserver 90 "kube-apiserver" api_ready
  kubectl_ apply -f - >/dev/null <<'EOF'
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: podid:service-account-issuer-discovery
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: system:service-account-issuer-discovery}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: Group, name: system:unauthenticated}
EOF

  # The controller-manager creates the default ServiceAccounts and kube-root-ca.crt;
  # without them pods never start.
  start kube-controller-manager "$K8S_BIN/kube-controller-manager" \
    --kubeconfig="$K/controller-manager.kubeconfig" \
    --authentication-kubeconfig="$K/controller-manager.kubeconfig" --authorization-kubeconfig="$K/controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 --leader-elect=false \
    --service-account-private-key-file="$p/sa.key" --root-ca-file="$p/ca.crt" \
    --cluster-signing-cert-file="$p/ca.crt" --cluster-signing-key-file="$p/ca.key" \
    --use-service-account-credentials=true --service-cluster-ip-range=$SVC_CIDR --profiling=false
  start kube-scheduler "$K8S_BIN/kube-scheduler" --kubeconfig="$K/scheduler.kubeconfig" \
    --authentication-kubeconfig="$K/scheduler.kubeconfig" --authorization-kubeconfig="$K/scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --leader-elect=false --profiling=false
  start kubelet "$K8S_BIN/kubelet" --config="$K/config/kubelet.yaml" --kubeconfig="$K/kubelet.kubeconfig" \
    --hostname-override=$NODE_NAME --node-ip="$ip" --root-dir="$K/kubelet"
  start kube-proxy "$K8S_BIN/kube-proxy" --config="$K/config/kube-proxy.yaml"

  wait_for kubelet 120 "node Ready" node_ready
  wait_for kube-controller-manager 60 "default ServiceAccount" \
    bash -c "'$K8S_BIN/kubectl' --kubeconfig '$K/admin.kubeconfig' -n default get sa/default cm/kube-root-ca.crt"
  wait_for kube-proxy 60 "kubernetes Service programmed" \
    bash -c "iptables -t nat -S KUBE-SERVICES | grep -q -- '-d $KUBERNETES_SVC_IP/32'"
  azurite_service
  wait_for kube-proxy 60 "azurite Service programmed" \
    bash -c "iptables -t nat -S KUBE-SERVICES | grep -q -- '-d $AZURITE_SVC_IP/32'"
  start_dns
  write_env "$ip"
  log "cluster up in $(since "$t0") ($STAGES)"
  log "KUBECONFIG=$K/admin.kubeconfig; hack/cluster.sh env prints the node and issuer addresses"
}

# ------------------------------------------------------------------ cluster DNS ---
dns_ready() {
  [ "$(kubectl_ -n kube-system get deployment coredns -o jsonpath='{.status.readyReplicas}' 2>/dev/null)" = 1 ] &&
    iptables -t nat -S KUBE-SERVICES | grep -q -- "-d $CLUSTER_DNS_IP/32"
}

# start_dns: CoreDNS (image built here, manifests hack/coredns/coredns.yaml), ready
# and its Service programmed. Idempotent: an unchanged image and manifest change nothing.
start_dns() {
  "$REPO_ROOT/hack/image.sh" coredns
  sed "s#image: localhost/coredns:.*#image: localhost/coredns:$COREDNS_VERSION#" "$REPO_ROOT/hack/coredns/coredns.yaml" |
    kubectl_ apply -f - >/dev/null || die "kubectl apply hack/coredns/coredns.yaml failed"
  wait_for kubelet 90 "cluster DNS ready ($CLUSTER_DNS_IP)" dns_ready
}

# ------------------------------------------------------------------------ down ---
phase() { [ -z "${PODID_VERBOSE:-}" ] || log "  $(since "$t0"): $*"; }

stop_daemons() { # NAME...: SIGTERM to all at once, up to 10 s, then SIGKILL
  local n p pids=()
  for n in "$@"; do
    p=$(pid_of "$n") || continue
    [ -n "$p" ] && kill "$p" 2>/dev/null && pids+=("$p")
  done
  for _ in $(seq 50); do
    local left=()
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && left+=("$p"); done
    pids=("${left[@]}")
    [ ${#pids[@]} -eq 0 ] && break
    sleep 0.2
  done
  for p in "${pids[@]}"; do log "  pid $p ignored SIGTERM for 10 s: killing"; kill -9 "$p" 2>/dev/null || true; done
  for n in "$@"; do rm -f "$K/pids/$n.pid"; done
}

# our_pids: this cluster's daemons and containerd shims, found by the paths in their
# command lines; never anything else (an envtest kube-apiserver from the same binary
# directory has no path of ours in its arguments).
our_pids() {
  local f d c argv
  # shellcheck disable=SC2013 # /proc/PID/cmdline paths hold no spaces
  for f in $(grep -lsaF -e "$K/" -e "$CTR_SOCK" /proc/[0-9]*/cmdline); do
    d=${f%/cmdline}
    [ "${d#/proc/}" = $$ ] && continue
    mapfile -d '' -t argv 2>/dev/null <"$f" || continue
    c="${argv[*]}"
    case "${c%% *}" in
      containerd|*/containerd|*/containerd-shim*|containerd-shim*|etcd|*/etcd|"$K8S_BIN"/kube-*) echo "${d#/proc/} $c" ;;
      node|*/node|nodejs|*/nodejs) [[ "$c" == *"$AZURITE_DIR/"* ]] && echo "${d#/proc/} $c" ;;   # Azurite
    esac
  done
}

our_mounts() { # mount points under our directories, deepest first
  awk '{print $5}' /proc/self/mountinfo | grep -E "^($K|$CLUSTER_RUN)(/|$)|^/(var/)?run/netns/cni-" | sort -r || true
}

cmd_down() {
  need_root
  local t0; t0=$(now_ms)
  # 1. Let the kubelet tear the pods down itself: volumes unmounted, CNI DEL run.
  if alive kube-apiserver && alive kubelet && api_ready; then
    kubectl_ delete deploy,ds,sts,rs,job --all -A --wait=false >/dev/null 2>&1 || true
    kubectl_ delete pod --all -A --grace-period=1 --timeout=60s >/dev/null 2>&1 ||
      log "  pods did not all terminate within 60 s; removing them from the runtime directly"
  fi
  phase "pods deleted"
  # 2. Stop the daemons, newest first.
  azurite_down                   # the queue service and its data
  stop_daemons kube-proxy        # its rules go with the rest in step 5
  stop_daemons kubelet kube-scheduler kube-controller-manager
  stop_daemons kube-apiserver
  stop_daemons etcd
  local d
  phase "control plane stopped"
  # 3. Remaining containers and sandboxes; their shims exit with them.
  if alive containerd; then
    local c
    for c in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks kill -s KILL "$c" >/dev/null 2>&1 || true; done
    for c in $(ctr_ containers ls -q 2>/dev/null); do
      ctr_ tasks delete -f "$c" >/dev/null 2>&1 || true
      ctr_ containers delete "$c" >/dev/null 2>&1 || true
    done
  fi
  stop_daemons containerd
  local pid rest
  while read -r pid rest; do
    [ -n "$pid" ] || continue
    log "  killing leftover process $pid: ${rest:0:100}"; kill -9 "$pid" 2>/dev/null || true
  done < <(our_pids)
  # A shim killed without its cleanup leaves its socket file behind; one nobody listens
  # on is dead (another containerd's live shims keep theirs).
  local s listening; listening=$(ss -xlH 2>/dev/null | awk '{print $5}')
  for s in /run/containerd/s/*; do
    if [ -S "$s" ] && ! grep -qxF "$s" <<<"$listening"; then rm -f "$s"; fi
  done
  # libcni's records of our sandboxes. A DEL removes each; one that is still here
  # belongs to a sandbox killed without it, and would claim its address again once
  # the next cluster's IPAM hands that address to a new pod.
  cni_records_ours | xargs -r rm -f
  phase "containers removed, containerd stopped"
  # 4. Mounts (pod volumes, the kubelet's self bind mount, rootfs, netns).
  local m
  for m in $(our_mounts); do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
  rm -f /run/netns/cni-* 2>/dev/null || true
  # 5. Network: the bridge (its veths go with their netns), iptables, conntrack.
  ip link del "$BRIDGE" 2>/dev/null || true
  ip link del podidimds0 2>/dev/null || true   # an e2e's stand-in metadata service, if it was killed
  ipt_cleanup
  ebt_cleanup
  conntrack -D -s "$POD_CIDR" >/dev/null 2>&1 || true
  conntrack -D -d "$POD_CIDR" >/dev/null 2>&1 || true
  phase "mounts and network cleaned"
  # 6. Empty cgroups left by the kubelet and containerd.
  for d in /sys/fs/cgroup/*/kubepods* /sys/fs/cgroup/*/k8s.io /sys/fs/cgroup/kubepods* /sys/fs/cgroup/k8s.io; do
    if [ -d "$d" ]; then find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true; fi
  done
  # 7. Kernel settings and host directories back to what they were.
  if [ -f "$K/host/sysctl.orig" ]; then
    sysctl -q -p "$K/host/sysctl.orig" >/dev/null 2>&1 || true
    for d in $HOST_DIRS; do grep -qx "$d" "$K/host/dirs.orig" 2>/dev/null || rm -rf --one-file-system "$d"; done
    for d in $SHARED_DIRS; do grep -qx "$d" "$K/host/dirs.orig" 2>/dev/null || rmdir "$d" 2>/dev/null || true; done
  fi
  # 8. Runtime state. The PKI, logs and containerd's image store stay for the next run.
  if [ -z "$(our_mounts)" ]; then
    rm -rf "$CLUSTER_RUN" "$K/etcd"
    rm -rf --one-file-system "$K/kubelet"
  fi
  rm -f "$K/cluster.env"
  phase "host state restored"
  local left; left=$(leftovers)
  if [ -n "$left" ]; then
    log "$left"
    die "cluster down, but the host still has the state listed above"
  fi
  rm -rf "$K/host"
  log "cluster down in $(since "$t0"); no leftovers"
}

# ipt_cleanup: removes our rules from the built-in chains, then our chains, in both
# families: one iptables-restore per family (one call per rule is slow under load),
# then rule by rule for anything that transaction could not remove.
ipt_cleanup() {
  local cmd save t rule ch
  for cmd in iptables ip6tables; do
    command -v $cmd >/dev/null || continue
    save=$(${cmd}-save 2>/dev/null) || continue
    grep -qE -- "$IPT_PATTERN" <<<"$save" || continue
    PAT=$IPT_PATTERN awk '
      /^\*/ { table = $0; n = 0; split("", chains); next }
      /^:(KUBE-|CNI-|PODID-)/ { chains[substr($1, 2)] = 1; next }
      /^-A (INPUT|OUTPUT|FORWARD|PREROUTING|POSTROUTING) / && $0 ~ ENVIRON["PAT"] { rules[++n] = $0; next }
      /^COMMIT/ {
        print table
        for (i = 1; i <= n; i++) { r = rules[i]; sub(/^-A/, "-D", r); print r }
        for (c in chains) print "-F " c
        for (c in chains) print "-X " c
        print "COMMIT"
      }' <<<"$save" | ${cmd}-restore --noflush 2>/dev/null && continue
    for t in filter nat mangle raw; do
      $cmd -t $t -S 2>/dev/null | grep -E '^-A (INPUT|OUTPUT|FORWARD|PREROUTING|POSTROUTING) ' |
        grep -E -- "$IPT_PATTERN" | sed 's/^-A/-D/' |
        while read -r rule; do eval "$cmd -t $t $rule" 2>/dev/null || true; done || true
      for ch in $($cmd -t $t -S 2>/dev/null | awk '/^-N (KUBE-|CNI-|PODID-)/ {print $2}'); do $cmd -t $t -F "$ch" 2>/dev/null || true; done
      for ch in $($cmd -t $t -S 2>/dev/null | awk '/^-N (KUBE-|CNI-|PODID-)/ {print $2}'); do $cmd -t $t -X "$ch" 2>/dev/null || true; done
    done
  done
}

# ebt_cleanup: removes the pod anti-spoofing chains podid agent keeps (ebtables;
# the agent leaves them in place on purpose when it stops).
ebt_cleanup() {
  command -v ebtables >/dev/null || return 0
  local t tb base ch
  # Every jump first (PODID-GUARD-OUT hangs off both OUTPUT and FORWARD), then the chains.
  for t in nat:PREROUTING:PODID-GUARD-IN filter:OUTPUT:PODID-GUARD-OUT filter:FORWARD:PODID-GUARD-OUT; do
    IFS=: read -r tb base ch <<<"$t"
    while ebtables -t "$tb" -D "$base" -j "$ch" 2>/dev/null; do :; done
  done
  for t in nat:PODID-GUARD-IN filter:PODID-GUARD-OUT; do
    IFS=: read -r tb ch <<<"$t"
    if ebtables -t "$tb" -L "$ch" >/dev/null 2>&1; then
      ebtables -t "$tb" -F "$ch" 2>/dev/null || true
      ebtables -t "$tb" -X "$ch" 2>/dev/null || true
    fi
  done
  return 0
}
ebt_ours() {
  command -v ebtables-save >/dev/null || return 0
  ebtables-save 2>/dev/null | grep -E 'PODID-GUARD' || true
}

# cni_records_ours: libcni's cached results of sandboxes on our network (named after
# it in the conflist) and their loopback records.
cni_records_ours() {
  local f id
  for f in "$CNI_RESULTS"/podid-*; do
    [ -f "$f" ] || continue
    id=${f#"$CNI_RESULTS"/podid-}; id=${id%-*}
    echo "$f"
    [ -f "$CNI_RESULTS/cni-loopback-$id-lo" ] && echo "$CNI_RESULTS/cni-loopback-$id-lo"
  done
  return 0
}

# ------------------------------------------------------------------- leftovers ---
# leftovers: one line per piece of host state a cluster left behind; empty when clean.
leftovers() {
  local d p rest l
  for d in $DAEMONS; do alive "$d" && echo "LEFTOVER process: $d (pid $(pid_of "$d"))"; done
  while read -r p rest; do [ -n "$p" ] && echo "LEFTOVER process: $p ${rest:0:120}"; done < <(our_pids)
  for p in $(our_mounts); do echo "LEFTOVER mount: $p"; done
  for p in /run/netns/cni-*; do [ -e "$p" ] && echo "LEFTOVER netns: $p"; done
  ip link show "$BRIDGE" >/dev/null 2>&1 && echo "LEFTOVER interface: $BRIDGE"
  ip link show podidimds0 >/dev/null 2>&1 && echo "LEFTOVER interface: podidimds0 (e2e stand-in metadata service)"
  ip -o link show type veth 2>/dev/null | grep -q "master $BRIDGE" && echo "LEFTOVER interface: veth on $BRIDGE"
  ipt_ours | sed 's/^/LEFTOVER iptables: /'
  ebt_ours | sed 's/^/LEFTOVER ebtables: /'
  for d in /sys/fs/cgroup/*/kubepods* /sys/fs/cgroup/*/k8s.io /sys/fs/cgroup/kubepods* /sys/fs/cgroup/k8s.io; do
    [ -d "$d" ] && echo "LEFTOVER cgroup: $d"
  done
  [ -e "$CLUSTER_RUN" ] && echo "LEFTOVER directory (runtime state, CNI config): $CLUSTER_RUN"
  [ -e "$K/azurite" ] && echo "LEFTOVER directory (Azurite's queues): $K/azurite"
  ls /etc/cni/net.d/*podid* >/dev/null 2>&1 && echo "LEFTOVER CNI config in /etc/cni/net.d"
  cni_records_ours | sed 's/^/LEFTOVER CNI record: /'

  if [ -f "$K/host/sysctl.orig" ]; then
    while IFS='=' read -r p rest; do
      [ "$(sysctl -n "$p" 2>/dev/null)" = "$rest" ] || echo "LEFTOVER sysctl: $p=$(sysctl -n "$p") (was $rest)"
    done <"$K/host/sysctl.orig"
    for d in $HOST_DIRS /run/containerd; do
      [ -e "$d" ] && ! grep -qx "$d" "$K/host/dirs.orig" && echo "LEFTOVER directory: $d"
    done
  fi
  l=$(ss -Hltn 2>/dev/null | awk '{print $4}' | sed 's/.*://' | sort -u)
  for p in $PORTS; do grep -qx "$p" <<<"$l" && echo "LEFTOVER listener on port $p"; done
  return 0
}

cmd_leftovers() {
  local left; left=$(leftovers)
  if [ -n "$left" ]; then echo "$left"; return 1; fi
  log "no leftovers: no cluster process (Azurite included; CoreDNS and every pod: shims, netns, cgroups), mount, netns, interface, iptables rule, cgroup, CNI config, port or changed sysctl"
}

# Dispatch only when executed (sourcing gives the functions, for debugging).
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  case "${1:-}" in
    up|down)
      # One up/down at a time on this machine: a second one waits (two at
      # once would fight over the same daemons, ports and iptables chains).
      mkdir -p "$K"
      exec 9>"$K/.lock"
      if ! flock -n 9; then
        log "another hack/cluster.sh up/down is running; waiting for it (at most 15 min)"
        flock -w 900 9 || die "gave up waiting for the other hack/cluster.sh"
      fi
      "cmd_$1" ;;
    status) cmd_status ;;
    kubeconfig) echo "$K/admin.kubeconfig" ;;
    env) [ -f "$K/cluster.env" ] || die "the cluster is not up (hack/cluster.sh up)"; cat "$K/cluster.env" ;;
    leftovers) cmd_leftovers ;;
    *) sed -n '7,12p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
  esac
fi
