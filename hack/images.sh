#!/usr/bin/env bash
# `make image`: build the project's images for real with dockerd, without a registry, and save them as one
# docker-archive tarball that `ctr images import` (the real node) or `kind load image-archive` accepts.
#
#   operator image   the Dockerfile's default target, tagged $E2E_IMAGE (default canopy-operator:e2e)
#   simulator image  the Dockerfile's `simulator` target, tagged $E2E_SIMULATOR_IMAGE (canopy-simulator:e2e)
#
# Where a Docker engine is reachable (DOCKER_HOST or the default socket) and IMAGES_BASE is not `local`, it
# builds on the real python:3.11-slim. Otherwise (our CI machines: no engine, no registry) this script starts
# dockerd itself (Debian's docker.io, no bridge, no iptables, state in the cache) and builds on a locally made
# base standing in for python:3.11-slim: debootstrap bookworm minbase + Debian's python3 (3.11), pip,
# setuptools and wheel in /usr/local, and the machine's CA trusted by apt and pip. That base is test-only;
# the shipped Dockerfile is unchanged (it takes the base as its PYTHON_IMAGE build argument).
#
# Cached outside the repository: $CANOPY_IMAGES_CACHE (default ~/.cache/canopy-operator/images/). The tarball
# is rebuilt only when the build context (Dockerfile, pyproject.toml, README.md, operator/, devkit/) changed.
# Prints the tarball's path on stdout (nothing else), progress on stderr.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE_ROOT="${CANOPY_CACHE_ROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/canopy-operator}"
OUT="${CANOPY_IMAGES_CACHE:-$CACHE_ROOT/images}"
OPERATOR_IMAGE="${E2E_IMAGE:-canopy-operator:e2e}"
SIMULATOR_IMAGE="${E2E_SIMULATOR_IMAGE:-canopy-simulator:e2e}"
SUITE=bookworm  # Debian 12: its python3 is 3.11, as in python:3.11-slim
TARBALL="$OUT/canopy-images.tar"

log() { printf 'images: %s\n' "$*" >&2; }

context_hash() {
  {
    printf '%s\n%s\n' "$OPERATOR_IMAGE" "$SIMULATOR_IMAGE"
    find Dockerfile .dockerignore pyproject.toml README.md operator devkit -type f \
      ! -path '*/__pycache__/*' ! -name '*.pyc' ! -path '*.egg-info/*' -print0 \
      | sort -z | xargs -0 sha256sum
  } | sha256sum | cut -d' ' -f1
}

mkdir -p "$OUT"
exec 9>"$OUT/.lock"
if ! flock -n 9; then
  log "waiting for another image build to finish (it holds $OUT/.lock)"
  flock 9
fi
hash="$(context_hash)"
if [[ -s "$TARBALL" && "$(cat "$OUT/canopy-images.context" 2>/dev/null)" == "$hash" ]]; then
  log "images are up to date with the source: $TARBALL"
  echo "$TARBALL"
  exit 0
fi
start=$(date +%s)

