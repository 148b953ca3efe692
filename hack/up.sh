#!/usr/bin/env bash
# The main job (README): a real single-node Kubernetes cluster on this machine with
# podid deployed from deploy/ and a demo workload served.
#   hack/up.sh        install what is missing, start the cluster, build + import
#                     podid's images, deploy podid, run the demo, print what it got
#   hack/up.sh down   stop everything and remove every trace from the host
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/local/go/bin
. hack/lib.sh
if [ "${1:-}" = down ]; then exec ./hack/cluster.sh down; fi

./hack/install.sh
./hack/cluster.sh up
./hack/image.sh
KUBECONFIG=$(./hack/cluster.sh kubeconfig)
export KUBECONFIG
kubectl=$K8S_BIN/kubectl

log "deploying podid (kubectl apply -k deploy/)"
$kubectl apply -k deploy/ >/dev/null
$kubectl wait --for=condition=Established crd --all --timeout=60s >/dev/null
$kubectl -n podid-system rollout status deploy/podid-controller --timeout=180s
$kubectl -n podid-system rollout status deploy/podid-webhook --timeout=180s

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
