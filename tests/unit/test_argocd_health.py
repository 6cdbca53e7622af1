"""The Argo CD health check (Lua) maps PromptExperiment statuses to Argo CD health, run by a real Lua."""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, get_args

import pytest

from canopy_operator.api.conditions import Condition
from canopy_operator.api.spec import ChallengerSpec, PromotionSpec, PromptExperimentSpec
from canopy_operator.api.status import Phase, PromptExperimentStatus

ARGOCD = Path(__file__).resolve().parents[2] / "manifests" / "argocd"
SCRIPT = ARGOCD / "health-promptexperiment.lua"
#: Argo CD runs health checks with gopher-lua (Lua 5.1); prefer the same dialect.
LUA = next((p for p in map(shutil.which, ("lua5.1", "lua5.4", "lua5.3", "lua")) if p), None)
NOW = datetime(2026, 5, 1, tzinfo=UTC)
#: Argo CD opens only Lua's base, table and package libraries for these scripts (and a reduced ``os``). A harness
#: runs this once it has what it needs, so that a script relying on ``string``, ``math`` or ``s:method()`` fails
#: here as it would in Argo CD.
SANDBOX = 'string, math, io, os, debug = nil, nil, nil, nil, nil\ngetmetatable("").__index = nil\n'
#: Bytes a Lua string literal may hold unescaped: printable ASCII except the quote and the backslash.
_LUA_PLAIN = frozenset(range(0x20, 0x7F)) - {ord('"'), ord("\\")}


def lua_string(text: str) -> str:
    """A Lua 5.1 string literal: printable ASCII as is, every other byte of the UTF-8 text as a ``\\ddd`` escape."""
    return '"' + "".join(chr(b) if b in _LUA_PLAIN else f"\\{b:03d}" for b in text.encode("utf-8")) + '"'


def to_lua(value: Any) -> str:
    """A Lua table constructor for a JSON-like value (Lua 5.1 has no ``\\u`` escapes, hence :func:`lua_string`)."""
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
    return lua_string(str(value))


def health(obj: dict[str, Any]) -> tuple[str, str]:
    assert LUA is not None
    program = (
        f"obj = {to_lua(obj)}\n"
        f"local check = assert(loadfile({lua_string(str(SCRIPT))}))\n"
        "local write = io.write\n"
        f"{SANDBOX}"
        'local hs = check()\nwrite(hs.status, "\\n", hs.message or "")\n'
    )
    done = subprocess.run(
        [LUA, "-"], input=program, capture_output=True, text=True, encoding="utf-8", check=True, timeout=10
    )
    status, _, message = done.stdout.partition("\n")
    return status, message


def experiment(
    generation: int = 1, *, deleting: bool = False, on_delete: str | None = None, **status: Any
) -> dict[str, Any]:
    """A PromptExperiment as Argo CD sees it; ``deleting`` sets ``metadata.deletionTimestamp``."""
    body: dict[str, Any] = {"metadata": {"name": "summary-ab", "generation": generation}}
    if deleting:
        body["metadata"]["deletionTimestamp"] = "2026-05-01T12:00:00Z"
        body["metadata"]["finalizers"] = ["kopf.zalando.org/KopfFinalizerMarker"]
    if on_delete is not None:
        spec = PromptExperimentSpec(
            challenger=ChallengerSpec(prompt="Summarise in three bullet points."),
            promotion=PromotionSpec(on_delete=on_delete),
        )
        body["spec"] = spec.model_dump(by_alias=True, mode="json", exclude_none=True)
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
        # spec.suspend: the phase Suspended is Argo CD's Suspended, as a paused Rollout is.
        (
            experiment(phase="Suspended", message="Suspended at 41 decisive votes"),
            ("Suspended", "Suspended at 41 decisive votes"),
        ),
        (experiment(phase="Suspended"), ("Suspended", "Suspended by spec.suspend")),
        # A pause is what the person asked for: a stale Degraded condition does not hide it.
        (
            experiment(
                phase="Suspended",
                message="Suspended",
                conditions=[cond("Degraded", "True", "BackendUnreachable", "connection refused")],
            ),
            ("Suspended", "Suspended"),
        ),
        (
            experiment(generation=2, phase="Suspended", message="Suspended"),
            ("Progressing", "Waiting for the operator to observe generation 2"),
        ),
        # spec.abort: Degraded, as Argo Rollouts reports an aborted rollout.
        (
            experiment(phase="Aborted", message="Test t-1 ended, champion kept"),
            ("Degraded", "Aborted by spec.abort: Test t-1 ended, champion kept"),
        ),
        (experiment(phase="Aborted"), ("Degraded", "Aborted by spec.abort")),
        # Being deleted wins over everything: the operator is restoring the config.
        (
            experiment(deleting=True, phase="Running", message="Test t-1 collecting votes"),
            ("Progressing", "Being deleted: restoring the config as it was before the experiment"),
        ),
        (
            experiment(deleting=True, on_delete="Restore", phase="Concluded"),
            ("Progressing", "Being deleted: restoring the config as it was before the experiment"),
        ),
        (
            experiment(
                generation=4,
                deleting=True,
                phase="Degraded",
                conditions=[cond("Degraded", "True", "GitAuthFailed", "401 from Gitea")],
            ),
            ("Progressing", "Being deleted: restoring the config as it was before the experiment"),
        ),
        (
            experiment(deleting=True, on_delete="Keep", phase="Aborted"),
            ("Progressing", "Being deleted: the config is left as it is (onDelete: Keep)"),
        ),
        (
            experiment(deleting=True),
            ("Progressing", "Being deleted: restoring the config as it was before the experiment"),
        ),
        (
            experiment(phase="Running", message="Résumé: 12 votes, «challenger» ahead\tso far"),
            ("Healthy", "Résumé: 12 votes, «challenger» ahead\tso far"),
        ),
    ],
)
def test_health_check_maps_the_phase_to_argo_health(obj: dict[str, Any], expected: tuple[str, str]) -> None:
    assert health(obj) == expected


#: The Argo CD health of every phase (no condition, generation observed); a new phase must be added here.
HEALTH_OF_PHASE = {
    "Pending": "Progressing",
    "Progressing": "Progressing",
    "Running": "Healthy",
    "AwaitingApproval": "Suspended",
    "Promoting": "Progressing",
    "Concluded": "Healthy",
    "Degraded": "Degraded",
    "Suspended": "Suspended",
    "Aborted": "Degraded",
}


@needs_lua
def test_every_phase_has_its_health() -> None:
    assert set(HEALTH_OF_PHASE) == set(get_args(Phase))
    assert {phase: health(experiment(phase=phase))[0] for phase in HEALTH_OF_PHASE} == HEALTH_OF_PHASE


def test_readme_embeds_the_health_check_verbatim() -> None:
    readme = (ARGOCD / "README.md").read_text(encoding="utf-8")
    lines = SCRIPT.read_text(encoding="utf-8").splitlines()
    indented = "\n".join(("    " + line) if line else "" for line in lines)
    assert "resource.customizations.health.canopy.genaiops.io_PromptExperiment: |\n" + indented in readme
