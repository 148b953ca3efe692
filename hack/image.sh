#!/usr/bin/env bash
# Builds podid's container images locally (no registry, no docker) and imports them
# into the local cluster's containerd (hack/cluster.sh up must have run):
#
#   localhost/pause:3.10              the pod sandbox (test/e2e/images/pause)
#   localhost/podid:dev               the podid binary (./cmd/podid), entrypoint /podid
#   localhost/podid-testclient:dev    test/e2e/images/testclient + busybox (sh, wget, cat, ...)
#   localhost/podid-wiclient:dev      test/e2e/images/wiclient (the unmodified Azure SDK), no shell
#   localhost/podid-miclient:dev      test/e2e/images/miclient (the unmodified Azure SDK, IMDS), no shell
#   localhost/podid-spoofer:dev       test/e2e/images/spoofer (hand-built TCP from a packet socket) + busybox
#   localhost/secrets-store-csi-driver:vX  the Secrets Store CSI driver built by
#                                     hack/install-csi-driver.sh + busybox's mount and umount
#   localhost/podid-queueclient:dev   test/e2e/images/queueclient (seed 000: IMDS token + azqueue), no shell
#   localhost/coredns:<version>       the cluster's DNS: $COREDNS (hack/install-coredns.sh), no shell
#   localhost/azcli:dev               Debian's azure-cli (apt) with bash and coreutils: seed 003's azcli
#                                     pod; its telemetry, survey and upgrade checks are off
#
#   hack/image.sh [pause|podid|testclient|wiclient|miclient|spoofer|csidriver|queueclient|coredns|azcli]...
#                                     (default: all)
#
# Each image is a single-layer docker-archive built from a directory; the layer is
# reproducible. An image whose inputs (Go sources it depends on, go.sum, busybox, this
# script) did not change is not rebuilt; one whose content did not change is not
# imported again. Pods use the full name and imagePullPolicy: Never.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ARCH=$(go env GOARCH)

