#!/usr/bin/env bash
# Provide everything a real single-node cluster for the e2e tier needs, beyond kube-apiserver and etcd
# (hack/envtest-assets.sh provides those):
#   1. Debian packages, installed when missing (root only): runc, containerd, CNI plugins, iptables, nftables,
#      conntrack, debootstrap (the test base image, hack/images.sh) and docker.io (dockerd builds the images);
#   2. kubelet, kube-controller-manager, kube-scheduler and kube-proxy of the same Kubernetes release as the
#      envtest tier, built from the Go module proxy through a throw-away wrapper module (as envtest-assets.sh);
#   3. CoreDNS (`go install`), and a pause image: a tiny static Go program in a one-layer docker-archive that
#      `ctr images import` accepts without a registry.
# Cached outside the repository, keyed by version: $CANOPY_NODE_CACHE (default
# ~/.cache/canopy-operator/node-<k8s>-coredns-<coredns>/). A no-op when warm.
# Prints the cache directory on stdout (nothing else), progress on stderr.
set -euo pipefail

K8S_VERSION="${ENVTEST_K8S_VERSION:-1.34.4}"
COREDNS_VERSION="${NODE_COREDNS_VERSION:-1.12.1}"
CACHE_ROOT="${CANOPY_CACHE_ROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/canopy-operator}"
DEST="${CANOPY_NODE_CACHE:-$CACHE_ROOT/node-${K8S_VERSION}-coredns-${COREDNS_VERSION}}"
PAUSE_IMAGE="canopy.local/pause:1.0"
BINARIES=(kubelet kube-controller-manager kube-scheduler kube-proxy coredns pause-image.tar)
# Debian package per command it provides (Debian's CNI plugins live in /usr/lib/cni).
# nft removes the nftables tables that nft-backed iptables made (the harness leaves the machine as found).
PACKAGES=(runc:runc containerd:containerd /usr/lib/cni/bridge:containernetworking-plugins iptables:iptables
          nft:nftables conntrack:conntrack debootstrap:debootstrap dockerd:docker.io)

log() { printf 'node-assets: %s\n' "$*" >&2; }

