# The local cluster's Azure Storage queue service: Azurite (Microsoft's storage
# emulator, hack/install-azurite.sh) on the node, owned by hack/cluster.sh, which
# sources this file and calls azurite_up / azurite_down. See docs/local-cluster.md,
# "Local resource servers".
#
#   - HTTPS only, with a serving certificate from the cluster CA (hack/pki), which
#     every pod already trusts: kube-root-ca.crt, mounted at
#     /var/run/secrets/kubernetes.io/serviceaccount/ca.crt;
#   - --oauth basic: Bearer tokens are checked (issuer sts.windows.net & co.,
#     storage audience, nbf/exp; NOT the signature, see the doc);
#   - one account, $AZURITE_ACCOUNT, whose shared key is random per start and
#     never written down, so shared-key and SAS requests cannot succeed: a Bearer
#     token is the only way in (the well-known devstoreaccount1 does not exist);
#   - listens on the pods' gateway (the bridge address) only, not on the host's
#     network; pods reach it through Service $AZURITE_NS/$AZURITE_SVC
#     ($AZURITE_SVC_IP:443, no selector, an EndpointSlice naming the bridge);
#   - data under $CLUSTER_DIR/azurite, removed by down like etcd's.
# shellcheck shell=bash
# shellcheck disable=SC2034 # the layout variables are for the scripts that source this

AZURITE_NS=podid-local
AZURITE_SVC=azurite
AZURITE_SVC_IP=10.96.0.110
AZURITE_PORT=10001
AZURITE_ACCOUNT=podiddemo
# The URL a pod uses until the cluster resolves Azure's public names: path style,
# the account in the path (Azurite's form for an IP host). Once it does,
# https://$AZURITE_ACCOUNT.queue.core.windows.net (the certificate names both).
AZURITE_ACCOUNT_URL=https://$AZURITE_SVC_IP/$AZURITE_ACCOUNT
AZURITE_HOSTS="$AZURITE_SVC_IP,$BRIDGE_IP,*.queue.core.windows.net,$AZURITE_SVC.$AZURITE_NS.svc,$AZURITE_SVC.$AZURITE_NS.svc.cluster.local"

azurite_main() { echo "$AZURITE_DIR/node_modules/azurite/dist/src/queue/main.js"; }

azurite_check_installed() {
  command -v node >/dev/null || die "node is not installed: run hack/install.sh first (Azurite, the local queue service, runs on Node.js)"
  [ -f "$(azurite_main)" ] || die "Azurite $AZURITE_VERSION is missing from $AZURITE_DIR: run hack/install.sh first"
}

azurite_probe() { # any HTTP answer over TLS that verifies under the cluster CA
  curl -s -o /dev/null --max-time 2 --cacert "$K/pki/ca.crt" "https://$BRIDGE_IP:$AZURITE_PORT/"
}

azurite_up() {
  (cd "$REPO_ROOT" && go run ./hack/pki serving -dir "$K/pki" -name azurite -hosts "$AZURITE_HOSTS") ||
    die "hack/pki could not issue Azurite's serving certificate"
  mkdir -p "$K/azurite"
  # The key goes through the environment (readable by root only), never argv.
  AZURITE_ACCOUNTS="$AZURITE_ACCOUNT:$(head -c 32 /dev/urandom | base64 -w0)"
  export AZURITE_ACCOUNTS
  start azurite node "$(azurite_main)" --queueHost "$BRIDGE_IP" --queuePort "$AZURITE_PORT" \
    --location "$K/azurite" --cert "$K/pki/azurite.crt" --key "$K/pki/azurite.key" --oauth basic
  unset AZURITE_ACCOUNTS
  wait_for azurite 30 "azurite (queue service, HTTPS)" azurite_probe
}

# azurite_service: the ClusterIP Service pods use, its one endpoint the bridge address.
azurite_service() {
  kubectl_ apply -f - >/dev/null <<EOF2
apiVersion: v1
kind: Namespace
metadata: {name: $AZURITE_NS}
---
apiVersion: v1
kind: Service
metadata:
  name: $AZURITE_SVC
  namespace: $AZURITE_NS
  annotations: {podid.dev/served-by: "hack/cluster.sh: Azurite $AZURITE_VERSION on the node, queue service, --oauth basic, HTTPS"}
spec:
  clusterIP: $AZURITE_SVC_IP
  ports: [{name: https, port: 443, targetPort: $AZURITE_PORT, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: $AZURITE_SVC-node
  namespace: $AZURITE_NS
  labels: {kubernetes.io/service-name: $AZURITE_SVC, endpointslice.kubernetes.io/managed-by: podid.dev-cluster-sh}
addressType: IPv4
ports: [{name: https, port: $AZURITE_PORT, protocol: TCP}]
endpoints: [{addresses: ["$BRIDGE_IP"], conditions: {ready: true}}]
EOF2
}

azurite_down() {
  stop_daemons azurite
  rm -rf "$K/azurite"
}
