#!/usr/bin/env bash
# The main job (README): a real single-node Kubernetes cluster on this machine,
# podid installed with its Helm chart (deploy/chart/podid, values-local.yaml),
# identities set up with podid's own CLI against the local sts, and three demo
# pods that get a token with the unmodified Azure SDK for Go; prints a summary.
#   hack/up.sh        install what is missing, start the cluster, build + import
#                     podid's images, deploy podid, run the demo, print what it got
#   hack/up.sh down   stop everything and remove every trace from the host
# A second run on a running system changes nothing and reprints the summary.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/local/go/bin
. hack/lib.sh
if [ "${1:-}" = down ]; then
  # The agent's interception rules outlive it by design (deploy/chart/podid/README.md):
  # uninstall the release (the agent stops putting them back), then remove them.
  env_file=$CLUSTER_DIR/cluster.env
  if [ -f "$env_file" ]; then
    # shellcheck source=/dev/null # written by hack/cluster.sh up
    . "$env_file"
    if [ -x "$HELM" ] && ! "$HELM" uninstall podid --namespace podid-system --kubeconfig "$KUBECONFIG" \
      --ignore-not-found --wait --timeout 2m >&2; then
      log "helm uninstall failed; stopping the cluster anyway"
    fi
    podid=$IMAGES_DIR/podid/rootfs/podid
    [ -x "$podid" ] && "$podid" agent uninstall-interception --pod-cidr "$PODID_POD_CIDR" --host-ip "$PODID_NODE_IP" >&2
  fi
  exec ./hack/cluster.sh down