missing_packages() {
  local entry cmd pkg
  for entry in "${PACKAGES[@]}"; do
    cmd="${entry%%:*}"; pkg="${entry#*:}"
    if [[ "$cmd" == /* ]]; then [[ -x "$cmd" ]] || echo "$pkg"; else command -v "$cmd" >/dev/null 2>&1 || echo "$pkg"; fi
  done
}

ensure_packages() {
  local missing
  mapfile -t missing < <(missing_packages)
  ((${#missing[@]})) || return 0
  if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
    log "missing Debian packages: ${missing[*]} (install them as root; a real node needs them)"
    exit 1
  fi
  log "installing Debian packages: ${missing[*]}"
  apt-get update -qq >&2
  # Only the programs: no service of theirs is started (there is no systemd here, and the harness starts
  # containerd and dockerd itself, with its own state directories).
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

complete() {
  local b
  for b in "${BINARIES[@]}"; do [[ -s "$DEST/$b" ]] || return 1; done
}

ensure_packages
if complete; then
  log "cache is warm: $DEST"
  echo "$DEST"
  exit 0
fi

command -v go >/dev/null || { log "go is required to build the node binaries (Go >= 1.24 for Kubernetes 1.34)"; exit 1; }
mkdir -p "$CACHE_ROOT"
exec 9>"$CACHE_ROOT/.node-lock"
if ! flock -n 9; then
  log "waiting for another build of the node binaries to finish (it holds $CACHE_ROOT/.node-lock)"
  flock 9
fi
if complete; then
  log "cache is warm: $DEST"
  echo "$DEST"
  exit 0
fi
log "cold cache: building kubelet, kube-controller-manager, kube-scheduler, kube-proxy v$K8S_VERSION,"
log "CoreDNS v$COREDNS_VERSION and the pause image; about 5-10 minutes on 2 cores, once: cached in $DEST"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/canopy-node-build.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
start=$(date +%s)
mkdir -p "$WORK/out"

minor="${K8S_VERSION#*.}"; minor="${minor%%.*}"
log "building the node's Kubernetes binaries (wrapper module, staging modules pinned to v0.$minor.${K8S_VERSION##*.})"
mkdir -p "$WORK/k8s"
(
  cd "$WORK/k8s"
  gomod="$(go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
  [[ -f "$gomod" ]] || { log "could not download k8s.io/kubernetes@v$K8S_VERSION"; exit 1; }
  staging="$(grep -E '^\s*k8s\.io/[a-z0-9-]+ v0\.0\.0\s*$' "$gomod" | awk '{print $1}' | sort -u)"
  [[ -n "$staging" ]] || { log "no k8s.io/* v0.0.0 requirements found in $gomod"; exit 1; }
  {
    echo "module canopy-operator/node/kubernetes"
    echo
    echo "go 1.24"
    [[ "$minor" -le 34 ]] && echo "godebug default=go1.24"
    echo
    echo "require k8s.io/kubernetes v$K8S_VERSION"
    echo
    for m in $staging; do echo "replace $m => $m v0.$minor.${K8S_VERSION##*.}"; done
  } > go.mod
  {
    printf '//go:build tools\n\npackage tools\n\nimport (\n'
    for c in kubelet kube-controller-manager kube-scheduler kube-proxy; do printf '\t_ "k8s.io/kubernetes/cmd/%s"\n' "$c"; done
    printf ')\n'
  } > tools.go
  go mod tidy >&2
  flags="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags="$flags -X $p.gitVersion=v$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
  done
  go build -trimpath -ldflags "$flags" -o "$WORK/out/" \
    k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kube-proxy
)

log "building CoreDNS v$COREDNS_VERSION"
GOBIN="$WORK/out" GOFLAGS= go install -trimpath -ldflags "-s -w" "github.com/coredns/coredns@v$COREDNS_VERSION"

log "building the pause image $PAUSE_IMAGE (one static binary, one layer)"
mkdir -p "$WORK/pause/rootfs" "$WORK/pause/image"
(
  cd "$WORK/pause"
  printf 'module canopy-operator/node/pause\n\ngo 1.24\n' > go.mod
  cat > main.go <<'EOF'
// pause holds a pod's namespaces: it reaps orphaned children and exits on SIGINT or SIGTERM.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range signals {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var status syscall.WaitStatus
			if pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil); pid <= 0 || err != nil {
				break
			}
		}
	}
}
EOF
  go build -trimpath -ldflags "-s -w" -o rootfs/pause .
  tar --sort=name --owner=0 --group=0 --numeric-owner --mtime='@0' -C rootfs -cf image/layer.tar pause
  diff_id="sha256:$(sha256sum image/layer.tar | cut -d' ' -f1)"
  printf '{"architecture":"amd64","os":"linux","config":{"Entrypoint":["/pause"],"User":"65535:65535"},"rootfs":{"type":"layers","diff_ids":["%s"]}}' \
    "$diff_id" > image/config.json
  printf '[{"Config":"config.json","RepoTags":["%s"],"Layers":["layer.tar"]}]' "$PAUSE_IMAGE" > image/manifest.json
  tar --owner=0 --group=0 --numeric-owner -C image -cf "$WORK/out/pause-image.tar" manifest.json config.json layer.tar
)

"$WORK/out/kubelet" --version >&2
"$WORK/out/coredns" -version >&2
mkdir -p "$DEST.tmp"
mv "$WORK/out/"* "$DEST.tmp/"
echo "$PAUSE_IMAGE" > "$DEST.tmp/pause-image.name"
rm -rf "$DEST"; mv "$DEST.tmp" "$DEST"
log "built in $(( $(date +%s) - start ))s; cache $(du -sh "$DEST" | cut -f1) at $DEST"
echo "$DEST"
