#!/usr/bin/env bash
# Builds CoreDNS at the pinned version (versions.sh; hack/coredns/go.mod requires
# the same) from the Go module proxy into $COREDNS, with the plugins the local
# cluster's DNS uses (hack/coredns/main.go). Idempotent: nothing to do when that
# binary reports the pinned version. Its own module graph (hack/coredns), so
# CoreDNS's dependencies do not move podid's go.mod. Cold: ~3 min on 2 cores.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
want=v$COREDNS_VERSION
if [ -x "$COREDNS" ] && "$COREDNS" -version 2>/dev/null | grep -qx "CoreDNS-$COREDNS_VERSION"; then
  log "coredns $want present at $COREDNS"; exit 0
fi
src=$REPO_ROOT/hack/coredns
grep -q "github.com/coredns/coredns $want\$" "$src/go.mod" ||
  die "hack/coredns/go.mod does not require github.com/coredns/coredns $want (versions.sh): keep them in step"
mkdir -p "$(dirname "$COREDNS")"
t=$(now_ms)
log "building coredns $want from the Go module proxy (hack/coredns; ≈3 min cold on 2 cores)"
tmp=$(mktemp "$COREDNS.XXXXXX"); trap 'rm -f "$tmp" "$tmp.log"' EXIT
# -v lists each package as it is compiled: progress every 30 s from that count.
total=$(cd "$src" && go list -deps . | wc -l)
(cd "$src" && CGO_ENABLED=0 go build -v -trimpath -ldflags '-s -w' -o "$tmp" .) 2>"$tmp.log" &
pid=$!
while kill -0 "$pid" 2>/dev/null; do
  for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
  kill -0 "$pid" 2>/dev/null && log "  coredns: $(grep -cv '^#' "$tmp.log" || true) of ≤$total packages compiled ($(since "$t"))"
done
if ! wait "$pid"; then tail -n 20 "$tmp.log" >&2; rm -f "$tmp.log"; die "go build of coredns $want failed"; fi
rm -f "$tmp.log"
chmod 755 "$tmp"; mv "$tmp" "$COREDNS"
log "built coredns $want in $(since "$t") into $COREDNS"