fi
[ $# = 0 ] || die "usage: hack/up.sh [down]"

t_all=$(now_ms)
./hack/install.sh
./hack/cluster.sh up
./hack/image.sh
KUBECONFIG=$(./hack/cluster.sh kubeconfig)
export KUBECONFIG
kubectl=$K8S_BIN/kubectl
# shellcheck source=/dev/null # written by hack/cluster.sh up
. "$CLUSTER_DIR/cluster.env"

# The local sts's tenant and the operator's credential: podid's CLI signs in with
# it as a user does with `az login` against Azure. An app registration that is
# Owner on ARM, in the sts's bootstrap; its secret is made once here, kept 0600.
TENANT_ID=72f988bf-86f1-41af-91ab-2d7cd011db47
ADMIN_CLIENT_ID=04b07795-8ddb-461a-bbee-02f9e1bf7b46
SUBSCRIPTION_ID=0b1f6471-1bf0-4dda-aec3-cb9272f09590
STS_IP=10.96.0.100 # values-local.yaml
UP_DIR=$PODID_CACHE/up
mkdir -p "$UP_DIR" && chmod 700 "$UP_DIR"
[ -s "$UP_DIR/admin-secret" ] || (umask 077 && head -c 32 /dev/urandom | base64 | tr -d '/+=\n' >"$UP_DIR/admin-secret")
(umask 077 && cat >"$UP_DIR/values-admin.yaml" <<VALUES
sts:
  bootstrap:
    tenants:
    - id: $TENANT_ID
      domains: [podid.local]
      applications:
      - clientId: $ADMIN_CLIENT_ID
        displayName: podid-up-admin
        secrets: [{value: "$(cat "$UP_DIR/admin-secret")"}]
      roleAssignments:
      - {principal: $ADMIN_CLIENT_ID, resource: "https://management.azure.com", role: Owner}
VALUES
)

log "installing podid (helm upgrade --install podid deploy/chart/podid -f values-local.yaml)"
# The namespace comes first: the agent needs the privileged Pod Security level.
$kubectl create namespace podid-system --dry-run=client -o yaml |
  $kubectl label --local -f - pod-security.kubernetes.io/enforce=privileged app.kubernetes.io/part-of=podid -o yaml |
  $kubectl apply -f - >/dev/null
t=$(now_ms)
"$HELM" upgrade --install podid deploy/chart/podid --namespace podid-system \
  -f deploy/chart/podid/values-local.yaml -f "$UP_DIR/values-admin.yaml" --set sts.saIssuer="$PODID_SA_ISSUER" \
  --wait --timeout 5m >/dev/null
$kubectl -n podid-system rollout status daemonset/podid-agent --timeout=120s >/dev/null
log "podid installed and ready in $(since "$t")"

# The user's side, as against Azure: identities, federated credentials and a
# role assignment through podid's CLI and the sts's ARM-compatible API.
t=$(now_ms)
podid=$PODID_CACHE/bin/podid
go build -o "$podid" ./cmd/podid
ln -sf podid "$PODID_CACHE/bin/kubectl-podid" # the same binary as a kubectl plugin
$kubectl -n podid-system get configmap podid-sts-ca -o jsonpath='{.data.ca\.pem}' >"$UP_DIR/sts-ca.pem"
# The CLI's own config ($XDG_CONFIG_HOME/podid/config.yaml): after up, podid's
# verbs talk to this sts by default; `podid config set-cloud azure` switches.
"$podid" config set-cloud local --authority "https://$STS_IP" --ca-file "$UP_DIR/sts-ca.pem" \
  --tenant-id "$TENANT_ID" --client-id "$ADMIN_CLIENT_ID" --client-secret-file "$UP_DIR/admin-secret" \
  --subscription "$SUBSCRIPTION_ID" -g demo --location westeurope >/dev/null
client_id() { # NAME: creates the identity (idempotent) and prints its client id
  "$podid" identity create "$1" -o json | sed -n 's/.*"clientId": *"\([^"]*\)".*/\1/p' | head -n 1
}
V1_ID=$(client_id demo-pod-identity)
V2_ID=$(client_id demo-workload-identity)
if [ -z "$V1_ID" ] || [ -z "$V2_ID" ]; then die "podid identity create printed no client id"; fi
$kubectl create namespace demo --dry-run=client -o yaml | $kubectl apply -f - >/dev/null
# A v1 pod's token comes by federation with its own service account (docs/agent.md).
$kubectl -n demo create serviceaccount demo-v1 --dry-run=client -o yaml | $kubectl apply -f - >/dev/null
"$podid" fic create --identity demo-pod-identity --service-account demo/demo-v1 >/dev/null
if [ -z "$("$podid" role-assignment list --assignee demo-pod-identity -o json | grep 'Storage Queue Data Contributor' || true)" ]; then
  "$podid" role-assignment create --assignee demo-pod-identity --role "Storage Queue Data Contributor" \
    --scope https://storage.azure.com >/dev/null
fi
"$podid" sa create -n demo --name demo-v2 --identity demo-workload-identity >/dev/null
log "identities set up with podid's CLI in $(since "$t"): demo-pod-identity $V1_ID, demo-workload-identity $V2_ID"
log "podid's CLI now talks to this sts by default (podid config view; podid config set-cloud azure switches back)"

# Workload pods trust the sts through its CA (the ConfigMap the chart publishes).
$kubectl -n demo create configmap podid-sts-ca --from-file=ca.pem="$UP_DIR/sts-ca.pem" --dry-run=client -o yaml |
  $kubectl apply -f - >/dev/null

t=$(now_ms)
log "demo: three pods ask for a token with the unmodified Azure SDK for Go (deploy/examples/demo.yaml)"
sed -e "s/__V1_CLIENT_ID__/$V1_ID/g; s/__SUBSCRIPTION_ID__/$SUBSCRIPTION_ID/g" deploy/examples/demo.yaml | $kubectl apply -f - >/dev/null
key_claims() { # POD PROGRAM: waits for the program's "key claims" line and prints it
  local pod=$1 prog=$2 i out
  for i in $(seq 1 60); do
    out=$($kubectl -n demo logs "$pod" 2>/dev/null || true)
    if grep -q "^$prog: key claims " <<<"$out"; then
      grep "^$prog: key claims " <<<"$out" | head -n 1 | sed "s/^$prog: key claims //"
      return 0
    fi
    [ $((i % 5)) != 0 ] || log "  waiting for demo/$pod ($((i * 2))s): $(tail -n 1 <<<"$out")"
    sleep 2
  done
  log "demo/$pod got no token in 120s; its log:"
  $kubectl -n demo logs "$pod" >&2 || true
  return 1
}
ok=1
v1=$(key_claims demo-v1 miclient) || ok=0
v2=$(key_claims demo-v2 wiclient) || ok=0
v2imds=$(key_claims demo-v2-imds miclient) || ok=0
demo_time=$(since "$t")

components=$($kubectl -n podid-system get pods -o jsonpath='{range .items[*]}{.metadata.labels.app\.kubernetes\.io/name}={.status.phase}{"\n"}{end}' |
  sort | uniq -c | awk '{printf "%s%s ×%s", sep, $2, $1; sep=", "}')
cat <<SUMMARY

podid is up in $(since "$t_all"): Kubernetes v$K8S_VERSION, one node ($PODID_NODE_NAME, $PODID_NODE_IP)
  podid-system: $components
  identity provider: podid sts at https://$STS_IP, tenant $TENANT_ID

demo, $demo_time (the Azure SDK for Go, unmodified; tokens are never printed, only their claims):
  v1  demo/demo-v1       aadpodidbinding → IMDS 169.254.169.254 → agent       demo-pod-identity
      ${v1:-NO TOKEN}
  v2  demo/demo-v2       workload identity → federated token → sts          demo-workload-identity
      ${v2:-NO TOKEN}
  v2  demo/demo-v2-imds  workload identity, an SDK that knows only IMDS      demo-workload-identity
      ${v2imds:-NO TOKEN}

next:
  export KUBECONFIG=$KUBECONFIG PATH=\$PATH:$PODID_CACHE/bin
  podid doctor pod/demo-v1 -n demo      # or: kubectl podid doctor pod/demo-v1 -n demo
  podid identity list
  ./hack/up.sh down
SUMMARY
[ $ok = 1 ] || die "a demo pod got no token (its log is above; '$podid doctor pod/NAME -n demo' explains why)"
