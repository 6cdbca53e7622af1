"""Every object we ship or create runs where OpenShift's ``restricted-v2`` runs pods: no fixed UID, GID or fsGroup
anywhere (the platform assigns them), and still non-root, no privilege escalation, all capabilities dropped,
RuntimeDefault seccomp and a read-only root filesystem. The image runs as any UID in group 0.

Rendered here: ``manifests/`` (cluster-wide, per namespace, monitoring), the Helm chart in its variants, and the
evaluation Jobs the operator creates. On the real node (``tests/e2e/test_openshift_uids.py``) the same pods run
with an assigned high UID and group 0, and a pinned UID is refused.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from canopy_operator.api.spec import EvaluationSpec, JudgeSpec
from canopy_operator.core.evaluation.jobs import render_eval_job
from tests.unit.test_chart import template
from tests.unit.test_manifests import _kustomize

ROOT = Path(__file__).resolve().parents[2]
PINNED = {"runAsUser", "runAsGroup", "fsGroup"}
POD_KINDS = {"Deployment": ("spec", "template", "spec"), "Job": ("spec", "template", "spec"), "Pod": ("spec",)}


def _pinned(value: Any, path: str = "") -> Iterator[str]:
    """Every path under ``value`` that sets a UID, GID or fsGroup."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key in PINNED:
                yield f"{path}.{key}"
            yield from _pinned(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _pinned(item, f"{path}[{index}]")


def _pod_spec(obj: dict[str, Any]) -> dict[str, Any] | None:
    steps = POD_KINDS.get(obj.get("kind", ""))
    if steps is None:
        return None
    spec: dict[str, Any] = obj
    for step in steps:
        spec = spec[step]
    return spec


def _eval_jobs() -> list[dict[str, Any]]:
    judge = JudgeSpec(endpoint="http://llamastack:8321/v1/openai/v1", model="llama32", api_key_secret="judge-key")
    specs = [EvaluationSpec(), EvaluationSpec(enabled=True, judge=judge, image="quay.io/team/eval:1")]
    return [
        render_eval_job(
            namespace="user1-test",
            experiment_name="summary-tone",
            experiment_uid="0f0e0d0c-0000-4000-8000-000000000001",
            job_name="summary-tone-eval-0123abcd",
            image="quay.io/example/canopy-operator:0.1.0",
            dataset_secret="summary-tone-dataset-0123abcd",
            backend_url="http://canopy-backend:8000",
            evaluation=spec,
            test_id="t-4f2a",
            trigger="negatives",
            seed=7,
            cases=3,
        )
        for spec in specs
    ]


def _shipped_and_created() -> list[tuple[str, dict[str, Any]]]:
    objects: list[tuple[str, dict[str, Any]]] = []
    for name, path in (
        ("manifests", ROOT / "manifests"),
        ("manifests/overlays/namespaced", ROOT / "manifests/overlays/namespaced"),
        ("manifests/monitoring", ROOT / "manifests/monitoring"),
    ):
        objects += [(name, doc) for doc in _kustomize(path)]
    for sets in ((), ("installScope=Namespace",), ("dashboard.enabled=true", "metrics.serviceMonitor.enabled=true")):
        objects += [(f"chart {' '.join(sets) or 'defaults'}", doc) for doc in template(*sets)]
    objects += [("evaluation Job", job) for job in _eval_jobs()]
    return objects


def test_no_shipped_or_created_object_pins_a_uid_gid_or_fsgroup() -> None:
    objects = _shipped_and_created()
    pods = [(source, obj) for source, obj in objects if _pod_spec(obj) is not None]
    assert {obj["kind"] for _, obj in pods} == {"Deployment", "Job"}
    assert len(pods) >= 7
    for source, obj in objects:
        pinned = list(_pinned(obj))
        assert not pinned, f"{source}: {obj['kind']} {obj['metadata'].get('name')} pins {pinned}"


def test_every_pod_is_still_restricted() -> None:
    for source, obj in _shipped_and_created():
        spec = _pod_spec(obj)
        if spec is None:
            continue
        where = f"{source}: {obj['kind']} {obj['metadata'].get('name')}"
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert not spec.get("hostNetwork"), where
        assert not spec.get("hostPID"), where
        for container in spec["containers"] + spec.get("initContainers", []):
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, where
            assert security["capabilities"] == {"drop": ["ALL"]}, where
            assert security["readOnlyRootFilesystem"] is True, where
            assert security.get("privileged", False) is False, where


@pytest.mark.parametrize("stage", ["operator", "simulator"])
def test_the_images_run_as_any_uid_in_group_zero(stage: str) -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    stages = text.split("\nFROM ")
    body = stages[-1] if stage == "operator" else next(s for s in stages if s.split("\n")[0].endswith(" AS simulator"))
    users = re.findall(r"^USER (\S+)$", body, flags=re.MULTILINE)
    assert users == ["65532:0"], users  # numeric (kubelet can check runAsNonRoot) and group 0
    assert re.search(r"useradd --uid 65532 --gid 0 ", body)
    assert "groupadd" not in body
    if stage == "operator":  # what it writes outside emptyDirs belongs to group 0 with the owner's rights
        assert "chown 65532:0 /var/cache/canopy-operator" in body
        assert "chmod 2775 /var/cache/canopy-operator" in body
