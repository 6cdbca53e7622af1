#!/usr/bin/env bash
# Provide real MLflow and Arize Phoenix servers for the tests: two separate virtualenvs (Python 3.11), cached
# outside the repository and keyed by version:
#   $CACHE_ROOT/mlflow-<version>/   mlflow==<version> (the server and the client the seeder uses)
#   $CACHE_ROOT/phoenix-<version>/  arize-phoenix==<version> plus the OTLP/HTTP span exporter the seeder uses
# CACHE_ROOT is $CANOPY_CACHE_ROOT (default ~/.cache/canopy-operator). Each env holds a stamp file naming its
# exact requirements; the stamp is written last, so an env without a matching stamp (an interrupted or an
# older build) is rebuilt from scratch. A no-op when warm. pip runs with its own cache settings (the cache,
# if any, lives outside the repository; where the index forbids caching, a rebuild downloads again).
#
# Usage: servers-assets.sh [all|mlflow|phoenix]   (default all)
# Prints `MLFLOW_PYTHON=<path>` and/or `PHOENIX_PYTHON=<path>` as the last lines of stdout (nothing else on
# stdout), so callers can `eval "$(bash hack/servers-assets.sh)"`; progress goes to stderr.
set -euo pipefail

MLFLOW_VERSION="${CANOPY_MLFLOW_VERSION:-3.17.2}"
PHOENIX_VERSION="${CANOPY_PHOENIX_VERSION:-20.26.1}"
# The versions pip resolved next to arize-phoenix 20.26.1 (Phoenix itself already needs both packages;
# pinning them keeps the seeder's exporter identical from one cold build to the next).
OTEL_SDK_VERSION="1.45.2"
OTEL_EXPORTER_VERSION="1.45.2"
CACHE_ROOT="${CANOPY_CACHE_ROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/canopy-operator}"
[[ "$CACHE_ROOT" == /* ]] || CACHE_ROOT="$PWD/$CACHE_ROOT"
WHICH="${1:-all}"

log() { printf 'servers-assets: %s\n' "$*" >&2; }

case "$WHICH" in
  all | mlflow | phoenix) ;;
  *) log "usage: $0 [all|mlflow|phoenix]"; exit 2 ;;
esac

# A Python 3.11 interpreter for the venvs: $CANOPY_SERVERS_BASE_PYTHON, else python3.11, else python3.
base_python() {
  local candidate
  for candidate in "${CANOPY_SERVERS_BASE_PYTHON:-}" python3.11 python3; do
    [[ -n "$candidate" ]] || continue
    command -v "$candidate" >/dev/null || continue
    if "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
      "$candidate" -c 'import sys; print(sys.executable)'
      return 0
    fi
  done
  log "no Python 3.11 found (set CANOPY_SERVERS_BASE_PYTHON to one)"
  return 1
}

# ensure_env NAME DEST REQUIREMENT... : build (or reuse) the venv DEST with exactly these requirements.
ensure_env() {
  local name="$1" dest="$2"
  shift 2
  local stamp="$dest/.canopy-requirements" wanted
  wanted="$(printf '%s\n' "$@")"
  if [[ -x "$dest/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$wanted" ]]; then
    log "cache is warm: $dest"
    return 0
  fi
  mkdir -p "$CACHE_ROOT"
  exec 9>"$CACHE_ROOT/.$name-lock"
  # One build at a time; a second caller waits and then finds the cache warm. Say so before blocking.
  if ! flock -n 9; then
    log "waiting for another build of $dest to finish (it holds $CACHE_ROOT/.$name-lock)"
    local waited
    waited=$(date +%s)
    flock 9
    log "the other build finished after $(($(date +%s) - waited))s"
  fi
  if [[ -x "$dest/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$wanted" ]]; then
    log "cache is warm: $dest"
    exec 9>&-
    return 0
  fi
  log "cold build, takes 1-5 minutes (about 50s here) and about 850 MB: installing $* into $dest, once"
  local python start
  python="$(base_python)"
  start=$(date +%s)
  # A venv records its own path (in its scripts' shebangs), so it is built in place; the stamp, written
  # last, is what makes it count as installed.
  rm -rf "$dest"
  "$python" -m venv "$dest"
  "$dest/bin/python" -m pip install --quiet --upgrade pip >&2
  "$dest/bin/python" -m pip install "$@" >&2
  "$dest/bin/python" -m pip check >&2 || log "pip check reported conflicts in $dest (see above)"
  printf '%s\n' "$wanted" >"$stamp.tmp"
  mv "$stamp.tmp" "$stamp"
  log "built $name in $(($(date +%s) - start))s; $(du -sh "$dest" | cut -f1) at $dest"
  exec 9>&-
}

MLFLOW_DEST="$CACHE_ROOT/mlflow-$MLFLOW_VERSION"
PHOENIX_DEST="$CACHE_ROOT/phoenix-$PHOENIX_VERSION"

if [[ "$WHICH" != phoenix ]]; then
  ensure_env mlflow "$MLFLOW_DEST" "mlflow==$MLFLOW_VERSION"
fi
if [[ "$WHICH" != mlflow ]]; then
  ensure_env phoenix "$PHOENIX_DEST" "arize-phoenix==$PHOENIX_VERSION" \
    "opentelemetry-sdk==$OTEL_SDK_VERSION" "opentelemetry-exporter-otlp-proto-http==$OTEL_EXPORTER_VERSION"
fi
[[ "$WHICH" == phoenix ]] || echo "MLFLOW_PYTHON=$MLFLOW_DEST/bin/python"
[[ "$WHICH" == mlflow ]] || echo "PHOENIX_PYTHON=$PHOENIX_DEST/bin/python"
