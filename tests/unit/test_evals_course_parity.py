"""The runner scores suites in the course's format exactly as the course pipeline does, case by case.

The suites (tests/fixtures/suites/course_parity) were written for this project. ``golden.yaml`` holds the
expected values worked out by hand; an independent reference of the course's rules
(tests/support/course_reference.py) must agree with it, and so must the runner, in-process and through
``canopy-operator eval --answers`` (offline re-scoring, no backend).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from canopy_operator.evals import cli
from canopy_operator.evals.judge import JudgeUnavailable
from canopy_operator.evals.runner import RunConfig, SavedAnswers, build_summary, case_record, run_suites
from canopy_operator.evals.suites import load_suites, parse_suite
from tests.support.course_reference import score_folder

FOLDER = Path(__file__).resolve().parents[1] / "fixtures" / "suites" / "course_parity"
ANSWERS = json.loads((FOLDER / "answers.json").read_text(encoding="utf-8"))
GOLDEN = yaml.safe_load((FOLDER / "golden.yaml").read_text(encoding="utf-8"))
REPLIES: dict[str, str] = ANSWERS["judge_replies"]


def scripted_reply(content: str) -> str:
    """The judge's reply for a grading request: looked up by the answer it grades."""
    for answer in sorted(REPLIES, key=len, reverse=True):
        if f"Generated: {answer}\n" in content:
            return REPLIES[answer]
    raise AssertionError(f"no scripted reply for {content!r}")