# ------------------------------------------------------------------------------------------ the engine
RUN_DIR=""
DOCKERD_PID=""
CGROUPS_BEFORE=""
RUN_BEFORE=""
stop_dockerd() {
  [[ -n "$DOCKERD_PID" ]] || return 0
  kill -TERM "$DOCKERD_PID" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.2; done
  kill -KILL "$DOCKERD_PID" 2>/dev/null || true
  wait "$DOCKERD_PID" 2>/dev/null || true
  DOCKERD_PID=""
  # Leave the machine as found: mounts under our directories, the cgroups dockerd made.
  local m
  for m in $(awk '{print $5}' /proc/self/mountinfo | grep -E "^($RUN_DIR|$CACHE_ROOT/docker)(/|$)" | sort -r); do
    umount -l "$m" 2>/dev/null || true
  done
  for m in /sys/fs/cgroup/*/docker; do
    [[ -d "$m" ]] && ! grep -qxF "$m" <<<"$CGROUPS_BEFORE" && rmdir "$m" 2>/dev/null || true
  done
  rm -rf "$RUN_DIR"
  # dockerd and its containerd make these whatever their configured roots (shim sockets, plugin sockets).
  for m in /run/containerd /run/docker; do
    grep -qxF "$m" <<<"$RUN_BEFORE" || { [[ -d "$m" ]] && find "$m" -depth -type d -empty -delete 2>/dev/null; } || true
  done
}
trap stop_dockerd EXIT

use_local_base=1
if [[ "${IMAGES_BASE:-}" != local ]] && command -v docker >/dev/null && docker info >/dev/null 2>&1; then
  use_local_base=0
  log "using the running Docker engine and python:3.11-slim"
else
  command -v dockerd >/dev/null || { log "no Docker engine and no dockerd: run hack/node-assets.sh (installs docker.io)"; exit 1; }
  [[ $(id -u) -eq 0 ]] || { log "starting dockerd needs root"; exit 1; }
  RUN_DIR="$(mktemp -d /tmp/canopy-dockerd.XXXXXX)"
  CGROUPS_BEFORE="$(ls -d /sys/fs/cgroup/*/docker 2>/dev/null || true)"
  RUN_BEFORE="$(ls -d /run/containerd /run/docker 2>/dev/null || true)"
  mkdir -p "$CACHE_ROOT/docker"
  echo '{}' >"$RUN_DIR/daemon.json"  # never the machine's /etc/docker/daemon.json
  # No bridge, NAT or forwarding: containers cannot reach out here; builds use --network=host.
  dockerd --data-root "$CACHE_ROOT/docker" --exec-root "$RUN_DIR/exec" --pidfile "$RUN_DIR/dockerd.pid" \
    -H "unix://$RUN_DIR/docker.sock" --bridge=none --iptables=false --ip6tables=false --ip-masq=false \
    --ip-forward=false --storage-driver=overlay2 --config-file "$RUN_DIR/daemon.json" >"$RUN_DIR/dockerd.log" 2>&1 &
  DOCKERD_PID=$!
  export DOCKER_HOST="unix://$RUN_DIR/docker.sock"
  for _ in $(seq 1 150); do
    docker info >/dev/null 2>&1 && break
    kill -0 "$DOCKERD_PID" 2>/dev/null || break
    sleep 0.2
  done
  docker info >/dev/null 2>&1 || { log "dockerd did not start; its log:"; tail -30 "$RUN_DIR/dockerd.log" >&2; exit 1; }
  log "dockerd started (pid $DOCKERD_PID, state in $CACHE_ROOT/docker)"
  export DOCKER_BUILDKIT=0  # the legacy builder: no buildx here, and BuildKit needs a bridge network
fi

# ------------------------------------------------------------------- the local stand-in for python:3.11-slim
mirror() {
  # The machine's own Debian mirror, read from its apt sources (never written down here).
  local uri
  uri="$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)"
  [[ -n "$uri" ]] || uri="$(awk '$1 == "deb" && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)"
  [[ -n "$uri" ]] || { log "no Debian mirror found in /etc/apt/sources.list(.d)"; exit 1; }
  echo "$uri"
}

base_dockerfile() {
  cat <<EOF
# Test-only stand-in for python:3.11-slim (made by hack/images.sh; never shipped).
FROM canopy-test/debian:$SUITE-minbase
COPY ca/ /usr/local/share/ca-certificates/
ENV LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# Debian's python3 (3.11) with pip, setuptools and wheel in /usr/local as python:3.11-slim has them (so the
# project's final stage may uninstall pip), the machine's CA trusted by apt and pip, no EXTERNALLY-MANAGED.
RUN apt-get update \\
 && apt-get install -y --no-install-recommends ca-certificates python3 python3-venv python3-pip \\
 && update-ca-certificates \\
 && printf '[global]\\ncert = /etc/ssl/certs/ca-certificates.crt\\n' > /etc/pip.conf \\
 && rm -f /usr/lib/python3*/EXTERNALLY-MANAGED \\
 && python3 -m pip install --ignore-installed pip setuptools wheel \\
 && apt-get purge -y python3-pip && apt-get autoremove -y \\
 && ln -sf /usr/bin/python3 /usr/local/bin/python \\
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb /root/.cache \\
 && pip --version && python -m venv /tmp/venv-check && rm -rf /tmp/venv-check
CMD ["python3"]
EOF
}

