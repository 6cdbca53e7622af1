#!/usr/bin/env bash
# Provide kube-apiserver and etcd binaries for the integration tests (envtest for Python).
#
# Lookup order (the conventions controller-runtime users already know):
#   1. TEST_ASSET_KUBE_APISERVER and TEST_ASSET_ETCD, when both are set;
#   2. $KUBEBUILDER_ASSETS/{kube-apiserver,etcd};
#   3. our cache, $CANOPY_ENVTEST_CACHE/k8s-<version>-etcd-<version>/, built from the Go module proxy
#      through throw-away wrapper modules when cold; a no-op when warm.
# Prints the directory that holds both binaries on stdout (nothing else), progress on stderr.
set -euo pipefail

K8S_VERSION="${ENVTEST_K8S_VERSION:-1.34.4}"
ETCD_VERSION="${ENVTEST_ETCD_VERSION:-3.6.4}"
CACHE_ROOT="${CANOPY_ENVTEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/canopy-operator/envtest}"
DEST="$CACHE_ROOT/k8s-${K8S_VERSION}-etcd-${ETCD_VERSION}"

log() { printf 'envtest-assets: %s\n' "$*" >&2; }

if [[ -n "${TEST_ASSET_KUBE_APISERVER:-}" && -n "${TEST_ASSET_ETCD:-}" ]]; then
  for b in "$TEST_ASSET_KUBE_APISERVER" "$TEST_ASSET_ETCD"; do
    [[ -x "$b" ]] || { log "TEST_ASSET_* names $b, which is not an executable file"; exit 1; }
  done
  log "using TEST_ASSET_KUBE_APISERVER=$TEST_ASSET_KUBE_APISERVER TEST_ASSET_ETCD=$TEST_ASSET_ETCD"
  dirname "$TEST_ASSET_KUBE_APISERVER"
  exit 0
fi
if [[ -n "${KUBEBUILDER_ASSETS:-}" ]]; then
  if [[ -x "$KUBEBUILDER_ASSETS/kube-apiserver" && -x "$KUBEBUILDER_ASSETS/etcd" ]]; then
    log "using KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS"
    echo "$KUBEBUILDER_ASSETS"
    exit 0
  fi
  log "KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS lacks kube-apiserver or etcd; building into the cache instead"
fi
if [[ -x "$DEST/kube-apiserver" && -x "$DEST/etcd" ]]; then
  log "cache is warm: $DEST"
  echo "$DEST"
  exit 0
fi

command -v go >/dev/null || { log "go is required to build the binaries (Go >= 1.24 for Kubernetes 1.34)"; exit 1; }
mkdir -p "$CACHE_ROOT"
exec 9>"$CACHE_ROOT/.lock"
# One build at a time; a second caller waits and then finds the cache warm. Say so before blocking.
if ! flock -n 9; then
  log "waiting for another build of kube-apiserver v$K8S_VERSION and etcd v$ETCD_VERSION to finish"
  log "(it holds $CACHE_ROOT/.lock; a cold build takes about 5-12 minutes on 2 cores)"
  waited=$(date +%s)
  flock 9
  log "the other build finished after $(( $(date +%s) - waited ))s"
fi
if [[ -x "$DEST/kube-apiserver" && -x "$DEST/etcd" ]]; then
  log "cache is warm: $DEST"
  echo "$DEST"
  exit 0
fi
log "cold cache: building kube-apiserver v$K8S_VERSION and etcd v$ETCD_VERSION from source with Go;"
log "this takes about 5-12 minutes on 2 cores, once: the result is cached in $DEST"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/canopy-envtest-build.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
start=$(date +%s)

minor="${K8S_VERSION#*.}"; minor="${minor%%.*}"
log "building kube-apiserver v$K8S_VERSION (wrapper module, staging modules pinned to v0.$minor.${K8S_VERSION##*.})"
mkdir -p "$WORK/apiserver"
(
  cd "$WORK/apiserver"
  # The staging module list comes from k/k's own go.mod, never hard-coded.
  gomod="$(go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
  [[ -f "$gomod" ]] || { log "could not download k8s.io/kubernetes@v$K8S_VERSION"; exit 1; }
  staging="$(grep -E '^\s*k8s\.io/[a-z0-9-]+ v0\.0\.0\s*$' "$gomod" | awk '{print $1}' | sort -u)"
  [[ -n "$staging" ]] || { log "no k8s.io/* v0.0.0 requirements found in $gomod"; exit 1; }
  {
    echo "module canopy-operator/envtest/kube-apiserver"
    echo
    echo "go 1.24"
    [[ "$minor" -le 34 ]] && echo "godebug default=go1.24"
    echo
    echo "require k8s.io/kubernetes v$K8S_VERSION"
    echo
    for m in $staging; do echo "replace $m => $m v0.$minor.${K8S_VERSION##*.}"; done
  } > go.mod
  printf '//go:build tools\n\npackage tools\n\nimport _ "k8s.io/kubernetes/cmd/kube-apiserver"\n' > tools.go
  go mod tidy >&2
  pkg=k8s.io/component-base/version
  cgo=k8s.io/client-go/pkg/version
  flags="-s -w"
  for p in $pkg $cgo; do
    flags="$flags -X $p.gitVersion=v$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
  done
  go build -trimpath -ldflags "$flags" -o "$WORK/out/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver
)

log "building etcd v$ETCD_VERSION (separate wrapper module)"
mkdir -p "$WORK/etcd"
(
  cd "$WORK/etcd"
  gomod="$(go mod download -json "go.etcd.io/etcd/server/v3@v$ETCD_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
  [[ -f "$gomod" ]] || { log "could not download go.etcd.io/etcd/server/v3@v$ETCD_VERSION"; exit 1; }
  # server/v3 replaces its sibling modules with ../ paths; pin each one to the same release instead.
  siblings="$(grep -oE '^\s*go\.etcd\.io/etcd/[a-z0-9/]+ =>' "$gomod" | awk '{print $1}' | sort -u)"
  {
    echo "module canopy-operator/envtest/etcd"
    echo
    echo "go 1.24"
    echo
    echo "require go.etcd.io/etcd/server/v3 v$ETCD_VERSION"
    echo
    for m in $siblings; do echo "replace $m => $m v$ETCD_VERSION"; done
  } > go.mod
  printf '//go:build tools\n\npackage tools\n\nimport _ "go.etcd.io/etcd/server/v3"\n' > tools.go
  go mod tidy >&2
  go build -trimpath -ldflags "-s -w" -o "$WORK/out/etcd" go.etcd.io/etcd/server/v3
)

"$WORK/out/kube-apiserver" --version >&2
"$WORK/out/etcd" --version >&2
mkdir -p "$DEST.tmp"
mv "$WORK/out/kube-apiserver" "$WORK/out/etcd" "$DEST.tmp/"
rm -rf "$DEST"; mv "$DEST.tmp" "$DEST"
log "built in $(( $(date +%s) - start ))s; cache $(du -sh "$DEST" | cut -f1) at $DEST"
echo "$DEST"