class ScriptedJudge:
    """Grades by the table in answers.json; every pairwise request prefers answer 1."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.prompts: list[str] = []
        self.fail_on = fail_on

    async def complete(self, messages: list[dict[str, str]], *, model: str) -> str:
        content = messages[0]["content"]
        self.prompts.append(content)
        if self.fail_on is not None and self.fail_on in content and "[Answer 1]" not in content:
            raise JudgeUnavailable("judge unavailable after 4 attempts: HTTP 503")
        if "[Answer 1]" in content:
            return "Reasoning.\nBetter: 1"
        return scripted_reply(content)


def saved() -> SavedAnswers:
    return SavedAnswers(
        {c["index"]: (c["prompt"], c["champion_answer"], c["challenger_answer"]) for c in ANSWERS["cases"]}
    )


def golden_cases() -> dict[int, list[Any]]:
    return {int(k): v for k, v in GOLDEN["cases"].items()}


def test_the_reference_agrees_with_the_golden_table() -> None:
    answers = {c["index"]: (c["champion_answer"], c["challenger_answer"]) for c in ANSWERS["cases"]}
    reference = score_folder(FOLDER, answers, scripted_reply)
    assert reference["cases"] == golden_cases()
    assert reference["suites"] == GOLDEN["suites"]


def _row(record: dict[str, Any]) -> list[Any]:
    champion, challenger = record["champion"], record["challenger"]
    return [
        record["unreviewed"],
        champion["subset_of"],
        champion["llm_as_judge"],
        challenger["subset_of"],
        challenger["llm_as_judge"],
    ]


async def test_the_runner_scores_every_case_as_the_course_does() -> None:
    suites = load_suites(FOLDER)
    assert [s.name for s in suites] == ["numeric_tests", "parity_tests"]
    assert all(not s.errors for s in suites)
    state = await run_suites(suites, saved(), ScriptedJudge(), RunConfig(concurrency=3))
    rows = {r.index: _row(case_record(r)) for r in state.results}
    assert rows == golden_cases()
    summary = build_summary(state, RunConfig(), [], 1.0, suites)
    by_name = {s["name"]: s for s in summary["suites"]}
    for name, expected in GOLDEN["suites"].items():
        got = by_name[name]
        assert (got["cases"], got["unreviewed"]) == (expected["cases"], expected["unreviewed"])
        for side in ("champion", "challenger"):
            assert got[side]["subset_of"] == expected[side]["subset_of"]
            assert got[side]["subset_of_reviewed"] == expected[side]["subset_of_reviewed"]
            assert got[side]["llm_as_judge"]["categorical_count"] == expected[side]["llm_as_judge"]["categorical_count"]
    assert summary["unreviewed"] == 2
    assert summary["errors"] == 0
    assert summary["scored"] == 14


async def test_the_template_is_filled_with_str_format() -> None:
    suite = load_suites(FOLDER)[1]
    judge = ScriptedJudge()
    await run_suites([suite], saved_for(suite), judge, RunConfig(concurrency=1))
    template = (FOLDER / "judge_prompt.txt").read_text(encoding="utf-8")
    braces_case = suite.tests[9]
    expected = template.format(
        input_query=braces_case.prompt, expected_answer="{not}", generated_answer="Keep {not} as is."
    )
    assert expected in judge.prompts
    assert '{"grade": "A"}' in expected
    assert "{input_query} are {not}" in expected


def saved_for(suite: Any) -> SavedAnswers:
    """The saved answers re-indexed for a run of ``suite`` alone."""
    by_prompt = {c["prompt"]: c for c in ANSWERS["cases"]}
    return SavedAnswers(
        {
            i: (case.prompt, by_prompt[case.prompt]["champion_answer"], by_prompt[case.prompt]["challenger_answer"])
            for i, case in enumerate(suite.tests)
        }
    )


async def test_unreviewed_cases_skip_the_course_judge_when_asked_but_not_the_pairwise_one() -> None:
    suite = load_suites(FOLDER)[1]
    state = await run_suites([suite], saved_for(suite), ScriptedJudge(), RunConfig(judge_unreviewed=False))
    unreviewed = [r for r in state.results if r.unreviewed]
    assert [r.prompt for r in unreviewed] == ["Nobody reviewed this thumbs-down yet.", "Blank expected result."]
    for result in unreviewed:
        assert "llm_as_judge" not in result.scores["champion"]
        assert result.scores["champion"]["subset_of"] in (0.0, 1.0)
        assert result.scores["pairwise"]["winner"] in ("champion", "challenger")
    summary = build_summary(state, RunConfig(), [], 1.0, [suite])
    reviewed = summary["suites"][0]["champion"]["subset_of_reviewed"]
    assert reviewed == {"accuracy": 4 / 9, "num_correct": 4.0, "num_total": 9}


async def test_a_judge_failure_keeps_what_the_other_scorers_gave() -> None:
    suite = load_suites(FOLDER)[1]
    judge = ScriptedJudge(fail_on="Generated: Revenue rose 4% in Q3")
    state = await run_suites([suite], saved_for(suite), judge, RunConfig(concurrency=1))
    first = state.results[0]
    assert first.scores["champion"]["subset_of"] == 0.0
    assert "llm_as_judge" not in first.scores["champion"]
    assert first.scores["challenger"]["llm_as_judge"]["score"] == "C"
    assert "JudgeUnavailable" in first.scorer_errors["champion.llm_as_judge"]
    record = case_record(first)
    assert record["error"] is not None
    assert "champion.llm_as_judge" in record["error"]
    summary = build_summary(state, RunConfig(), [], 1.0, [suite])
    assert summary["errors"] == 1
    assert summary["scored"] == 11


def test_offline_rescoring_needs_no_backend_and_no_judge(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    summary_path = tmp_path / "summary.json"
    output = tmp_path / "results.json"
    code = cli.main(
        [
            "--suite",
            str(FOLDER),
            "--answers",
            str(FOLDER / "answers.json"),
            "--summary",
            str(summary_path),
            "--output",
            str(output),
        ]
    )
    assert code == cli.EXIT_OK
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    by_name = {s["name"]: s for s in summary["suites"]}
    for name, expected in GOLDEN["suites"].items():
        for side in ("champion", "challenger"):
            assert by_name[name][side]["subset_of"] == expected[side]["subset_of"]
            assert "llm_as_judge" not in by_name[name][side]
    assert summary["warnings"][0].startswith("no --judge-endpoint")
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["done"] for line in lines] == list(range(1, 15))
    assert {line["total"] for line in lines} == {14}
    assert all(line["event"] == "evaluation_case" and "prompt" not in line["case"] for line in lines)
    # the re-scored output can itself be re-scored
    again = cli.main(["--suite", str(FOLDER), "--answers", str(output), "--summary", str(tmp_path / "s2.json")])
    assert again == cli.EXIT_OK
    assert json.loads((tmp_path / "s2.json").read_text(encoding="utf-8"))["suites"] == summary["suites"]


def test_answers_for_another_input_are_refused_case_by_case(tmp_path: Path) -> None:
    document = json.loads((FOLDER / "answers.json").read_text(encoding="utf-8"))
    document["cases"][0]["prompt"] = "a different input"
    answers = tmp_path / "answers.json"
    answers.write_text(json.dumps(document), encoding="utf-8")
    summary_path = tmp_path / "summary.json"
    assert cli.main(["--suite", str(FOLDER), "--answers", str(answers), "--summary", str(summary_path)]) == 0
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    assert summary["errors"] == 1
    assert "another input" in summary["error_samples"][0]


SUITE_HEAD = "name: s\nendpoint: /summarize\ntests:\n- prompt: p\n  expected_result: e\nscoring_params:\n"


@pytest.mark.parametrize(
    ("scoring", "error"),
    [
        ("  llm-as-judge::base:\n    prompt_template: missing.txt\n", "'missing.txt' is not beside the suite"),
        ("  llm-as-judge::base:\n    prompt_template: 'Grade {answer}'\n", "placeholder {answer}"),
        ("  llm-as-judge::base:\n    prompt_template: 'Grade {}'\n", "placeholder {}"),
        ("  llm-as-judge::base:\n    prompt_template: 'Grade {input_query'\n", "not a str.format template"),
        (
            "  llm-as-judge::base:\n    prompt_template: '{input_query.__class__}'\n",
            "reaches a private attribute",
        ),
        ("  llm-as-judge::base:\n    prompt_template: '{input_query:>999999999}'\n", "too wide"),
        (
            "  llm-as-judge::base:\n    prompt_template: 'x {input_query}'\n"
            "    judge_score_regexes: ['Answer: [A-E]']\n",
            "has no group",
        ),
        ("  llm-as-judge::base:\n    prompt_template: 'x'\n    aggregation_functions: [mode]\n", "unknown aggregation"),
        ("  basic::regex_parser: null\n", "unknown scorer 'basic::regex_parser'"),
    ],
)
def test_a_scorer_that_cannot_run_is_a_named_error_and_the_rest_still_runs(
    tmp_path: Path, scoring: str, error: str
) -> None:
    text = SUITE_HEAD + scoring + "  basic::subset_of: null\n"
    suite = parse_suite(text, base_dir=tmp_path, source="s_tests.yaml")
    assert len(suite.errors) == 1, suite.errors
    assert error in suite.errors[0]
    assert suite.subset_of
    if "llm-as-judge" in scoring:
        assert suite.judge is None


def test_a_template_file_that_cannot_be_read_is_named(tmp_path: Path) -> None:
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe not utf-8")
    text = SUITE_HEAD + "  llm-as-judge::base:\n    prompt_template: bad.txt\n"
    suite = parse_suite(text, base_dir=tmp_path, source="s_tests.yaml")
    assert suite.judge is None
    assert "'bad.txt' cannot be read: UnicodeDecodeError" in suite.errors[0]


async def test_a_suite_split_in_parts_is_aggregated_once() -> None:
    suites = load_suites(FOLDER)
    parity = suites[1]
    half = len(parity.tests) // 2
    parts = [
        dataclasses.replace(parity, tests=parity.tests[:half]),
        dataclasses.replace(parity, tests=parity.tests[half:]),
    ]
    whole = await run_suites([parity], saved_for(parity), ScriptedJudge(), RunConfig(concurrency=1))
    split = await run_suites(parts, saved_for(parity), ScriptedJudge(), RunConfig(concurrency=1))
    assert (
        build_summary(split, RunConfig(), [], 1.0, parts)["suites"]
        == build_summary(whole, RunConfig(), [], 1.0, [parity])["suites"]
    )