build_local_base() {
  if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    log "base image $BASE_IMAGE is cached"
    return
  fi
  local rootfs_tar="$OUT/$SUITE-minbase.tar" ctx
  if [[ ! -s "$rootfs_tar" ]]; then
    command -v debootstrap >/dev/null || { log "debootstrap is missing: run hack/node-assets.sh"; exit 1; }
    log "debootstrap --variant=minbase $SUITE (about 2 minutes)"
    local root="$RUN_DIR/rootfs"
    debootstrap --variant=minbase "$SUITE" "$root" "$(mirror)" >"$RUN_DIR/debootstrap.log" 2>&1 \
      || { tail -30 "$RUN_DIR/debootstrap.log" >&2; exit 1; }
    rm -rf "$root/var/cache/apt/archives/"*.deb "$root/var/lib/apt/lists/"*
    tar --numeric-owner -C "$root" -cf "$rootfs_tar.tmp" . && mv "$rootfs_tar.tmp" "$rootfs_tar"
    rm -rf "$root"
  fi
  docker image inspect "canopy-test/debian:$SUITE-minbase" >/dev/null 2>&1 \
    || docker import "$rootfs_tar" "canopy-test/debian:$SUITE-minbase" >/dev/null
  ctx="$RUN_DIR/base"
  mkdir -p "$ctx/ca"
  cp /usr/local/share/ca-certificates/*.crt "$ctx/ca/" 2>/dev/null || true
  base_dockerfile >"$ctx/Dockerfile"
  log "building the base image $BASE_IMAGE"
  docker build --network=host -t "$BASE_IMAGE" "$ctx" >"$OUT/build-base.log" 2>&1 \
    || { tail -40 "$OUT/build-base.log" >&2; exit 1; }
}

base_arg=()
# The base's tag names its recipe, so a change to the recipe builds a new base.
BASE_IMAGE="canopy-test/python:3.11-slim-$SUITE-$(base_dockerfile | sha256sum | cut -c1-12)"
if ((use_local_base)); then
  build_local_base
  base_arg=(--build-arg "PYTHON_IMAGE=$BASE_IMAGE")
fi
revision="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
log "building $OPERATOR_IMAGE (the Dockerfile's default target)"
docker build --network=host "${base_arg[@]}" --build-arg "REVISION=$revision" -t "$OPERATOR_IMAGE" . >"$OUT/build-operator.log" 2>&1 \
  || { tail -40 "$OUT/build-operator.log" >&2; exit 1; }
log "building $SIMULATOR_IMAGE (the Dockerfile's simulator target)"
docker build --network=host "${base_arg[@]}" --build-arg "REVISION=$revision" --target simulator -t "$SIMULATOR_IMAGE" . \
  >"$OUT/build-simulator.log" 2>&1 || { tail -40 "$OUT/build-simulator.log" >&2; exit 1; }
docker save -o "$TARBALL.tmp" "$OPERATOR_IMAGE" "$SIMULATOR_IMAGE"
mv "$TARBALL.tmp" "$TARBALL"
echo "$hash" >"$OUT/canopy-images.context"
# Keep the layer cache small: drop the dangling images of earlier builds.
docker image prune -f >/dev/null 2>&1 || true
log "built in $(( $(date +%s) - start ))s: $TARBALL ($(du -h "$TARBALL" | cut -f1))"
echo "$TARBALL"
