"""The runner in-process: many cases, failure isolation, the summary's size, and the CLI's error paths."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from canopy_devkit.simulator import free_port
from canopy_operator.core.evaluation.results import parse_job_result, parse_runner_error, parse_summary
from canopy_operator.core.export import render_export
from canopy_operator.evals import cli
from canopy_operator.evals.judge import JudgeUnavailable
from canopy_operator.evals.runner import (
    SUMMARY_LIMIT,
    BackendAnswers,
    RunConfig,
    build_summary,
    case_record,
    plan_cases,
    render_summary,
    run_suites,
)
from canopy_operator.evals.suites import parse_suite
from canopy_operator.sources.canopy.errors import BackendHTTPError, BackendUnreachable
from canopy_operator.sources.canopy.models import AbAnswers
from tests.support.fake_judge import pairwise_answers


class StubBackend:
    """Answers ``champion:<p>`` / ``challenger:<p>``, shuffling sides; fails prompts containing ``down``."""

    def __init__(self, *, challenger: bool = True) -> None:
        self.challenger = challenger
        self.calls = 0

    async def summarize(self, prompt: str) -> str:
        self.calls += 1
        return f"champion:{prompt}"

    async def summarize_ab(self, prompt: str) -> AbAnswers:
        self.calls += 1
        if not self.challenger:
            raise BackendHTTPError("POST /summarize/ab", 400, "prompt_b is not configured in summarize config")
        if "down" in prompt:
            raise BackendUnreachable("POST /summarize/ab", "connection reset " + "x" * 500)
        if self.calls % 2:
            return AbAnswers({"a": "prompt", "b": "prompt_b"}, f"champion:{prompt}", f"challenger:{prompt}")
        return AbAnswers({"a": "prompt_b", "b": "prompt"}, f"challenger:{prompt}", f"champion:{prompt}")


class StubJudge:
    """Prefers the challenger; fails for prompts containing ``judge-fails`` with a very long message."""

    def __init__(self) -> None:
        self.calls = 0

    async def complete(self, messages: list[dict[str, str]], *, model: str) -> str:
        self.calls += 1
        content = messages[0]["content"]
        if "judge-fails" in content:
            raise JudgeUnavailable("judge unavailable after 4 attempts: HTTP 503: " + "ü" * 3000)
        first, _ = pairwise_answers(content)
        return "Better: 1" if first.startswith("challenger:") else "Better: 2"


def _suite(prompts: list[str]) -> str:
    return render_export(prompts)


async def test_ten_thousand_cases_with_failures_fit_a_termination_message() -> None:
    prompts = []
    for i in range(10_000):
        prompts.append(f"case {i} " + ("down" if i % 7 == 0 else "judge-fails" if i % 11 == 0 else "ok"))
    header = _suite([]).removesuffix("tests: []\n")
    # Same document as render_export would write, built without the slow pure-Python YAML emitter.
    suite = parse_suite(
        header + "tests:\n" + "".join(f"- prompt: {json.dumps(p)}\n  expected_result: ''\n" for p in prompts)
    )
    assert len(suite.tests) == 10_000
    config = RunConfig(threshold=0.9, seed=1, concurrency=8)
    state = await run_suites([suite], BackendAnswers(StubBackend()), StubJudge(), config)
    summary = build_summary(state, config, ["w" * 5000] * 50, duration=12.0)
    text = render_summary(summary)

    assert len(text.encode("utf-8")) < SUMMARY_LIMIT
    parsed = parse_summary(text)
    assert parsed is not None
    failed = sum(1 for i in range(10_000) if i % 7 == 0 or i % 11 == 0)
    unanswered = sum(1 for i in range(10_000) if i % 7 == 0)
    assert (parsed.cases, parsed.errors, parsed.scored) == (10_000, failed, 10_000 - unanswered)
    assert parsed.challenger_better_rate == 1.0
    assert parsed.passed is True
    assert json.loads(text)["error_samples"][0].startswith("case 0: backend: POST /summarize/ab: connection reset")


def test_render_summary_drops_samples_before_numbers() -> None:
    summary = {"v": 1, "cases": 3, "scored": 1, "errors": 2, "challenger_better_rate": 0.5, "passed": True}
    big = {**summary, "error_samples": ["e" * 1000] * 5, "warnings": ["w" * 1000] * 5, "scorers": {}}
    text = render_summary(big, limit=1500)
    assert len(text) < 1500
    assert json.loads(text)["warnings"] == []
    assert {k: json.loads(text)[k] for k in summary} == summary
    tiny = render_summary(big, limit=100)
    assert json.loads(tiny) == summary


async def test_failures_stay_with_their_case() -> None:
    suite = parse_suite(_suite(["first ok", "second down", "third judge-fails", "fourth ok"]))
    state = await run_suites([suite], BackendAnswers(StubBackend()), StubJudge(), RunConfig(concurrency=2))
    errors = [r.error for r in state.results]
    assert errors[0] is None
    assert errors[3] is None
    assert errors[1] is not None
    assert errors[1].startswith("backend: POST /summarize/ab: connection reset")
    assert errors[2] is None  # the judge failed, the case keeps its subset_of values
    third = state.results[2]
    assert third.scorer_errors["pairwise"].startswith("JudgeUnavailable: judge unavailable after 4 attempts")
    assert third.scores["champion"] == {"subset_of": 1.0}
    record = case_record(third)
    assert record["error"].startswith("pairwise: JudgeUnavailable")
    assert len(record["error"]) <= 300


async def test_auto_mode_falls_back_to_summarize_once_without_challenger() -> None:
    backend = StubBackend(challenger=False)
    suite = parse_suite(_suite([f"p{i}" for i in range(5)]))
    state = await run_suites([suite], BackendAnswers(backend), StubJudge(), RunConfig(concurrency=4))
    assert state.mode == "single"
    assert [r.champion_answer for r in state.results] == [f"champion:p{i}" for i in range(5)]
    assert backend.calls == 6  # one refused A/B call, then /summarize for each case


async def test_ab_mode_never_falls_back() -> None:
    suite = parse_suite(_suite(["p0", "p1"]))
    state = await run_suites([suite], BackendAnswers(StubBackend(challenger=False), "ab"), None, RunConfig(mode="ab"))
    assert all(r.error is not None and "400" in r.error for r in state.results)


def test_positions_are_reproducible_for_a_seed_and_balanced() -> None:
    suite = parse_suite(_suite([f"p{i}" for i in range(400)]))
    first = [r.challenger_first for _, _, r in plan_cases([suite], seed=9)]
    assert first == [r.challenger_first for _, _, r in plan_cases([suite], seed=9)]
    assert first != [r.challenger_first for _, _, r in plan_cases([suite], seed=10)]
    assert 160 < sum(first) < 240


# ---- the CLI's own failures (in-process: no backend needed) -----------------------------------------------


def _main(tmp_path: Path, *args: str) -> tuple[int, str]:
    summary = tmp_path / "summary.json"
    code = cli.main([*args, "--summary", str(summary), "--timeout", "5"])
    return code, summary.read_text(encoding="utf-8") if summary.exists() else ""


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("name: x\nendpoint: /information-search\ntests: []\n", "endpoint '/information-search' is not supported"),
        ("name: x\ntests:\n- expected_result: y\n", "tests[0]: 'prompt' must be a string"),
        ("- just\n- a list\n", "a suite must be a YAML mapping"),
        ("name: x\nscoring_params: [1]\ntests: []\n", "'scoring_params' must be a mapping"),
    ],
)
def test_unusable_suite_exits_2_with_the_reason_in_the_summary(tmp_path: Path, content: str, problem: str) -> None:
    dataset = tmp_path / "x_tests.yaml"
    dataset.write_text(content, encoding="utf-8")
    code, text = _main(tmp_path, "--dataset", str(dataset), "--backend", "http://127.0.0.1:9")
    assert code == 2
    error = parse_runner_error(text)
    assert error is not None
    assert problem in error


@pytest.mark.parametrize(
    "args",
    [
        ["--threshold", "1.5"],
        ["--judge-api-key-env", "CANOPY_TEST_UNSET_VARIABLE"],
        ["--judge-api-key-file", "/nonexistent/key"],
    ],
)
def test_bad_arguments_exit_2(tmp_path: Path, args: list[str]) -> None:
    dataset = tmp_path / "dataset.yaml"
    dataset.write_text(_suite(["p"]), encoding="utf-8")
    code, text = _main(tmp_path, "--dataset", str(dataset), "--backend", "http://127.0.0.1:9", *args)
    assert code == 2
    assert parse_runner_error(text)


def test_usage_error_returns_2_instead_of_exiting(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--backend", "http://x"]) == 2
    assert "one of the arguments --dataset --suite is required" in capsys.readouterr().err


def test_suite_option_needs_a_folder(tmp_path: Path) -> None:
    file = tmp_path / "a_tests.yaml"
    file.write_text(_suite(["p"]), encoding="utf-8")
    code, text = _main(tmp_path, "--suite", str(file), "--backend", "http://127.0.0.1:9")
    assert code == 2
    assert "is not a folder" in (parse_runner_error(text) or "")


def test_backend_down_fails_every_case_and_exits_1(tmp_path: Path) -> None:
    dataset = tmp_path / "dataset.yaml"
    dataset.write_text(_suite(["p1", "p2"]), encoding="utf-8")
    code, text = _main(tmp_path, "--dataset", str(dataset), "--backend", f"http://127.0.0.1:{free_port()}")
    assert code == 1
    summary = json.loads(text)
    assert (summary["cases"], summary["errors"], summary["scored"]) == (2, 2, 0)
    assert all("POST /summarize/ab" in sample for sample in summary["error_samples"])
    failed_job = {"status": {"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]}}
    assert "0/2 cases scored, 2 errors" in parse_job_result(failed_job, text).message


def test_past_the_deadline_no_case_starts(tmp_path: Path) -> None:
    dataset = tmp_path / "dataset.yaml"
    dataset.write_text(_suite(["p1", "p2", "p3"]), encoding="utf-8")
    code, text = _main(tmp_path, "--dataset", str(dataset), "--backend", "http://127.0.0.1:9", "--deadline", "0")
    assert code == 1
    summary = json.loads(text)
    assert summary["errors"] == 3
    assert summary["error_samples"][0] == "case 0: not run: deadline of 0s reached"
