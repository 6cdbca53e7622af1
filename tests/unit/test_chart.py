"""The Helm chart (``charts/canopy-operator``): ``helm lint`` and ``helm template`` pass, and with its defaults it
installs what ``manifests/`` installs (cluster-wide, and per namespace), so the two cannot drift.

helm is built from the Go module proxy and cached (``hack/helm-assets.sh``; ``hack/run-tests.sh`` exports its
path as ``CANOPY_HELM``). Under ``CI=true`` a missing helm fails these tests instead of skipping them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.test_manifests import _kustomize

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "canopy-operator"
MANIFESTS = ROOT / "manifests"
NAMESPACE = "canopy-system"
#: Labels and annotations only Helm adds; everything else must be equal.
HELM_ONLY_LABELS = {
    "helm.sh/chart",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
}


def _helm() -> str:
    helm = os.environ.get("CANOPY_HELM") or shutil.which("helm")
    if not helm:
        if os.environ.get("CI"):
            pytest.fail("helm is missing: hack/run-tests.sh builds it (hack/helm-assets.sh)", pytrace=False)
        pytest.skip("helm is not built: `make helm-assets`, then CANOPY_HELM=<path>")
    return helm


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([_helm(), *args], capture_output=True, text=True, timeout=120, check=False)
    if check:
        assert done.returncode == 0, f"helm {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done


def template(
    *sets: str, release: str = "canopy-operator", namespace: str = NAMESPACE, strings: tuple[str, ...] = ()
) -> list[dict[str, Any]]:
    """``helm template`` of the chart (CRDs included) with ``--set`` (and ``--set-string``) options."""
    args = ["template", release, str(CHART), "--namespace", namespace, "--include-crds"]
    for item in sets:
        args += ["--set", item]
    for item in strings:
        args += ["--set-string", item]
    docs = yaml.safe_load_all(_run(*args).stdout)
    return [doc for doc in docs if doc]


def _strip_helm(value: Any) -> Any:
    """Drop the labels Helm adds (in metadata, selectors and pod templates) so objects compare with manifests/."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key in HELM_ONLY_LABELS:
                continue
            out[key] = _strip_helm(item)
        return out
    if isinstance(value, list):
        return [_strip_helm(item) for item in value]
    return value


def _by_kind_name(docs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(doc["kind"], doc["metadata"]["name"]): _strip_helm(doc) for doc in docs}


def _comparable(doc: dict[str, Any]) -> dict[str, Any]:
    """An object with what comments and key order cannot show removed: the Deployment's image fields."""
    doc = json.loads(json.dumps(doc))
    doc["metadata"].pop("annotations", None)
    if doc["kind"] == "Deployment":
        container = doc["spec"]["template"]["spec"]["containers"][0]
        container.pop("image")
        container["env"] = [e for e in container["env"] if e["name"] != "CANOPY_OPERATOR_IMAGE"]
    return dict(doc)


@pytest.mark.parametrize(
    "sets",
    [
        (),
        ("installScope=Namespace",),
        ("dashboard.enabled=true", "metrics.serviceMonitor.enabled=true"),
        ("dashboard.enabled=true", "dashboard.kind=ConfigMap", "networkPolicy.enabled=false"),
    ],
)
def test_helm_lint_passes(sets: tuple[str, ...]) -> None:
    args = ["lint", str(CHART), "--strict"]
    for item in sets:
        args += ["--set", item]
    out = _run(*args)
    assert "1 chart(s) linted, 0 chart(s) failed" in out.stdout


def test_the_values_schema_refuses_what_the_templates_cannot_render() -> None:
    bad_values = (
        "installScope=Everywhere",
        "dashboard.kind=Sidecar",
        "metrics.port=80",
        "unknownKey=1",
        "extraEnv[0].name=X,extraEnv[0].value=5",  # an EnvVar value must be a string: the API would refuse it
    )
    for bad in bad_values:
        done = _run("template", "x", str(CHART), "--set", bad, check=False)
        assert done.returncode != 0, bad
        assert "values don't meet the specifications of the schema" in done.stderr, done.stderr


def test_cluster_install_is_the_manifests_install() -> None:
    chart = _by_kind_name(template())
    manifests = _by_kind_name(_kustomize(MANIFESTS))
    manifests.pop(("Namespace", NAMESPACE))  # `helm install --create-namespace`; the chart leaves namespaces alone
    assert set(chart) == set(manifests)
    for key, expected in manifests.items():
        assert _comparable(chart[key]) == _comparable(expected), key


