#!/usr/bin/env bash
# Builds the Secrets Store CSI driver at the pinned version (versions.sh) from the Go
# module proxy into $CSI_DRIVER ($PODID_CACHE/bin). Idempotent: does nothing when that
# binary reports the pinned version. Built in a scratch module that requires only the
# driver, so in the driver's own module graph (its Kubernetes libraries do not move
# podid's), with one replacement: see hack/csi-driver/mlog. Not `go install module@version`: that reads the proxy's version list, which
# the proxy does not serve for this module.
# Cold: ~3 min on 2 cores; warm Go build cache: ~15 s.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
want=v$CSI_DRIVER_VERSION
mod=sigs.k8s.io/secrets-store-csi-driver
have=$( (cd "$REPO_ROOT" && go list -m -f "{{.Version}}" $mod) 2>/dev/null) || have=""
[ "$have" = "$want" ] || die "go.mod requires $mod $have but hack/versions.sh pins $want: keep them equal"
if [ -x "$CSI_DRIVER" ] && "$CSI_DRIVER" --version 2>/dev/null | grep -q "\"BuildVersion\":\"$want\""; then
  echo "secrets-store-csi-driver $want present at $CSI_DRIVER"; exit 0
fi
mkdir -p "$(dirname "$CSI_DRIVER")"
t=$(date +%s)
echo "building secrets-store-csi-driver $want from the Go module proxy (≈3 min cold on 2 cores)"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
# Progress: the build prints nothing for minutes; say it is alive every 30 s.
( while sleep 30; do echo "  … still building secrets-store-csi-driver ($(( $(date +%s)-t ))s)"; done ) &
ticker=$!
# The ticker is gone by then on success: under errexit a failing kill in the
# EXIT trap would turn the script's status into 1.
trap 'kill $ticker 2>/dev/null || true; rm -rf "$tmp"' EXIT
# Static (the image has no libc); the version ldflag is what --version and the
# driver's metrics report.
(
  cd "$tmp"
  printf 'module podid.local/csi-driver-build\n\ngo 1.25\n' >go.mod
  # monis.app/mlog (the driver's log setup) is not served by the module proxy: a
  # klog-backed stand-in of the names the driver calls (hack/csi-driver/mlog).
  # The driver's own code is built unmodified.
  cp -r "$REPO_ROOT/hack/csi-driver/mlog" "$tmp/mlog"
  printf 'replace monis.app/mlog => ./mlog\n' >>go.mod
  GOFLAGS=-mod=mod go get "$mod@$want" >/dev/null 2>&1 || GOFLAGS=-mod=mod go get "$mod@$want"
  CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -o "$tmp/secrets-store-csi-driver" \
    -ldflags "-s -w -X $mod/pkg/version.BuildVersion=$want" "$mod/cmd/secrets-store-csi-driver"
)
kill $ticker 2>/dev/null || true
mv "$tmp/secrets-store-csi-driver" "$CSI_DRIVER"
echo "built secrets-store-csi-driver $want in $(( $(date +%s)-t ))s into $CSI_DRIVER"
