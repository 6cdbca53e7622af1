"""The kustomize tree renders, and what it renders is safe to install."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from canopy_operator.cli import build_parser
from canopy_operator.telemetry import metrics

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}


def _kustomize(path: Path) -> list[dict[str, Any]]:
    if shutil.which("kubectl") is None:
        if os.environ.get("CI"):
            pytest.fail("kubectl is not on PATH; CI needs it to render manifests/")
        pytest.skip("kubectl is not on PATH")
    result = subprocess.run(
        ["kubectl", "kustomize", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc is not None]


@pytest.fixture(scope="module")
def cluster_install() -> list[dict[str, Any]]:
    return _kustomize(MANIFESTS)


@pytest.fixture(scope="module")
def namespaced_install() -> list[dict[str, Any]]:
    return _kustomize(MANIFESTS / "overlays" / "namespaced")


def _one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [doc for doc in docs if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def _container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    containers = _one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {item["name"]: item.get("value") for item in container["env"]}


def test_cluster_install_renders_every_kind(cluster_install: list[dict[str, Any]]) -> None:
    kinds = sorted(doc["kind"] for doc in cluster_install)
    assert kinds == sorted(
        [
            "Namespace",
            "CustomResourceDefinition",
            "ServiceAccount",
            "ClusterRole",  # the operator's
            "ClusterRole",  # experiment editor (aggregated into edit/admin)
            "ClusterRole",  # experiment viewer (aggregated into view)
            "ClusterRoleBinding",
            "Deployment",
            "Service",
            "NetworkPolicy",
        ]
    )
    namespaced = [doc for doc in cluster_install if doc["kind"] not in CLUSTER_SCOPED]
    assert {doc["metadata"]["namespace"] for doc in namespaced} == {"canopy-system"}


def test_crd_in_install_is_the_generated_one(cluster_install: list[dict[str, Any]]) -> None:
    crd = _one(cluster_install, "CustomResourceDefinition")
    sources = [yaml.safe_load(p.read_text(encoding="utf-8")) for p in sorted((ROOT / "crds").glob("*.yaml"))]
    assert [crd] == sources


def test_deployment_runs_restricted(cluster_install: list[dict[str, Any]]) -> None:
    deployment = _one(cluster_install, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = _container(cluster_install)
    security = container["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert not {"runAsUser", "runAsGroup", "fsGroup"} & (set(pod["securityContext"]) | set(security))
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["runAsNonRoot"] is True
    assert "hostNetwork" not in pod
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/tmp", "/var/cache/canopy-operator"}
    assert {v["name"]: "emptyDir" in v for v in pod["volumes"]} == {"tmp": True, "git-cache": True}


def test_deployment_is_a_single_standalone_operator(cluster_install: list[dict[str, Any]]) -> None:
    spec = _one(cluster_install, "Deployment")["spec"]
    container = _container(cluster_install)
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    assert container["args"][:2] == ["run", "--all-namespaces"]
    assert "--liveness=http://0.0.0.0:8080/healthz" in container["args"]
    assert spec["template"]["spec"]["serviceAccountName"] == "canopy-operator"


def test_deployment_probes_and_resources_are_set(cluster_install: list[dict[str, Any]]) -> None:
    container = _container(cluster_install)
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"health": 8080, "metrics": 9090}
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert set(container["resources"]) == {"requests", "limits"}
    assert set(container["resources"]["limits"]) == {"cpu", "memory"}


def test_eval_image_follows_the_operator_image(cluster_install: list[dict[str, Any]]) -> None:
    container = _container(cluster_install)
    assert _env(container)["CANOPY_OPERATOR_IMAGE"] == container["image"] == "canopy-operator:0.1.0"


def test_eval_image_follows_a_changed_image(tmp_path: Path) -> None:
    copy = tmp_path / "manifests"
    shutil.copytree(MANIFESTS, copy)
    kustomization = copy / "kustomization.yaml"
    text = kustomization.read_text(encoding="utf-8")
    kustomization.write_text(text.replace("newTag: 0.1.0", "newTag: 9.9.9"), encoding="utf-8")
    container = _container(_kustomize(copy))
    assert _env(container)["CANOPY_OPERATOR_IMAGE"] == container["image"] == "canopy-operator:9.9.9"


def test_metrics_service_selects_the_operator(cluster_install: list[dict[str, Any]]) -> None:
    service = _one(cluster_install, "Service")
    deployment = _one(cluster_install, "Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}]


def test_networkpolicy_opens_only_the_expected_ports(cluster_install: list[dict[str, Any]]) -> None:
    policy = _one(cluster_install, "NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    ingress_ports = {p["port"] for rule in policy["ingress"] for p in rule["ports"]}
    egress_ports = {p["port"] for rule in policy["egress"] for p in rule["ports"]}
    assert ingress_ports == {8080, 9090}
    assert egress_ports == {443, 6443, 53, 5353, 8000, 3000, 8321}


def test_namespaced_overlay_creates_nothing_cluster_scoped(namespaced_install: list[dict[str, Any]]) -> None:
    kinds = {doc["kind"] for doc in namespaced_install}
    assert kinds & CLUSTER_SCOPED == set()
    assert {"Role", "RoleBinding", "ServiceAccount", "Deployment"} <= kinds
    args = _container(namespaced_install)["args"]
    assert "--all-namespaces" not in args
    assert "--namespace=$(POD_NAMESPACE)" in args


@pytest.mark.parametrize("install", ["cluster_install", "namespaced_install"])
def test_container_args_are_accepted_by_the_cli(install: str, request: pytest.FixtureRequest) -> None:
    args = _container(request.getfixturevalue(install))["args"]
    parsed = build_parser().parse_args(args)
    assert parsed.command == "run"
    assert parsed.liveness == "http://0.0.0.0:8080/healthz"


def test_namespaced_overlay_follows_a_changed_namespace(tmp_path: Path) -> None:
    copy = tmp_path / "manifests"
    shutil.copytree(MANIFESTS, copy)
    overlay = copy / "overlays" / "namespaced" / "kustomization.yaml"
    text = overlay.read_text(encoding="utf-8")
    overlay.write_text(text.replace("namespace: canopy-system", "namespace: alice-test"), encoding="utf-8")
    docs = _kustomize(copy / "overlays" / "namespaced")
    assert {doc["metadata"]["namespace"] for doc in docs} == {"alice-test"}
    assert _one(docs, "RoleBinding")["subjects"][0]["namespace"] == "alice-test"


def test_monitoring_renders_servicemonitor_and_dashboard() -> None:
    docs = _kustomize(MANIFESTS / "monitoring")
    monitor = _one(docs, "ServiceMonitor")
    dashboard = _one(docs, "ConfigMap")
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitor["spec"]["endpoints"][0]["honorLabels"] is True
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["grafana-dashboard.json"])["uid"] == "canopy-operator"


def _exposed_names() -> set[str]:
    """Every sample name the operator's registry can serve (its own metrics, process and platform collectors).

    Families without a series yet count too (by type), and no ``_created`` name: the operator serves none.
    """
    suffixes = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_sum", "_count"),
        "summary": ("", "_sum", "_count"),
        "gauge": ("",),
        "info": ("_info",),
        "stateset": ("",),
        "unknown": ("",),
    }
    families = list(metrics.Metrics().registry.collect())
    by_type = {family.name + suffix for family in families for suffix in suffixes[family.type]}
    served = {sample.name for family in families for sample in family.samples}
    assert not any(name.endswith("_created") for name in served)
    return by_type | served


def test_dashboard_queries_only_metrics_the_operator_exposes() -> None:
    dashboard = json.loads((MANIFESTS / "monitoring" / "grafana-dashboard.json").read_text(encoding="utf-8"))
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    annotations = [a.get("target", {}).get("expr") or a.get("expr", "") for a in dashboard["annotations"]["list"]]
    variables = [v.get("definition", "") for v in dashboard["templating"]["list"] if v["type"] == "query"]
    used = {name for expr in exprs + annotations + variables for name in re.findall(r"canopy_operator_[a-z_]+", expr)}
    assert len(exprs) >= 10
    assert used - _exposed_names() == set()
    assert "canopy_operator_experiment_win_rate_lower_ratio" in used
    assert "canopy_operator_experiment_decided_timestamp_seconds" in used  # the decision annotation


def test_dockerfile_runs_unprivileged_without_healthcheck() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    final_stage = text.split("\nFROM ")[-1]
    # A numeric non-root user (so runAsNonRoot can be checked) in group 0, as OpenShift runs any UID.
    assert "USER 65532:0" in final_stage
    assert "HEALTHCHECK NONE" in final_stage
    assert 'ENTRYPOINT ["canopy-operator"]' in final_stage
    assert 'CMD ["run"]' in final_stage
    assert "python:3.11-slim" in text
    assert "pip wheel" not in final_stage
    assert "gcc" not in final_stage
    assert "build-essential" not in final_stage