def test_namespace_install_is_the_namespaced_overlay() -> None:
    chart = template("installScope=Namespace")
    crds = [doc for doc in chart if doc["kind"] == "CustomResourceDefinition"]
    objects = _by_kind_name([doc for doc in chart if doc["kind"] != "CustomResourceDefinition"])
    manifests = _by_kind_name(_kustomize(MANIFESTS / "overlays" / "namespaced"))
    assert set(objects) == set(manifests)
    for key, expected in manifests.items():
        assert _comparable(objects[key]) == _comparable(expected), key
    assert [crd["metadata"]["name"] for crd in crds] == ["promptexperiments.canopy.genaiops.io"]
    assert not {doc["kind"] for doc in chart} & {"ClusterRole", "ClusterRoleBinding"}


def test_the_operator_image_is_also_the_evaluation_image() -> None:
    docs = template("image.repository=registry.example.com/canopy/canopy-operator", "image.tag=1.2.3")
    container = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert container["image"] == "registry.example.com/canopy/canopy-operator:1.2.3"
    assert env["CANOPY_OPERATOR_IMAGE"] == container["image"]
    default = next(d for d in template() if d["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]
    chart_yaml = yaml.safe_load((CHART / "Chart.yaml").read_text(encoding="utf-8"))
    assert default["image"] == f"canopy-operator:{chart_yaml['appVersion']}"


def test_allow_lists_and_extra_env_reach_the_operator() -> None:
    docs = template(
        "security.backendHosts={canopy.example.com,*.apps.example.com}",
        "security.evaluationImages={quay.io/team/eval*}",
        "security.allowInsecureHttp=true",
        strings=("extraEnv[0].name=CANOPY_DELETE_ATTEMPTS", "extraEnv[0].value=5"),
    )
    container = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["CANOPY_BACKEND_HOSTS"] == "canopy.example.com,*.apps.example.com"
    assert env["CANOPY_EVALUATION_IMAGES"] == "quay.io/team/eval*"
    assert env["CANOPY_ALLOW_INSECURE_HTTP"] == "true"
    assert env["CANOPY_DELETE_ATTEMPTS"] == "5"
    defaults = next(d for d in template() if d["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]
    names = {e["name"] for e in defaults["env"]}
    assert not names & {"CANOPY_BACKEND_HOSTS", "CANOPY_EVALUATION_IMAGES", "CANOPY_ALLOW_INSECURE_HTTP"}


def test_the_dashboard_as_a_grafana_dashboard_or_a_sidecar_configmap() -> None:
    dashboard = (MANIFESTS / "monitoring" / "grafana-dashboard.json").read_text(encoding="utf-8")
    grafana = [d for d in template("dashboard.enabled=true") if d["kind"] == "GrafanaDashboard"]
    assert len(grafana) == 1
    assert grafana[0]["apiVersion"] == "grafana.integreatly.org/v1beta1"
    assert grafana[0]["spec"]["instanceSelector"] == {"matchLabels": {"dashboards": "grafana"}}
    assert json.loads(grafana[0]["spec"]["json"]) == json.loads(dashboard)
    sidecar = [d for d in template("dashboard.enabled=true", "dashboard.kind=ConfigMap") if d["kind"] == "ConfigMap"]
    assert len(sidecar) == 1
    assert sidecar[0]["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(sidecar[0]["data"]["grafana-dashboard.json"]) == json.loads(dashboard)
    assert not {d["kind"] for d in template()} & {"GrafanaDashboard", "ConfigMap", "ServiceMonitor"}


def test_the_service_monitor_matches_manifests_monitoring() -> None:
    chart = [d for d in template("metrics.serviceMonitor.enabled=true") if d["kind"] == "ServiceMonitor"]
    shipped = [d for d in _kustomize(MANIFESTS / "monitoring") if d["kind"] == "ServiceMonitor"]
    assert len(chart) == len(shipped) == 1
    assert _strip_helm(chart[0])["spec"] == shipped[0]["spec"]


def test_another_release_name_names_every_object_after_it() -> None:
    docs = template("userRoles.enabled=false", release="team-a", namespace="team-a")
    names = {(d["kind"], d["metadata"]["name"]) for d in docs if d["kind"] != "CustomResourceDefinition"}
    assert all(name.startswith("team-a-canopy-operator") for _, name in names), names
    binding = next(d for d in docs if d["kind"] == "ClusterRoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "team-a-canopy-operator", "namespace": "team-a"}]
