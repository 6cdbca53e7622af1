#!/usr/bin/env bash
# Provide the helm CLI for the chart tests: helm.sh/helm/v3/cmd/helm, built from the Go module proxy with
# `go install` (GOBIN in a throw-away directory) with the local Go toolchain only (GOTOOLCHAIN=local).
#
# Version: $HELM_VERSION, default v3.22.0 (known to build with Go 1.26; its go.mod needs Go >= 1.26.0).
# Like the release Makefile, the build stamps the version (`helm version` prints v3.22.0, not v3.22) and the
# Kubernetes version of helm's client-go (the default .Capabilities.KubeVersion of `helm template` and the
# deprecation checks of `helm lint`); without those stamps both would fall back to the source's defaults.
# Cached outside the repository, keyed by version: $CANOPY_HELM_CACHE (default
# ~/.cache/canopy-operator/helm-<version>/helm). A no-op when warm.
# Prints the binary's absolute path on stdout (nothing else), progress on stderr.
set -euo pipefail

VERSION="${HELM_VERSION:-v3.22.0}"
VERSION="v${VERSION#v}"
CACHE_ROOT="${CANOPY_CACHE_ROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/canopy-operator}"
DEST="${CANOPY_HELM_CACHE:-$CACHE_ROOT/helm-${VERSION}}"
[[ "$DEST" == /* ]] || DEST="$PWD/$DEST"
BIN="$DEST/helm"
MODULE=helm.sh/helm/v3

log() { printf 'helm-assets: %s\n' "$*" >&2; }

if [[ -x "$BIN" ]]; then
  log "cache is warm: $DEST"
  echo "$BIN"
  exit 0
fi

command -v go >/dev/null || { log "go is required to build helm $VERSION (Go >= 1.26 for v3.22)"; exit 1; }
LOCK_DIR="$(dirname "$DEST")"
mkdir -p "$LOCK_DIR"
exec 9>"$LOCK_DIR/.helm-lock"
# One build at a time; a second caller waits and then finds the cache warm. Say so before blocking.
if ! flock -n 9; then
  log "waiting for another build of helm to finish (it holds $LOCK_DIR/.helm-lock)"
  waited=$(date +%s)
  flock 9
  log "the other build finished after $(( $(date +%s) - waited ))s"
fi
if [[ -x "$BIN" ]]; then
  log "cache is warm: $DEST"
  echo "$BIN"
  exit 0
fi
log "cold build, takes a few minutes: building helm $VERSION from source with Go, once;"
log "the result is cached in $DEST"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/canopy-helm-build.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
# The module cache and the build cache stay where Go keeps them (outside the repository); the build runs in
# the throw-away directory, so nothing is written to the repository.
cd "$WORK"
export GOTOOLCHAIN=local CGO_ENABLED=0
start=$(date +%s)

# The Kubernetes version comes from helm's own go.mod (client-go v0.N.x is Kubernetes 1.N), never hard-coded.
gomod="$(GOFLAGS= go mod download -json "$MODULE@$VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
[[ -f "$gomod" ]] || { log "could not download $MODULE@$VERSION"; exit 1; }
client_go="$(awk '$1 == "k8s.io/client-go" { print $2; exit }' "$gomod")"
[[ "$client_go" =~ ^v0\.([0-9]+)\. ]] || { log "no k8s.io/client-go v0.N.x requirement found in $gomod"; exit 1; }
k8s_minor="${BASH_REMATCH[1]}"

flags="-s -w -X $MODULE/internal/version.version=$VERSION -X $MODULE/internal/version.gitTreeState=clean"
for p in pkg/lint/rules pkg/chartutil; do
  flags="$flags -X $MODULE/$p.k8sVersionMajor=1 -X $MODULE/$p.k8sVersionMinor=$k8s_minor"
done
log "building $MODULE/cmd/helm@$VERSION (Kubernetes 1.$k8s_minor from client-go $client_go)"
# GOFLAGS entries may be quoted, so -ldflags with spaces fits in it.
GOBIN="$WORK/bin" GOFLAGS="-trimpath '-ldflags=$flags'" go install "$MODULE/cmd/helm@$VERSION" || {
  log "go install failed (helm $VERSION needs the Go version its go.mod names: $(awk '$1 == "go" { print $2 }' "$gomod"))"
  exit 1
}

"$WORK/bin/helm" version >&2
rm -rf "$DEST.tmp"
mkdir -p "$DEST.tmp"
mv "$WORK/bin/helm" "$DEST.tmp/"
rm -rf "$DEST"; mv "$DEST.tmp" "$DEST"
log "built in $(( $(date +%s) - start ))s; $(du -h "$BIN" | cut -f1) at $BIN"
echo "$BIN"
