#!/usr/bin/env bash
# Checks that the tree has not drifted from what its tools would make of it, so
# drift fails the test command instead of accumulating:
#   - gofmt: every Go file is gofmt-formatted
#   - tidy: go.mod and go.sum are what `go mod tidy` writes
#   - generate: deepcopy code, CRDs and the controller's RBAC match hack/generate.sh
#   - staticcheck: no findings (built once from the Go module proxy at the pinned version)
#   - shellcheck: no findings in hack/*.sh and .ci/run (shellcheck from apt)
# Every check runs; each failure is printed under its name with what to do, and
# the script exits 1 naming the checks that failed.
#   hack/verify.sh              all checks
#   hack/verify.sh gofmt tidy   only these
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"
export PATH=$PATH:/usr/local/go/bin

STATICCHECK=$PODID_CACHE/bin/staticcheck-$STATICCHECK_VERSION

# tree_files [PATHSPEC...]: the files of the working tree (tracked or not,
# not ignored, not deleted), NUL-separated.
tree_files() {
  local f
  while IFS= read -r -d '' f; do
    [ -e "$f" ] && printf '%s\0' "$f"
  done < <(git ls-files -z --cached --others --exclude-standard -- "$@")
}

check_gofmt() {
  local files; files=$(tree_files '*.go' | xargs -0 gofmt -l)
  [ -z "$files" ] && return 0
  echo "not gofmt-formatted (run: gofmt -w FILE):"
  echo "$files"
  return 1
}

check_tidy() {
  # hack/coredns is its own module (CoreDNS's dependencies stay out of podid's).
  go mod tidy -diff && (cd hack/coredns && go mod tidy -diff) && return 0
  echo "go.mod/go.sum (or hack/coredns's) differ from what 'go mod tidy' writes (diff above; run: go mod tidy there)"
  return 1
}

# Regenerates into a copy of the tree, so the working tree is never rewritten.
check_generate() {
  local tmp rc=0; tmp=$(mktemp -d)
  # shellcheck disable=SC2064 # expand now: tmp is local
  trap "rm -rf '$tmp'" RETURN
  tree_files | tar --null -T - -cf - | tar -C "$tmp" -xf -
  (cd "$tmp" && ./hack/generate.sh) || { echo "hack/generate.sh failed"; return 1; }
  local d
  for d in api deploy/crds deploy/controller; do
    diff -ruN "$d" "$tmp/$d" || rc=1
  done
  [ $rc = 0 ] || echo "generated files are stale (diff above: tree → generated; run: hack/generate.sh)"
  return $rc
}

ensure_staticcheck() {
  [ -x "$STATICCHECK" ] && return 0
  log "verify: building staticcheck $STATICCHECK_VERSION into $PODID_CACHE/bin"
  local tmp; tmp=$(mktemp -d)
  GOFLAGS='' GOBIN=$tmp go install "honnef.co/go/tools/cmd/staticcheck@$STATICCHECK_VERSION" ||
    { rm -rf "$tmp"; echo "cannot build staticcheck $STATICCHECK_VERSION"; return 1; }
  mkdir -p "$PODID_CACHE/bin"
  mv "$tmp/staticcheck" "$STATICCHECK"
  rm -rf "$tmp"
}

check_staticcheck() {
  ensure_staticcheck || return 1
  "$STATICCHECK" ./... && return 0
  echo "staticcheck $STATICCHECK_VERSION findings above (fix them, or justify a //lint:ignore CHECK reason)"
  return 1
}

check_shellcheck() {
  command -v shellcheck >/dev/null || apt_ensure shellcheck >&2
  shellcheck -x -P SCRIPTDIR hack/*.sh .ci/run && return 0
  echo "shellcheck findings above (fix them, or justify a '# shellcheck disable=SCnnnn # reason')"
  return 1
}

all=(gofmt tidy generate staticcheck shellcheck)
checks=("$@")
[ ${#checks[@]} -gt 0 ] || checks=("${all[@]}")
failed=()
for c in "${checks[@]}"; do
  declare -F "check_$c" >/dev/null || die "unknown check $c (one of: ${all[*]})"
  t=$(now_ms)
  out=$(mktemp)
  if "check_$c" >"$out" 2>&1; then
    log "verify: $c ok ($(since "$t"))"
  else
    failed+=("$c")
    log "verify: $c FAILED ($(since "$t"))"
    sed 's/^/  | /' "$out" >&2
  fi
  rm -f "$out"
done
[ ${#failed[@]} -eq 0 ] || die "verify failed: ${failed[*]}"
