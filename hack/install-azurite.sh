#!/usr/bin/env bash
# Installs Azurite, Microsoft's storage emulator, at the pinned version into
# $PODID_CACHE/azurite-<version> (never globally): Node.js and npm from Debian apt
# when missing, then `npm ci` of hack/azurite/package-lock.json (the whole
# dependency tree pinned by integrity hash; no install scripts run). The local
# cluster runs its queue service (hack/azurite.sh). Idempotent: a no-op when the
# installed tree was made from the same lockfile.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

src=$REPO_ROOT/hack/azurite
want=$(cat "$src/package.json" "$src/package-lock.json" | sha256sum | cut -d' ' -f1)
bin=$AZURITE_DIR/node_modules/azurite/dist/src/queue/main.js
if [ "$(cat "$AZURITE_DIR/.installed" 2>/dev/null)" = "$want" ] && [ -f "$bin" ]; then
  log "azurite $AZURITE_VERSION present at $AZURITE_DIR"; exit 0
fi

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  need_root
  apt_ensure nodejs npm
fi
major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null) || die "node does not run"
[ "$major" -ge 18 ] || die "Node.js $(node --version) is too old for Azurite $AZURITE_VERSION: 18 or later is needed (Debian 12's nodejs is 18)"

t=$(now_ms)
total=$(grep -c '"node_modules/' "$src/package-lock.json")
log "azurite: installing azurite@$AZURITE_VERSION from npm into $AZURITE_DIR ($total packages in the lockfile, ≈120 MB; ≈30 s)"
tmp=$AZURITE_DIR.tmp
rm -rf "$tmp"; mkdir -p "$tmp"
cp "$src/package.json" "$src/package-lock.json" "$tmp/"
out=$tmp/npm.log
# --ignore-scripts: no package runs code at install time (none needs to);
# no audit, fund or update-notifier requests: only the package downloads.
(cd "$tmp" && NPM_CONFIG_UPDATE_NOTIFIER=false npm ci --omit=dev --ignore-scripts --no-audit --no-fund \
  --loglevel=warn >"$out" 2>&1) &
npm_pid=$!
while kill -0 "$npm_pid" 2>/dev/null; do
  sleep 5
  kill -0 "$npm_pid" 2>/dev/null || break
  mb=$(du -sm "$tmp" 2>/dev/null | cut -f1)
  log "azurite: npm ci running ($(since "$t"), ${mb:-0} MB of ≈120 MB unpacked)"
done
if ! wait "$npm_pid"; then
  tail -n 30 "$out" >&2
  rm -rf "$tmp"
  die "npm ci of hack/azurite/package-lock.json failed (is the npm registry reachable?)"
fi
[ -f "$tmp/node_modules/azurite/dist/src/queue/main.js" ] || { rm -rf "$tmp"; die "npm ci finished but azurite's queue service is missing"; }
got=$(node -p 'require(process.argv[1]).version' "$tmp/node_modules/azurite/package.json")
[ "$got" = "$AZURITE_VERSION" ] || { rm -rf "$tmp"; die "npm installed azurite $got, not the pinned $AZURITE_VERSION (hack/azurite/package.json and versions.sh disagree)"; }
echo "$want" >"$tmp/.installed"
rm -rf "$AZURITE_DIR"; mv "$tmp" "$AZURITE_DIR"
log "azurite: installed azurite@$AZURITE_VERSION in $(since "$t")"
