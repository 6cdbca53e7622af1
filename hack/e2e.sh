#!/usr/bin/env bash
# `make e2e`: the e2e tier (tests/e2e, marker e2e) on a real cluster, asserting what a user would see.
#   default                 a real single-node cluster on this machine (canopy_devkit.node; root): the node's
#                           programs (hack/node-assets.sh), kube-apiserver/etcd (hack/envtest-assets.sh) and
#                           the images (hack/images.sh) are built or reused first (not as non-root: skipped);
#   E2E_KIND_CLUSTER=name   a kind cluster (Docker and kind), created when missing;
#   E2E_KUBECONFIG=path     any existing cluster; E2E_IMAGE_LOAD='cmd {archive}' loads the image tarball.
# Under CI=true the tier fails instead of skipping when its cluster cannot be had. Times are printed.
set -uo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
build=1
if [[ -z "${E2E_KUBECONFIG:-}" && -z "${E2E_KIND_CLUSTER:-}" ]]; then
  if [[ $(id -u) -eq 0 ]]; then
    bash hack/envtest-assets.sh >/dev/null || exit 1
    bash hack/node-assets.sh >/dev/null || exit 1
  else
    echo "e2e: not root: the real node cannot start and the tier will be skipped (CI=true fails it)" >&2
    build=0
  fi
fi
if ((build)); then
  bash hack/images.sh >/dev/null || exit 1
fi
echo "e2e: assets and images ready after $(( $(date +%s) - start ))s" >&2
CANOPY_E2E=1 .venv/bin/pytest -m e2e -p no:cacheprovider -rs --durations=0 --timeout=900 tests/e2e "$@"
rc=$?
echo "e2e: done in $(( $(date +%s) - start ))s (exit $rc)" >&2
if [[ $rc -eq 5 ]]; then
  echo "pytest collected no e2e tests: the e2e command is broken" >&2
  exit 1
fi
exit $rc
