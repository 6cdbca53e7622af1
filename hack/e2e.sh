#!/usr/bin/env bash
# `make e2e`: the kind end-to-end test. Creates (or reuses) kind cluster $E2E_CLUSTER (default canopy-e2e),
# builds and loads the image, installs manifests/, runs the simulator as a Deployment and a full experiment.
# Without Docker or kind the test is skipped with the reason (never failed). E2E_KEEP_CLUSTER=1 keeps the cluster.
set -uo pipefail
cd "$(dirname "$0")/.."
for tool in docker kind kubectl; do
  command -v "$tool" >/dev/null 2>&1 || echo "e2e: $tool is not installed: the test will be skipped" >&2
done
.venv/bin/pytest -m e2e -rs tests/e2e "$@"
rc=$?
if [[ $rc -eq 5 ]]; then
  echo "pytest collected no e2e tests: the e2e command is broken" >&2
  exit 1
fi
exit $rc
