"""The pure parts of ``watch``, ``approve``, ``suspend``, ``resume`` and ``abort``, the command line without a
cluster (``preview``, usage and kubeconfig errors), and that the pure modules do no I/O."""

from __future__ import annotations

import ast
import copy
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from canopy_operator.pexp import actions, cli, lines
from canopy_operator.preview import main as preview_main
from tests.unit.test_pexp_get import TEST_ID, experiment, realistic_status, spec_json, status_json

SEEN = datetime(2026, 1, 2, 10, 0, 3, tzinfo=UTC)
PEXP = Path(cli.__file__).parent


def current(phase: str = "Running", **spec: Any) -> dict[str, Any]:
    return experiment(status_json(realistic_status(phase=phase)), spec_json(**spec))


# watch -------------------------------------------------------------------------------------------------


def test_a_watch_line_shows_time_phase_votes_cs_p_and_message() -> None:
    line = lines.watch_line(current(), SEEN)
    assert line == (
        "10:00:03Z  Running           votes 214:106 ties 12  CS [0.551, 0.789]  p 0.0243  challenger ahead: 214 to 106"
    )
    assert lines.header().split()[:2] == ["TIME", "PHASE"]


def test_only_a_change_of_what_the_line_shows_makes_a_new_line() -> None:
    before = current()
    internal = copy.deepcopy(before)
    internal["status"]["collection"]["abCursor"] = 999
    assert lines.line_key(internal) == lines.line_key(before)
    vote = copy.deepcopy(before)
    vote["status"]["votes"]["ties"] = 13
    assert lines.line_key(vote) != lines.line_key(before)
    moved = copy.deepcopy(before)
    moved["status"]["evidence"]["confidenceSequence"]["lower"] = 0.6
    assert lines.line_key(moved) != lines.line_key(before)


def test_concluded_and_aborted_end_the_watch() -> None:
    assert lines.is_terminal(current("Concluded"))
    assert lines.is_terminal(current("Aborted"))
    assert not lines.is_terminal(current("AwaitingApproval"))
    assert not lines.is_terminal({"status": "Concluded"})


def test_a_watch_line_of_an_odd_status_is_still_one_line() -> None:
    odd = {"status": {"phase": ["x"], "votes": {"ties": "2"}, "evidence": {"confidenceSequence": {"lower": None}}}}
    odd["status"]["message"] = "a\nb\x1b[1m" + "m" * 500
    line = lines.watch_line(odd, SEEN)
    assert "\n" not in line
    assert "\x1b" not in line
    assert len(line) < 220
    assert "votes ?:? ties ?  CS -  p -" in line


# approve, suspend, resume, abort ------------------------------------------------------------------------


def test_approve_names_the_current_test() -> None:
    action = actions.approve(current("AwaitingApproval"), "shop", "tone")
    assert action.patch == {"promotion": {"approved": True, "approvedTestId": TEST_ID}}
    assert action.message == (
        f"promptexperiment shop/tone approved for test {TEST_ID} "
        f"(spec.promotion.approved=true, approvedTestId={TEST_ID})"
    )


@pytest.mark.parametrize("phase", ["Running", "Concluded", "Promoting", "Suspended"])
def test_approve_outside_awaiting_approval_is_refused_naming_the_phase(phase: str) -> None:
    with pytest.raises(actions.Refused, match=f"its phase is {phase}, not AwaitingApproval"):
        actions.approve(current(phase), "shop", "tone")


def test_approve_without_a_status_or_a_test_id_is_refused() -> None:
    with pytest.raises(actions.Refused, match="Pending \\(no status yet\\)"):
        actions.approve(experiment(None), "shop", "tone")
    broken = current("AwaitingApproval")
    broken["status"]["test"]["id"] = "x" * 65
    with pytest.raises(actions.Refused, match="names no test"):
        actions.approve(broken, "shop", "tone")


def test_suspend_resume_and_abort_set_their_fields_once() -> None:
    assert actions.suspend(current(), "shop", "tone", True).patch == {"suspend": True}
    assert actions.suspend(current(suspend=True), "shop", "tone", True).patch is None
    assert "already suspended" in actions.suspend(current(suspend=True), "shop", "tone", True).message
    resume = actions.suspend(current(suspend=True), "shop", "tone", False)
    assert resume.patch == {"suspend": False}
    assert resume.message == "promptexperiment shop/tone resumed (spec.suspend=false)"
    assert "spec.abort is still true" in actions.suspend(current(suspend=True, abort=True), "s", "t", False).message
    abort = actions.abort(current(), "shop", "tone")
    assert abort.patch == {"abort": True}
    assert "champion prompt stays" in abort.message
    assert actions.abort(current(abort=True), "shop", "tone").patch is None


# the command line without a cluster ----------------------------------------------------------------------

EXPERIMENT = """\
apiVersion: canopy.genaiops.io/v1alpha1
kind: PromptExperiment
metadata: {name: tone, namespace: shop}
spec:
  challenger: {prompt: "Summarize in two sentences:"}
"""
VALUES = """\
LLAMA_STACK_URL: "http://llama-stack:8321"
summarize:
  enabled: true
  model: llama32
  prompt: |
    Summarize the following text:
"""


def test_preview_is_canopy_operator_preview(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "e.yaml").write_text(EXPERIMENT, encoding="utf-8")
    (tmp_path / "v.yaml").write_text(VALUES, encoding="utf-8")
    args = ["-f", str(tmp_path / "e.yaml"), "--values", str(tmp_path / "v.yaml"), "--step", "start"]
    assert preview_main(args) == 0
    expected = capsys.readouterr().out
    assert cli.main(["preview", *args]) == 0
    assert capsys.readouterr().out == expected
    assert "Summarize in two sentences:" in expected
    assert cli.main(["preview", "-f", str(tmp_path / "missing.yaml"), "--values", "x", "--step", "start"]) == 2


def test_flags_go_before_or_after_the_verb() -> None:
    parser = cli.build_parser()
    early = parser.parse_args(["-n", "shop", "--context", "kind", "get", "tone"])
    late = parser.parse_args(["get", "tone", "-n", "shop", "--context", "kind"])
    assert (
        (early.namespace, early.context, early.name)
        == (late.namespace, late.context, late.name)
        == (
            "shop",
            "kind",
            "tone",
        )
    )
    assert parser.parse_args(["results", "tone", "-o", "json", "--run", "j"]).output == "json"
    assert parser.parse_args(["plot", "tone", "-o", "x.png", "--terminal"]).terminal
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["results", "tone", "-o", "yaml"])
    assert exc.value.code == 2


def test_an_unusable_kubeconfig_is_one_line_and_exit_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    missing = tmp_path / "nope.yaml"
    assert cli.main(["get", "tone", "-n", "shop", "--kubeconfig", str(missing)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("kubectl pexp: cannot load the kubeconfig")
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("module", sorted(p.name for p in PEXP.glob("*.py") if p.name not in {"cli.py", "__init__.py"}))
def test_the_pure_modules_do_no_io(module: str) -> None:
    imports = _imports(PEXP / module)
    io = {"os", "sys", "subprocess", "socket", "asyncio", "pathlib", "io", "kubernetes_asyncio", "aiohttp", "httpx"}
    assert not {name.split(".")[0] for name in imports} & io
    ours = {name for name in imports if name.startswith("canopy_operator")}
    assert all(
        name.startswith(("canopy_operator.pexp", "canopy_operator.api", "canopy_operator.core")) for name in ours
    )
