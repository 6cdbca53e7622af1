"""The evaluation runner end to end, as the Job runs it: ``python -m canopy_operator.evals.cli`` in a child
process against the backend simulator (a child process on 127.0.0.1) and a fake judge on loopback."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from canopy_devkit.simulator import free_port
from canopy_devkit.simulator.app import answer_chunks
from canopy_operator.core.evaluation.results import parse_runner_error
from canopy_operator.core.export import render_export
from canopy_operator.evals.runner import plan_cases
from canopy_operator.evals.suites import load_suites
from tests.support.fake_judge import FakeJudge, pairwise_answers

SUITE_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "suites" / "summarize"
CHAMPION = "Summarize the following text in a clear and detailed manner:"
CHALLENGER = "Provide a brief, concise summary:"
CONFIG = f"""\
LLAMA_STACK_URL: http://llamastack:8321
summarize:
  enabled: true
  model: llama32
  prompt: "{CHAMPION}"
  prompt_b: "{CHALLENGER}"
feedback:
  enabled: true
ab_testing:
  enabled: true
"""
CONFIG_NO_CHALLENGER = CONFIG.replace(f'  prompt_b: "{CHALLENGER}"\n', "")
PROMPTS = [
    "The Rhine carries barges from Switzerland to Rotterdam.",
    "Quarterly revenue rose 4% while costs fell.",
    "A recipe: mix flour, water and salt; rest the dough overnight.",
    "Release notes: the login page no longer times out.",
    "Meeting minutes: the team agreed to ship on Friday.",
    "Ünïcode: naïve café — a short text to summarise.",
]


def answer(system_prompt: str, text: str) -> str:
    """What the simulated backend answers for this prompt and input."""
    return "".join(answer_chunks(system_prompt, text))


def _wait_ready(process: subprocess.Popen[str], timeout: float = 20.0) -> None:
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 0.2)
        if ready and process.stdout.readline().startswith("canopy simulator listening on "):
            return
        if process.poll() is not None:
            raise RuntimeError(f"simulator exited with {process.returncode}")
    raise TimeoutError("simulator did not start")


@pytest.fixture(scope="module")
def simulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], str]]:
    """Start ``python -m canopy_devkit.simulator`` with a config (once per config); returns its URL."""
    processes: list[subprocess.Popen[str]] = []
    urls: dict[str, str] = {}
    tmp_path = tmp_path_factory.mktemp("simulator")

    def start(config: str) -> str:
        if config in urls:
            return urls[config]
        path = tmp_path / f"canopy-config-{len(processes)}.yaml"
        path.write_text(config, encoding="utf-8")
        port = free_port()
        args = ["--config", str(path), "--host", "127.0.0.1", "--port", str(port), "--seed", "5"]
        process = subprocess.Popen(
            [sys.executable, "-m", "canopy_devkit.simulator", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        processes.append(process)
        _wait_ready(process)
        urls[config] = f"http://127.0.0.1:{port}"
        return urls[config]

    yield start
    for process in processes:
        process.terminate()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


class Run:
    """One finished runner process."""

    def __init__(self, completed: subprocess.CompletedProcess[str], summary_path: Path, output_path: Path) -> None:
        self.returncode = completed.returncode
        self.stderr = completed.stderr
        self.stdout = completed.stdout
        self.summary_text = summary_path.read_text(encoding="utf-8") if summary_path.exists() else ""
        self.summary: dict[str, Any] = json.loads(self.summary_text) if self.summary_text else {}
        self.results: dict[str, Any] = (
            json.loads(output_path.read_text(encoding="utf-8")) if output_path.exists() else {}
        )

    @property
    def cases(self) -> list[dict[str, Any]]:
        return list(self.results["cases"])


def run_eval(tmp_path: Path, *args: str, env: dict[str, str] | None = None, judge: FakeJudge | None = None) -> Run:
    summary, output = tmp_path / "summary.json", tmp_path / "results.json"
    for stale in (summary, output):
        stale.unlink(missing_ok=True)
    argv = [*args, "--summary", str(summary), "--output", str(output), "--timeout", "10"]
    if judge is not None:
        argv += ["--judge-endpoint", judge.url, "--judge-backoff", "0.01"]
    completed = subprocess.run(
        [sys.executable, "-m", "canopy_operator.evals.cli", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        check=False,
    )
    return Run(completed, summary, output)


def _dataset(tmp_path: Path, prompts: list[str]) -> Path:
    path = tmp_path / "dataset.yaml"
    path.write_text(render_export(prompts), encoding="utf-8")
    return path


def test_eval_on_the_backend_export_maps_shuffled_sides_back(simulator: Callable[[str], str], tmp_path: Path) -> None:
    backend = simulator(CONFIG)
    with httpx.Client(base_url=backend, timeout=10) as client:
        for index, prompt in enumerate(PROMPTS):
            rating = "thumbs_down" if index != 1 else "thumbs_up"
            body = {"input_text": prompt, "response_text": "old answer", "rating": rating}
            client.post("/feedback", json=body).raise_for_status()
        export = client.get("/feedback/export")
    dataset = tmp_path / "feedback-eval-dataset.yaml"
    dataset.write_text(export.text, encoding="utf-8")
    negatives = [p for i, p in enumerate(PROMPTS) if i != 1]
    with FakeJudge(preferred=frozenset(answer(CHALLENGER, p) for p in negatives)) as judge:
        run = run_eval(tmp_path, "--dataset", str(dataset), "--backend", backend, "--seed", "11", judge=judge)
        requests = list(judge.requests)

    assert run.returncode == 0, run.stderr
    summary = run.summary
    assert (summary["cases"], summary["scored"], summary["errors"], summary["mode"]) == (5, 5, 0, "ab")
    assert summary["challenger_better_rate"] == 1.0
    assert summary["passed"] is True
    assert [case["prompt"] for case in run.cases] == negatives
    for case in run.cases:
        assert case["champion_answer"] == answer(CHAMPION, case["prompt"])
        assert case["challenger_answer"] == answer(CHALLENGER, case["prompt"])
    positions = [case["scores"]["pairwise"]["challenger_position"] for case in run.cases]
    assert positions == [1 if case["challenger_first"] else 2 for case in run.cases]
    assert set(positions) == {1, 2}  # seed 11 shows the challenger on both sides
    assert summary["pairwise"]["challenger_first"] == positions.count(1)
    # Only the pairwise judge runs on negatives (no expected answers), with the export's judge model.
    assert len(requests) == 5
    assert {r.model for r in requests} == {"llama32"}
    for case in run.cases:
        request = next(r for r in requests if case["prompt"] in r.content)
        shown = pairwise_answers(request.content)
        position = case["scores"]["pairwise"]["challenger_position"]
        assert shown[position - 1] == case["challenger_answer"]
        assert shown[2 - position] == case["champion_answer"]
    # The export names judge_prompt.txt, which is not beside this file: llm-as-judge::base is named as not run.
    assert len(summary["scorer_errors"]) == 1
    assert summary["unreviewed"] == 5
    assert (
        "llm-as-judge::base: prompt_template 'judge_prompt.txt' is not beside the suite" in summary["scorer_errors"][0]
    )


def test_eval_rate_below_threshold_does_not_pass_and_positions_follow_the_seed(
    simulator: Callable[[str], str], tmp_path: Path
) -> None:
    backend = simulator(CONFIG)
    dataset = _dataset(tmp_path, PROMPTS)
    preferred = {answer(CHALLENGER, p) for p in PROMPTS[:2]} | {answer(CHAMPION, p) for p in PROMPTS[2:]}
    args = ("--dataset", str(dataset), "--backend", backend, "--threshold", "0.5", "--concurrency", "3")
    with FakeJudge(preferred=frozenset(preferred)) as judge:
        run = run_eval(tmp_path, *args, "--seed", "3", judge=judge)

    assert run.returncode == 0, run.stderr
    assert run.summary["challenger_better_rate"] == pytest.approx(2 / 6, abs=1e-4)
    assert run.summary["passed"] is False
    pairwise = run.summary["pairwise"]
    assert (pairwise["challenger"], pairwise["champion"], pairwise["tie"]) == (2, 4, 0)
    planned = [result.challenger_first for _, _, result in plan_cases(load_suites(dataset), seed=3)]
    assert [case["challenger_first"] for case in run.cases] == planned


def test_eval_runs_every_suite_of_a_course_folder_with_its_judge_template(
    simulator: Callable[[str], str], tmp_path: Path
) -> None:
    backend = simulator(CONFIG)
    with FakeJudge(marker="never-present") as judge:
        run = run_eval(
            tmp_path, "--suite", str(SUITE_DIR), "--backend", backend, "--judge-model", "judge-x", judge=judge
        )
        requests = list(judge.requests)

    assert run.returncode == 0, run.stderr
    summary = run.summary
    assert (summary["cases"], summary["errors"]) == (5, 0)  # 3 + 2 cases; notes.yaml is not a suite
    assert [s["name"] for s in run.results["suites"]] == ["summarize_edge_tests", "summarize_quality_tests"]
    edge, quality = summary["suites"]
    assert (edge["name"], edge["cases"], edge["unreviewed"]) == ("summarize_edge_tests", 2, 2)
    assert edge["champion"]["subset_of"] == {"accuracy": 1.0, "num_correct": 2.0, "num_total": 2}
    assert edge["champion"]["subset_of_reviewed"] == {"accuracy": None, "num_correct": 0, "num_total": 0}
    for side in ("champion", "challenger"):
        assert quality[side]["llm_as_judge"]["categorical_count"] == {"C": 3}
        assert quality[side]["subset_of"]["num_total"] == 3
    assert summary["pairwise"]["tie"] == 5
    assert summary["challenger_better_rate"] == 0.0
    never = next(c for c in run.cases if c["expected_result"].startswith("zzz"))
    assert never["scores"]["champion"]["subset_of"] == 0.0

    graded = [r for r in requests if r.content.startswith("COURSE JUDGE TEMPLATE v1")]
    assert len(graded) == 6  # 3 cases with an expected answer x 2 sides
    assert {r.model for r in requests} == {"judge-x"}
    danube = next(r for r in graded if "The Danube flows through ten countries, more" in r.content)
    assert "[Expert]: The Danube flows through ten countries and ends in the Black Sea." in danube.content
    assert "{generated_answer}" not in danube.content
    braces = next(r for r in graded if "Braces {like" in r.content)
    assert "[Question]: Braces {like these} and {input_query} must reach the backend untouched." in braces.content


def test_eval_case_whose_judge_always_fails_is_reported_and_the_run_finishes(
    simulator: Callable[[str], str], tmp_path: Path
) -> None:
    backend = simulator(CONFIG)
    dataset = _dataset(tmp_path, PROMPTS)
    with FakeJudge(fail_when="Release notes: the login page") as judge:
        run = run_eval(tmp_path, "--dataset", str(dataset), "--backend", backend, "--judge-attempts", "3", judge=judge)
        statuses = judge.statuses()

    assert run.returncode == 0, run.stderr
    assert (run.summary["cases"], run.summary["scored"], run.summary["errors"]) == (6, 6, 1)
    failed = run.cases[3]
    assert failed["error"] is None  # the case was answered; only its judge failed
    problem = failed["scorer_errors"]["pairwise"]
    assert problem.startswith("JudgeUnavailable: judge unavailable after 3 attempts: HTTP 500")
    assert failed["challenger_answer"] == answer(CHALLENGER, PROMPTS[3])  # the answers are still kept
    assert failed["scores"]["champion"] == {"subset_of": 1.0}  # and what subset_of gave
    assert run.summary["error_samples"] == [f"case 3: pairwise: {problem}"]
    assert statuses.count(500) == 3
    assert len(statuses) == 6 + 2


def test_eval_retries_judge_server_errors_with_backoff(simulator: Callable[[str], str], tmp_path: Path) -> None:
    backend = simulator(CONFIG)
    dataset = _dataset(tmp_path, PROMPTS[:3])
    with FakeJudge(fail_first=2) as judge:
        run = run_eval(tmp_path, "--dataset", str(dataset), "--backend", backend, "--concurrency", "1", judge=judge)
        statuses = judge.statuses()

    assert run.returncode == 0, run.stderr
    assert (run.summary["scored"], run.summary["errors"]) == (3, 0)
    assert statuses == [500, 500, 200, 200, 200]


def test_eval_without_a_challenger_scores_the_champion_alone(simulator: Callable[[str], str], tmp_path: Path) -> None:
    backend = simulator(CONFIG_NO_CHALLENGER)
    with FakeJudge() as judge:
        run = run_eval(tmp_path, "--suite", str(SUITE_DIR), "--backend", backend, judge=judge)

    assert run.returncode == 0, run.stderr
    summary = run.summary
    assert (summary["mode"], summary["errors"]) == ("single", 0)
    assert summary["challenger_better_rate"] is None
    assert summary["passed"] is None
    quality = summary["suites"][1]
    assert quality["champion"]["llm_as_judge"]["categorical_count"] == {"C": 3}
    assert "challenger" not in quality
    assert all(case["challenger_answer"] is None for case in run.cases)
    assert all(case["champion_answer"] == answer(CHAMPION, case["prompt"]) for case in run.cases)
    assert any("no challenger served" in w for w in summary["warnings"])


def test_eval_with_an_unusable_dataset_exits_2_and_says_why(tmp_path: Path) -> None:
    dataset = tmp_path / "broken_tests.yaml"
    dataset.write_text("name: [unclosed\n", encoding="utf-8")
    run = run_eval(tmp_path, "--dataset", str(dataset), "--backend", "http://127.0.0.1:9")

    assert run.returncode == 2
    error = parse_runner_error(run.summary_text)
    assert error is not None
    assert "not valid YAML" in error


def test_eval_sends_the_judge_key_from_the_environment_and_never_prints_it(
    simulator: Callable[[str], str], tmp_path: Path
) -> None:
    backend = simulator(CONFIG)
    dataset = _dataset(tmp_path, PROMPTS[:2])
    key = "sk-test-4b1d9e"
    args = ("--dataset", str(dataset), "--backend", backend, "--judge-api-key-env", "JUDGE_KEY")
    with FakeJudge(api_key=key) as judge:
        good = run_eval(tmp_path, *args, env={"JUDGE_KEY": key}, judge=judge)
        good_auth = {r.authorization for r in judge.requests}
        bad = run_eval(tmp_path, *args, env={"JUDGE_KEY": "wrong"}, judge=judge)
        statuses = judge.statuses()

    assert good.returncode == 0, good.stderr
    assert good.summary["errors"] == 0
    assert good_auth == {f"Bearer {key}"}
    for text in (good.stdout, good.stderr, good.summary_text, json.dumps(good.results)):
        assert key not in text
    assert bad.summary["errors"] == 2
    assert "HTTP 401" in bad.summary["error_samples"][0]
    assert statuses[2:] == [401, 401]  # a refusal is not retried
