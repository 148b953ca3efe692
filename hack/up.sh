#!/usr/bin/env bash
# The main job (README): builds podid and runs `podid up` (internal/stack):
# install what is missing, start the local single-node cluster, build and import
# podid's images, install podid's Helm chart, set up identities with podid's CLI
# against the local sts, run the seed articles' demo pods with the unmodified
# Azure SDK for Go, and print a summary. It fails unless every demo got its token.
#   hack/up.sh [podid up flags]      e.g. --verbose
#   hack/up.sh down [flags]          podid down: remove every trace from the host
# podid is built into $PODID_CACHE/bin (with kubectl-podid, the same binary as a
# kubectl plugin); logs are under $PODID_CACHE/logs.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/local/go/bin
. hack/lib.sh
export PODID_CACHE
command -v go >/dev/null || die "go is not on PATH: install Go (https://go.dev/dl) to build podid"
verb=up
if [ "${1:-}" = down ]; then verb=down; shift; fi
podid=$PODID_CACHE/bin/podid
mkdir -p "$PODID_CACHE/bin"
log "building podid into $podid"
go build -o "$podid" ./cmd/podid
ln -sf podid "$PODID_CACHE/bin/kubectl-podid"
exec "$podid" "$verb" "$@"
