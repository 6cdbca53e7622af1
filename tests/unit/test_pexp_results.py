"""``kubectl pexp results``: reading an evaluation's per-case results, with every field treated as hostile."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from canopy_operator.api.status import EvaluationResults, EvaluationRun, PromptExperimentStatus
from canopy_operator.pexp import results

STARTED = datetime(2026, 1, 2, 9, 0, tzinfo=UTC)


def run(name: str, **extra: Any) -> dict[str, Any]:
    model = EvaluationRun(
        name=name,
        test_id="9c1e2f3a4b5c6d7e",
        trigger="gate",
        dataset_secret="tone-dataset-81d2aa07",
        cases=3,
        started_at=STARTED,
        state="Succeeded",
        scored=3,
        challenger_better_rate=2 / 3,
        passed=True,
    )
    return {**model.model_dump(mode="json", by_alias=True, exclude_none=True), **extra}


def status_with(*runs: dict[str, Any]) -> dict[str, Any]:
    body = PromptExperimentStatus(phase="Running").model_dump(mode="json", by_alias=True, exclude_none=True)
    body["evaluations"] = list(runs)
    return body


def case(i: int, winner: str | None = "challenger", **over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "i": i,
        "suite": "feedback_eval_tests",
        "input_sha256": f"{i:016x}",
        "unreviewed": i % 2 == 0,
        "champion": {"subset_of": 0.5, "llm_as_judge": "B", "judge_reason": "misses a point"},
        "challenger": {"subset_of": 1.0, "llm_as_judge": "A", "judge_reason": "covers all points"},
        "pairwise": {"winner": winner, "challenger_position": 1 + i % 2, "reason": "more complete"},
        "error": None,
    }
    body.update(over)
    return body


def jsonl(*cases: dict[str, Any]) -> bytes:
    return ("\n".join(json.dumps(c) for c in cases) + "\n").encode()


def test_the_newest_run_is_the_default_and_its_secrets_are_named_by_results() -> None:
    status = status_with(
        run("tone-eval-aaaa1111"),
        run(
            "tone-eval-bbbb2222",
            results={"secrets": ["tone-eval-bbbb2222-results-0", "tone-eval-bbbb2222-results-1"], "cases": 250},
        ),
    )
    ref = results.select_run(status, None)
    assert ref.name == "tone-eval-bbbb2222"
    assert ref.recorded
    assert ref.secrets == ("tone-eval-bbbb2222-results-0", "tone-eval-bbbb2222-results-1")
    assert (ref.declared_cases, ref.truncated, ref.state) == (250, None, "Succeeded")
    older = results.select_run(status, "tone-eval-aaaa1111")
    assert older.name == "tone-eval-aaaa1111"
    assert not older.recorded
    assert older.secrets == ()


def test_a_run_that_is_not_there_is_refused_naming_the_runs() -> None:
    with pytest.raises(results.NoRun, match=r"no evaluation run tone-eval-x .*tone-eval-aaaa1111"):
        results.select_run(status_with(run("tone-eval-aaaa1111")), "tone-eval-x")
    with pytest.raises(results.NoRun, match="no evaluation runs"):
        results.select_run(status_with(), None)
    with pytest.raises(results.NoRun, match="not a Job name"):
        results.select_run(status_with(run("../../etc")), None)


def test_only_the_runs_own_result_secrets_are_followed() -> None:
    ref = results.select_run(
        status_with(
            run(
                "tone-eval-aaaa1111",
                results={
                    "secrets": [
                        "judge-key",
                        "tone-eval-aaaa1111-results-0",
                        "tone-eval-aaaa1111-results-0",
                        "tone-eval-aaaa1111-results-x",
                        "other-eval-results-1",
                        42,
                        "tone-eval-aaaa1111-results-1",
                    ],
                    "cases": "many",
                    "truncated": True,
                },
            )
        ),
        None,
    )
    assert ref.secrets == ("tone-eval-aaaa1111-results-0", "tone-eval-aaaa1111-results-1")
    assert ref.declared_cases is None
    assert ref.truncated is True
    assert len(ref.notes) == 4
    assert "'judge-key'" in ref.notes[0]


def test_a_run_without_results_says_why() -> None:
    recorded = EvaluationResults(unavailable="the pod was gone before its log was read").model_dump(
        mode="json", by_alias=True, exclude_none=True
    )
    ref = results.select_run(status_with(run("tone-eval-aaaa1111", results=recorded)), None)
    assert ref.recorded
    assert ref.secrets == ()
    assert ref.unavailable == "the pod was gone before its log was read"
    assert ref.declared_cases == 0


def test_results_of_another_shape_fall_back_to_names() -> None:
    ref = results.select_run(status_with(run("tone-eval-aaaa1111", results=["x"])), None)
    assert not ref.recorded
    assert "not an object" in ref.notes[0]
    assert results.secret_name_for("tone-eval-aaaa1111", 3) == "tone-eval-aaaa1111-results-3"


def test_realistic_cases_parse_and_render_as_a_table() -> None:
    ref = results.select_run(
        status_with(run("tone-eval-aaaa1111", results={"secrets": ["tone-eval-aaaa1111-results-0"], "cases": 3})),
        None,
    )
    third = case(2, winner=None, error="judge timed out after 30s", challenger={"subset_of": None})
    parsed = results.finish(
        results.parse([("tone-eval-aaaa1111-results-0", jsonl(case(0), case(1, winner="tie"), third))])
    )
    assert [c.i for c in parsed.cases] == [0, 1, 2]
    assert parsed.cases[0].challenger.subset_of == 1.0
    assert parsed.cases[0].champion.llm_as_judge == "B"
    assert parsed.cases[1].winner == "tie"
    assert parsed.cases[2].winner is None
    assert parsed.notes == []
    lines = results.table(ref, parsed).splitlines()
    assert lines[0] == (
        "run tone-eval-aaaa1111 (Succeeded): 3 of 3 cases in 1 Secret; pairwise challenger 1, champion 0, tie 1"
    )
    assert lines[1].split() == ["#", "INPUT", "UNREVIEWED", "CHAMPION", "CHALLENGER", "PAIRWISE", "ERROR"]
    assert lines[2].split() == ["0", "0000000000000000", "yes", "0.50/B", "1.00/A", "challenger", "-"]
    assert lines[3].split() == ["1", "0000000000000001", "no", "0.50/B", "1.00/A", "tie", "-"]
    assert lines[4].split()[:6] == ["2", "0000000000000002", "yes", "0.50/B", "-/-", "-"]
    assert lines[4].endswith("judge timed out after 30s")


def test_json_output_is_the_cleaned_cases() -> None:
    ref = results.select_run(status_with(run("tone-eval-aaaa1111")), None)
    parsed = results.finish(results.parse([("s", jsonl(case(7, error="bad \x1b[2J input")))]))
    doc = json.loads(results.as_json(ref, parsed))
    assert doc["run"] == "tone-eval-aaaa1111"
    (only,) = doc["results"]
    assert only["i"] == 7
    assert only["pairwise"]["winner"] == "challenger"
    assert only["pairwise"]["challenger_position"] == 2
    assert only["champion"] == {"subset_of": 0.5, "llm_as_judge": "B", "judge_reason": "misses a point"}
    assert only["error"] == "bad ?[2J input"


def test_hostile_lines_are_skipped_or_shown_as_unknown_with_notes() -> None:
    lines = [
        b"not json at all",
        b"[1, 2, 3]",
        b"42",
        b'{"i": "zero", "input_sha256": "ZZZ", "unreviewed": "yes", "champion": [1], '
        b'"challenger": {"subset_of": "1.0", "llm_as_judge": {"x": 1}}, "pairwise": {"winner": "alien"}, '
        b'"error": {"code": 500}}',
        b'{"i": 3, "error": "\x1b]0;owned\x07\xff\xfe broken utf-8 \\u001b[2J"}',
        b"[" * 30000 + b"]" * 30000,
        b'{"i": 4}' + b" " * (results.MAX_LINE + 10),
        b"",
        b"   ",
    ]
    parsed = results.finish(results.parse([("tone-eval-aaaa1111-results-0", b"\n".join(lines))]))
    assert [c.i for c in parsed.cases] == [None, 3]
    odd = parsed.cases[0]
    assert odd.input_sha256 is None
    assert odd.unreviewed is None
    assert odd.winner is None
    assert odd.champion.subset_of is None
    assert odd.challenger.subset_of is None
    assert odd.challenger.llm_as_judge is None
    assert odd.error == '{"code": 500}'
    assert "\x1b" not in (parsed.cases[1].error or "")
    assert "\x07" not in (parsed.cases[1].error or "")
    assert "skipped 5 line(s)" in parsed.notes[0]
    assert "(line 1, 2, 3, 6, 7)" in parsed.notes[0]
    assert "7 field(s) had an unexpected shape" in parsed.notes[-1]
    ref = results.select_run(status_with(run("tone-eval-aaaa1111")), None)
    table = results.table(ref, parsed)
    assert "\x1b" not in table
    assert "\x07" not in table
    assert table.splitlines()[2].split()[:6] == ["?", "-", "-", "-/-", "-/-", "-"]


def test_the_number_of_cases_and_notes_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(results, "MAX_CASES", 5)
    many = jsonl(*(case(i) for i in range(12)))
    secrets = [(f"s-{k}", b"garbage\n" + many) for k in range(30)]
    parsed = results.finish(results.parse(secrets))
    assert len(parsed.cases) == 5
    assert parsed.dropped == 30 * 12 - 5
    assert len(parsed.notes) == results.MAX_NOTES + 1
    assert parsed.notes[-1] == "(more notes left out)"


def test_a_long_error_is_cut_in_the_table() -> None:
    parsed = results.parse([("s", jsonl(case(0, error="x" * 5000)))])
    row = results.table(results.select_run(status_with(run("tone-eval-aaaa1111")), None), parsed).splitlines()[2]
    assert len(row) < 140
    assert row.endswith("\u2026")


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=20,
)
KEYS = st.sampled_from(["i", "suite", "input_sha256", "unreviewed", "champion", "challenger", "pairwise", "error"])
CASE = st.dictionaries(KEYS, JSON, max_size=8)


@settings(max_examples=150, deadline=None)
@given(st.lists(CASE | JSON, max_size=6), JSON)
def test_no_input_makes_it_fail(lines: list[Any], evaluation: Any) -> None:
    data = "\n".join(json.dumps(x) for x in lines).encode()
    parsed = results.finish(results.parse([("s", data)]))
    status = {"evaluations": [{"name": "tone-eval-aaaa1111", "results": evaluation}]}
    ref = results.select_run(status, None)
    table = results.table(ref, parsed)
    json.loads(results.as_json(ref, parsed))
    assert all(len(line) < 200 for line in table.splitlines())