# inputs_key PKG [FILE...]: a digest of everything an image is built from: the Go
# toolchain, go.mod/go.sum, the module's own packages PKG depends on, FILEs, this script.
inputs_key() {
  local pkg=$1; shift
  (
    cd "$REPO_ROOT"
    go version; cat go.mod go.sum "$REPO_ROOT/hack/image.sh"
    go list -deps -f '{{if .Module}}{{if .Module.Main}}{{.Dir}}{{end}}{{end}}' "$pkg" | sort -u |
      while read -r d; do find "$d" -maxdepth 1 -type f ! -name '*_test.go' | sort | xargs -r sha256sum; done
    [ $# -eq 0 ] || sha256sum "$@"
  ) | sha256sum | cut -d' ' -f1
}

gobuild() { # OUT PKG
  (cd "$REPO_ROOT" && CGO_ENABLED=0 go build -trimpath -buildvcs=false -ldflags='-s -w' -o "$1" "$2") ||
    die "go build $2 failed"
}

# debian_rootfs DIR PKG...: DIR gets PKG and their dependencies as apt resolves them on
# an empty system (the host's apt sources), unpacked with dpkg-deb; no maintainer
# script runs. The .debs are cached under $IMAGES_DIR/debs. Prints the resolved list.
debian_rootfs() {
  local r=$1; shift
  local debs=$IMAGES_DIR/debs empty; empty=$(mktemp); mkdir -p "$debs"
  local sim; sim=$(apt-get -o Dir::State::status="$empty" install -s -q --no-install-recommends "$@" 2>&1) ||
    { apt-get update -q >/dev/null 2>&1 && sim=$(apt-get -o Dir::State::status="$empty" install -s -q --no-install-recommends "$@" 2>&1); } ||
    { rm -f "$empty"; echo "$sim" | tail -n 5 >&2; die "apt cannot resolve $* (apt-get update?)"; }
  rm -f "$empty"
  local list; list=$(awk '/^Inst /{v=$3; gsub(/[()\[\]]/, "", v); print $2 "=" v}' <<<"$sim")
  [ -n "$list" ] || die "apt resolved nothing for $*"
  local missing=() p
  deb() { local v=${1#*=}; compgen -G "$debs/${1%%=*}_${v//:/%3a}_*.deb" | head -n 1; } # NAME=VERSION → its cached .deb
  for p in $list; do
    [ -n "$(deb "$p")" ] || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "  apt-get download: ${#missing[@]} of $(wc -w <<<"$list") packages"
    (cd "$debs" && apt-get download -q "${missing[@]}" >/dev/null 2>&1 ||
      { apt-get update -q >/dev/null 2>&1 && apt-get download -q "${missing[@]}" >/dev/null; }) ||
      die "apt-get download ${missing[*]} failed"
  fi
  log "  unpacking $(wc -w <<<"$list") packages"
  for p in $list; do
    local f; f=$(deb "$p")
    dpkg-deb -x "$f" "$r" || die "dpkg-deb -x $f ($p) failed"
  done
  echo "$list"
}

busybox_bin() { # prints the path of a static busybox taken from Debian's busybox-static package (not installed)
  local d=$IMAGES_DIR/busybox
  if [ ! -x "$d/root/bin/busybox" ]; then
    rm -rf "$d"; mkdir -p "$d"
    (cd "$d" && { apt-get download busybox-static >/dev/null 2>&1 ||
      { apt-get update -q >/dev/null 2>&1 && apt-get download busybox-static >/dev/null; }; }) ||
      die "apt-get download busybox-static failed"
    dpkg-deb -x "$d"/busybox-static_*.deb "$d/root"
  fi
  echo "$d/root/bin/busybox"
}

add_busybox() { # ROOTFS BUSYBOX: /bin/busybox and a link per applet
  local a
  mkdir -p "$1/bin"; cp "$2" "$1/bin/busybox"
  for a in $("$2" --list); do [ "$a" = busybox ] || ln -s busybox "$1/bin/$a"; done
}

base_rootfs() { # DIR: /etc/passwd, /tmp and the CA bundle every image gets
  mkdir -p "$1/etc/ssl/certs" "$1/tmp"
  chmod 1777 "$1/tmp"
  printf 'root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$1/etc/passwd"
  printf 'root:x:0:\nnobody:x:65534:\n' >"$1/etc/group"
  [ -f /etc/ssl/certs/ca-certificates.crt ] && cp /etc/ssl/certs/ca-certificates.crt "$1/etc/ssl/certs/"
  return 0
}

# archive REF ROOTFS OUT ENTRYPOINT...: writes a docker-archive ("docker save" format)
# tarball and prints its config digest, which identifies the image's content.
archive() {
  local ref=$1 rootfs=$2 out=$3; shift 3
  local w; w=$(mktemp -d)
  tar --sort=name --numeric-owner --owner=0 --group=0 --mtime=@0 -C "$rootfs" -cf "$w/layer.tar" .
  local lsha; lsha=$(sha256sum "$w/layer.tar" | cut -d' ' -f1)
  mkdir "$w/$lsha"; mv "$w/layer.tar" "$w/$lsha/layer.tar"
  local ep; ep=$(printf '"%s",' "$@"); ep="[${ep%,}]"
  local env='"PATH=/bin:/usr/bin:/sbin:/usr/sbin"' e
  for e in ${IMAGE_ENV:-}; do env+=",\"$e\""; done
  printf '{"architecture":"%s","os":"linux","created":"1970-01-01T00:00:00Z","config":{"Entrypoint":%s,"Env":[%s],"WorkingDir":"/","User":"0"},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]},"history":[{"created":"1970-01-01T00:00:00Z","created_by":"hack/image.sh"}]}' \
    "$ARCH" "$ep" "$env" "$lsha" >"$w/config.json"
  local csha; csha=$(sha256sum "$w/config.json" | cut -d' ' -f1)
  mv "$w/config.json" "$w/$csha.json"
  printf '[{"Config":"%s.json","RepoTags":["%s"],"Layers":["%s/layer.tar"]}]' "$csha" "$ref" "$lsha" >"$w/manifest.json"
  tar --numeric-owner --owner=0 --group=0 --mtime=@0 -C "$w" -cf "$out.tmp" manifest.json "$csha.json" "$lsha"
  mv "$out.tmp" "$out"
  rm -rf "$w"
  echo "sha256:$csha"
}

# import REF TAR ID: imports unless containerd already has this exact content.
import() {
  local ref=$1 tar=$2 id=$3 stamp=$2.imported
  ctr_ version >/dev/null 2>&1 || die "the cluster's containerd is not running (hack/cluster.sh up)"
  # The stamp next to the tarball records what was last imported; the image must
  # also still exist (containerd's store may have been wiped).
  if [ "$(cat "$stamp" 2>/dev/null)" = "$id" ] && [ -n "$(ctr_ images ls -q "name==$ref" 2>/dev/null)" ]; then
    echo "unchanged"; return 0
  fi
  ctr_ images import --snapshotter overlayfs "$tar" >/dev/null || die "ctr images import $tar failed"
  echo "$id" >"$stamp"
  echo "imported"
}

build() { # NAME
  local name=$1 t; t=$(now_ms)
  local d=$IMAGES_DIR/$name ref pkg extra=() ca=/etc/ssl/certs/ca-certificates.crt
  case "$name" in
    pause) ref=localhost/pause:3.10; pkg=./test/e2e/images/pause ;;
    podid) ref=localhost/podid:dev; pkg=./cmd/podid ;;
    testclient) ref=localhost/podid-testclient:dev; pkg=./test/e2e/images/testclient; extra=("$(busybox_bin)") ;;
    wiclient) ref=localhost/podid-wiclient:dev; pkg=./test/e2e/images/wiclient ;;
    miclient) ref=localhost/podid-miclient:dev; pkg=./test/e2e/images/miclient ;;
    spoofer) ref=localhost/podid-spoofer:dev; pkg=./test/e2e/images/spoofer; extra=("$(busybox_bin)") ;;
    csidriver) ref=localhost/secrets-store-csi-driver:v$CSI_DRIVER_VERSION; pkg=""
      [ -x "$CSI_DRIVER" ] || "$REPO_ROOT/hack/install-csi-driver.sh" >&2
      extra=("$CSI_DRIVER" "$(busybox_bin)") ;;
    queueclient) ref=localhost/podid-queueclient:dev; pkg=./test/e2e/images/queueclient ;;
    azcli) ref=localhost/azcli:dev; pkg=
      # The resolved package list (names and versions) is the input.
      printf '%s\n' "$(apt-cache policy azure-cli bash coreutils 2>/dev/null | grep -E '^[a-z]|Candidate')" >"$IMAGES_DIR/azcli.pkgs.tmp"
      extra=("$IMAGES_DIR/azcli.pkgs.tmp") ;;
    coredns) ref=localhost/coredns:$COREDNS_VERSION; pkg=
      [ -x "$COREDNS" ] || die "$COREDNS is missing: run hack/install-coredns.sh"
      extra=("$COREDNS") ;;
    *) die "unknown image $name (pause, podid, testclient, wiclient, miclient, spoofer, csidriver, queueclient, coredns, azcli)" ;;
  esac
  case "$name" in pause | coredns | azcli) ;; *) [ ! -f $ca ] || extra+=("$ca") ;; esac
  ctr_ version >/dev/null 2>&1 || die "the cluster's containerd is not running (hack/cluster.sh up)"
  local key
  if [ -n "$pkg" ]; then
    key=$(inputs_key "$pkg" "${extra[@]}") || die "cannot list the inputs of $pkg"
  else # not a Go package of podid: the files and this script
    key=$(sha256sum "${extra[@]}" "$REPO_ROOT/hack/image.sh" | sha256sum | cut -d' ' -f1)
  fi
  if [ "$(cat "$d/inputs.key" 2>/dev/null)" = "$key" ] && [ -n "$(ctr_ images ls -q "name==$ref" 2>/dev/null)" ]; then
    log "image $ref unchanged ($(since "$t"))"; return 0
  fi
  rm -rf "$d/rootfs" "$d/inputs.key"; mkdir -p "$d/rootfs"
  local r=$d/rootfs
  case "$name" in
    pause)
      gobuild "$r/pause" "$pkg"
      set -- /pause ;;
    podid)
      base_rootfs "$r"
      gobuild "$r/podid" "$pkg"
      set -- /podid ;;
    testclient)
      base_rootfs "$r"
      gobuild "$r/testclient" "$pkg"
      add_busybox "$r" "${extra[0]}"
      # busybox 1.35 wget segfaults with -T; the testclient binary answers as wget.
      ln -sf /testclient "$r/bin/wget"
      set -- /testclient ;;
    spoofer)
      base_rootfs "$r"
      gobuild "$r/spoofer" "$pkg"
      add_busybox "$r" "${extra[0]}" # ip, cat: the e2e sets the control pod up with them
      set -- /spoofer sleep ;;
    wiclient)
      base_rootfs "$r"
      gobuild "$r/wiclient" "$pkg"
      set -- /wiclient ;;
    miclient)
      base_rootfs "$r"
      gobuild "$r/miclient" "$pkg"
      set -- /miclient ;;
    csidriver)
      # The driver mounts each volume's tmpfs with mount(8) and unmounts it
      # with umount(8) (k8s.io/mount-utils): busybox's.
      base_rootfs "$r"
      cp "${extra[0]}" "$r/secrets-store-csi"
      mkdir -p "$r/bin"; cp "${extra[1]}" "$r/bin/busybox"
      ln -s busybox "$r/bin/mount"; ln -s busybox "$r/bin/umount"
      set -- /secrets-store-csi ;;
    queueclient)
      base_rootfs "$r"
      gobuild "$r/queueclient" "$pkg"
      set -- /queueclient ;;
    coredns)
      # No CA bundle: CoreDNS talks to the API server with its service account's CA.
      mkdir -p "$r/etc" "$r/tmp"; chmod 1777 "$r/tmp"
      printf 'root:x:0:0:root:/:/bin/false\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$r/etc/passwd"
      cp "$COREDNS" "$r/coredns"
      set -- /coredns ;;
    azcli)
      log "image $ref: Debian's azure-cli from apt (cached under $IMAGES_DIR/debs)"
      debian_rootfs "$r" azure-cli bash coreutils >/dev/null
      mkdir -p "$r/root" "$r/tmp" "$r/etc/ssl/certs"; chmod 1777 "$r/tmp"; chmod 700 "$r/root"
      printf 'root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n' >"$r/etc/passwd"
      printf 'root:x:0:\nnogroup:x:65534:\n' >"$r/etc/group"
      ldconfig -r "$r" 2>/dev/null || true
      # The CLI's own settings: no telemetry, survey or upgrade check (the local
      # cluster's DNS answers none of their names either; docs/local-cloud.md).
      mkdir -p "$r/root/.azure"
      printf '[core]\ncollect_telemetry = no\nsurvey_message = no\nfirst_run = no\n\n[auto-upgrade]\nenable = no\n' >"$r/root/.azure/config"
      # Byte-compiled once here (unchecked: the layer's mtimes are 0), not at every az
      # start; the per-API-version SDK trees (~500 MB) compile on demand.
      log "  byte-compiling the CLI's Python modules"
      python3 -m compileall -q -j 0 --invalidation-mode unchecked-hash -x '/azure/(mgmt|multiapi)/' \
        -s "$r" -p / "$r/usr/lib/python3/dist-packages" "$r/usr/lib/python3.11" >/dev/null 2>&1 ||
        log "  (some modules did not compile; they compile at first use)"
      set -- /bin/bash ;;
  esac
  local IMAGE_ENV=
  # The same settings as the config file, for a HOME elsewhere or a config dir mounted over it.
  [ "$name" != azcli ] || IMAGE_ENV="AZURE_CORE_COLLECT_TELEMETRY=no AZURE_CORE_SURVEY_MESSAGE=no AZURE_CORE_FIRST_RUN=no"
  local id; id=$(archive "$ref" "$r" "$d/image.tar" "$@")
  local what; what=$(import "$ref" "$d/image.tar" "$id")
  echo "$key" >"$d/inputs.key"
  log "image $ref $what (${id:7:12}, $(since "$t"))"
}

[ $# -gt 0 ] || set -- pause podid testclient wiclient miclient spoofer csidriver queueclient coredns azcli
for n in "$@"; do build "$n"; done
