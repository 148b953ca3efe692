#!/usr/bin/env bash
# Builds the helm CLI at the pinned version (versions.sh) from the Go module proxy into
# $PODID_CACHE/bin/helm. Idempotent: does nothing when that binary reports the pinned
# version. Built outside podid's module so helm's Kubernetes modules do not move podid's.
# Cold: ~4 min on 2 cores; warm Go build cache: ~20 s.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/versions.sh"
want=v$HELM_VERSION
if [ -x "$HELM" ] && [ "$("$HELM" version --template '{{.Version}}' 2>/dev/null)" = "$want" ]; then
  echo "helm $want present at $HELM"; exit 0
fi
mkdir -p "$(dirname "$HELM")"
t=$(date +%s)
echo "building helm $want from the Go module proxy (≈4 min cold on 2 cores)"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
# Without the version ldflag helm reports v3.x-dev and charts' kubeVersion checks misfire.
GOFLAGS=-mod=mod GOBIN=$tmp go install -trimpath \
  -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$want -X helm.sh/helm/v3/internal/version.gitTreeState=clean" \
  "helm.sh/helm/v3/cmd/helm@$want"
mv "$tmp/helm" "$HELM"
echo "built helm $want in $(( $(date +%s)-t ))s into $HELM"
