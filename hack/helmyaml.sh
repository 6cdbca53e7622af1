#!/usr/bin/env bash
# Build hack/helmyaml (Helm v3's values parser, sigs.k8s.io/yaml, as a tiny stdin-to-JSON program) for the tests.
#
# The binary is cached outside the repository, keyed by the parser's version and a hash of the helper's
# sources: $CANOPY_HELMYAML_CACHE (default ~/.cache/canopy-operator)/helmyaml-<version>-<hash>/helmyaml.
# Built with the local Go toolchain only (GOTOOLCHAIN=local) from the Go module proxy; a no-op when warm.
# Prints the binary's path on stdout (nothing else), progress on stderr; exits non-zero when it cannot build.
set -euo pipefail

SRC="$(cd "$(dirname "$0")/helmyaml" && pwd)"
VERSION="$(awk '$1 == "sigs.k8s.io/yaml" { print $2 }' "$SRC/go.mod")"
HASH="$(cat "$SRC/go.mod" "$SRC/go.sum" "$SRC/main.go" | sha256sum | cut -c1-12)"
CACHE_ROOT="${CANOPY_HELMYAML_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/canopy-operator}"
DEST="$CACHE_ROOT/helmyaml-${VERSION}-${HASH}"
BIN="$DEST/helmyaml"

log() { printf 'helmyaml: %s\n' "$*" >&2; }

if [[ -x "$BIN" ]]; then
  echo "$BIN"
  exit 0
fi
command -v go >/dev/null || { log "go is required to build the Helm values parser (sigs.k8s.io/yaml $VERSION)"; exit 1; }
mkdir -p "$DEST"
exec 9>"$DEST/.lock"
flock 9  # one build at a time; a second caller waits and then finds the binary
if [[ ! -x "$BIN" ]]; then
  log "building sigs.k8s.io/yaml $VERSION into $DEST"
  tmp="$(mktemp "$DEST/helmyaml.XXXXXX")"
  (cd "$SRC" && GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath -o "$tmp" .) || {
    rm -f "$tmp"
    log "go build failed"
    exit 1
  }
  mv "$tmp" "$BIN"
fi
echo "$BIN"
