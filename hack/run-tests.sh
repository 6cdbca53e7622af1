#!/usr/bin/env bash
# The README's test command runs this: every test tier, generated-file drift, and a loud failure when
# pytest collects nothing (exit code 5) or when the real API server tier would be skipped under CI=true.
set -uo pipefail
cd "$(dirname "$0")/.."
.venv/bin/canopy-operator crds --output-dir crds >/dev/null
.venv/bin/canopy-operator manifests --root . >/dev/null
if git rev-parse --git-dir >/dev/null 2>&1 && ! git diff --exit-code --stat -- crds manifests charts; then
  echo "generated files drifted from the models or the permission table: run make generate and commit" >&2
  exit 1
fi
# helm (built from the Go module proxy and cached, hack/helm-assets.sh) for `helm lint` / `helm template` of the
# chart in tests/unit/test_chart.py.
if [[ -z "${CANOPY_HELM:-}" ]]; then
  CANOPY_HELM="$(bash hack/helm-assets.sh | tail -1)" || { echo "hack/helm-assets.sh failed" >&2; exit 1; }
  export CANOPY_HELM
fi
.venv/bin/pytest -m "not e2e" tests "$@"
rc=$?
if [[ $rc -eq 5 ]]; then
  echo "pytest collected no tests: the test command is broken" >&2
  exit 1
fi
exit $rc
