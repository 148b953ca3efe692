#!/usr/bin/env bash
# The main job (README): a real single-node Kubernetes cluster on this machine with
# podid installed with its Helm chart (deploy/chart/podid, values-local.yaml) and a
# demo workload served.
#   hack/up.sh        install what is missing, start the cluster, build + import
#                     podid's images, deploy podid, run the demo, print what it got
#   hack/up.sh down   stop everything and remove every trace from the host
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

./hack/install.sh
./hack/cluster.sh up
./hack/image.sh
KUBECONFIG=$(./hack/cluster.sh kubeconfig)
export KUBECONFIG
kubectl=$K8S_BIN/kubectl

# shellcheck source=/dev/null # written by hack/cluster.sh up
. "$CLUSTER_DIR/cluster.env"
log "installing podid (helm upgrade --install podid deploy/chart/podid -f values-local.yaml)"
# The namespace comes first: the agent needs the privileged Pod Security level.
$kubectl create namespace podid-system --dry-run=client -o yaml |
  $kubectl label --local -f - pod-security.kubernetes.io/enforce=privileged app.kubernetes.io/part-of=podid -o yaml |
  $kubectl apply -f - >/dev/null
t=$(now_ms)
"$HELM" upgrade --install podid deploy/chart/podid --namespace podid-system \
  -f deploy/chart/podid/values-local.yaml --set sts.saIssuer="$PODID_SA_ISSUER" \
  --wait --timeout 5m
log "podid installed in $(since "$t")"

log "demo: the pod-identity manifests of seed article 001 (deploy/examples/pod-identity.yaml)"
$kubectl apply -f deploy/examples/pod-identity.yaml >/dev/null
$kubectl -n demo wait --for=condition=Ready pod/demo-app --timeout=120s >/dev/null
$kubectl -n demo wait --for=create azureassignedidentity/demo-app-demo-demo-identity --timeout=60s >/dev/null
$kubectl get azureidentities,azureidentitybindings,azurepodidentityexceptions -n demo -o wide
$kubectl get azureassignedidentities -A

log "demo: the workload-identity quick guide of seed article 003 (deploy/examples/workload-identity.yaml)"
$kubectl apply -f deploy/examples/workload-identity.yaml >/dev/null
$kubectl -n demo rollout status deploy/azcli-deployment --timeout=120s >/dev/null
pod=$($kubectl -n demo get pods -l app=azcli -o jsonpath='{.items[0].metadata.name}')
log "env injected by podid webhook into $pod:"
$kubectl -n demo exec "$pod" -- env | grep '^AZURE_' | sort
$kubectl -n demo exec "$pod" -- ls -l /var/run/secrets/azure/tokens/
log ""
log "podid is up. export KUBECONFIG=$KUBECONFIG; stop it with: ./hack/up.sh down"
