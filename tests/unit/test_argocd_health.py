"""The Argo CD health check (Lua) maps PromptExperiment statuses to Argo CD health, run by a real Lua."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from canopy_operator.api.conditions import Condition
from canopy_operator.api.status import PromptExperimentStatus

ARGOCD = Path(__file__).resolve().parents[2] / "manifests" / "argocd"
SCRIPT = ARGOCD / "health-promptexperiment.lua"
#: Argo CD runs health checks with gopher-lua (Lua 5.1); prefer the same dialect.
LUA = next((p for p in map(shutil.which, ("lua5.1", "lua5.4", "lua5.3", "lua")) if p), None)
NOW = datetime(2026, 5, 1, tzinfo=UTC)


def to_lua(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"[{to_lua(k)}] = {to_lua(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "{" + ", ".join(to_lua(v) for v in value) + "}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "nil"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))  # JSON string escapes are valid Lua escapes for these texts


def health(obj: dict[str, Any]) -> tuple[str, str]:
    assert LUA is not None
    program = (
        f"obj = {to_lua(obj)}\n"
        f"local check = assert(loadfile({json.dumps(str(SCRIPT))}))\n"
        'local hs = check()\nio.write(hs.status, "\\n", hs.message or "")\n'
    )
    done = subprocess.run([LUA, "-"], input=program, capture_output=True, text=True, check=True, timeout=10)
    status, _, message = done.stdout.partition("\n")
    return status, message


def experiment(generation: int = 1, **status: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"metadata": {"name": "summary-ab", "generation": generation}}
    if status:
        model = PromptExperimentStatus(observed_generation=1, **status)
        body["status"] = model.model_dump(by_alias=True, mode="json", exclude_none=True)
    return body


def cond(kind: str, status: str, reason: str, message: str) -> Condition:
    return Condition(type=kind, status=status, reason=reason, message=message, last_transition_time=NOW)


needs_lua = pytest.mark.skipif(LUA is None, reason="no Lua interpreter (apt-get install lua5.1)")


@needs_lua
@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        (experiment(), ("Progressing", "Waiting for the operator to report status")),
        (experiment(phase="Running", message="Test t-1 collecting votes"), ("Healthy", "Test t-1 collecting votes")),
        (experiment(phase="Concluded", message="Challenger promoted"), ("Healthy", "Challenger promoted")),
        (experiment(phase="Promoting"), ("Progressing", "Phase Promoting")),
        (experiment(phase="Pending", message="Reading the backend"), ("Progressing", "Reading the backend")),
        (
            experiment(
                phase="AwaitingApproval",
                conditions=[cond("AwaitingApproval", "True", "ManualPromotion", "Set spec.promotion.approved")],
            ),
            ("Suspended", "ManualPromotion: Set spec.promotion.approved"),
        ),
        (
            experiment(phase="Degraded", conditions=[cond("Degraded", "True", "GitAuthFailed", "401 from Gitea")]),
            ("Degraded", "GitAuthFailed: 401 from Gitea"),
        ),
        (
            experiment(phase="Running", conditions=[cond("Degraded", "True", "BackendUnreachable", "")]),
            ("Degraded", "BackendUnreachable"),
        ),
        (
            experiment(phase="Running", conditions=[cond("Degraded", "False", "AsExpected", "")]),
            ("Healthy", ""),
        ),
        (experiment(phase="Degraded", message="InvalidValues"), ("Degraded", "InvalidValues")),
        (
            experiment(generation=3, phase="Running"),
            ("Progressing", "Waiting for the operator to observe generation 3"),
        ),
    ],
)
def test_health_check_maps_the_phase_to_argo_health(obj: dict[str, Any], expected: tuple[str, str]) -> None:
    assert health(obj) == expected


def test_readme_embeds_the_health_check_verbatim() -> None:
    readme = (ARGOCD / "README.md").read_text(encoding="utf-8")
    lines = SCRIPT.read_text(encoding="utf-8").splitlines()
    indented = "\n".join(("    " + line) if line else "" for line in lines)
    assert "resource.customizations.health.canopy.genaiops.io_PromptExperiment: |\n" + indented in readme
