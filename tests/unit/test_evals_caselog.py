"""The runner's case lines read back from a pod log: what is kept, what is refused, how it is sharded."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from canopy_operator.core.evaluation.caselog import (
    MAX_SHARDS,
    SHARD_BYTES,
    describe_progress,
    last_progress,
    read_case_log,
    shard,
)
from canopy_operator.evals.runner import CaseResult, Progress, case_record


def _line(index: int, done: int, total: int, **case: Any) -> str:
    result = CaseResult(index=index, suite="s", prompt=f"input {index}", expected_result="", challenger_first=True)
    result.scores = {
        "champion": {"subset_of": 1.0, "llm_as_judge": {"score": "A", "judge_feedback": "fine " * 200}},
        "challenger": {"subset_of": 0.0},
        "pairwise": {"winner": "challenger", "challenger_position": 1, "reply_excerpt": "Better: 1"},
    }
    record = {**case_record(result), **case}
    eta = Progress(done=done, total=total, elapsed=done * 2.0).eta_seconds
    return json.dumps({"event": "evaluation_case", "done": done, "total": total, "eta_seconds": eta, "case": record})


def test_the_runners_lines_come_back_as_they_were_written() -> None:
    lines = [_line(i, i + 1, 3) for i in range(3)]
    text = "\n".join(['{"event":"evaluation_started"}', *lines, "Traceback (most recent call last):"])
    log = read_case_log(text, max_cases=3)
    assert sorted(log.records) == [0, 1, 2]
    assert log.records[1] == json.loads(lines[1])["case"]
    assert log.records[1]["champion"]["judge_reason"].endswith("…")
    assert log.progress is not None
    assert (log.progress.done, log.progress.total, log.progress.eta_seconds) == (3, 3, 0.0)
    assert log.skipped == 0


def test_hostile_lines_are_skipped_and_fields_rebuilt() -> None:
    good = json.loads(_line(0, 1, 2))
    evil = dict(good)
    evil["case"] = {**good["case"], "i": 1, "extra": "x" * 100, "suite": "s" * 5000, "error": ["not", "text"]}
    evil["case"]["champion"] = {"subset_of": float("inf"), "llm_as_judge": {"nested": 1}, "secret": "k"}
    lines = [
        json.dumps(evil).replace("Infinity", "1e999"),
        '{"event": "evaluation_case", "case": {"i": -1, "input_sha256": "0123456789abcdef"}}',
        '{"event": "evaluation_case", "case": {"i": 5, "input_sha256": "../../etc/passwd"}}',
        '{"event": "evaluation_case", "case": {"i": 7, "input_sha256": "0123456789abcdef"}}',  # beyond max_cases
        '{"event": "evaluation_case", "case": "' + "x" * 9000 + '"}',
        "evaluation_case but not JSON",
    ]
    log = read_case_log("\n".join(lines), max_cases=2)
    assert sorted(log.records) == [1]
    kept = log.records[1]
    assert "extra" not in kept
    assert len(kept["suite"]) == 100
    assert kept["error"] is None
    assert kept["champion"] == {"subset_of": None, "llm_as_judge": None, "judge_reason": None}
    assert log.skipped == 5


def test_progress_comes_from_the_newest_line_of_the_tail() -> None:
    tail = "\n".join([_line(0, 5, 100), _line(1, 6, 100), '{"event":"evaluation_case","done":9,"total":3}'])
    progress = last_progress(tail)
    assert progress is not None
    assert (progress.done, progress.total) == (6, 100)
    assert last_progress("no lines yet") is None
    assert describe_progress(6, 100, 94 * 2.0) == "6/100 cases, about 3m left"
    assert describe_progress(100, 100, 0.0) == "100/100 cases"


def test_ten_thousand_cases_are_sharded_under_a_secrets_size_in_case_order() -> None:
    text = "\n".join(_line(i, i + 1, 10_000) for i in range(10_000))
    log = read_case_log(text, max_cases=10_000)
    shards, left_out = shard(log.records)
    assert left_out == 0
    assert all(len(s.encode()) <= SHARD_BYTES for s in shards)
    indices = [json.loads(line)["i"] for s in shards for line in s.splitlines()]
    assert indices == list(range(10_000))


@given(st.lists(st.integers(min_value=0, max_value=400), min_size=0, max_size=60))
def test_shards_never_exceed_the_budget_and_count_what_is_left_out(indices: list[int]) -> None:
    records = {i: {"i": i, "pad": "x" * (i * 3000)} for i in indices}
    shards, left_out = shard(records)
    assert len(shards) <= MAX_SHARDS
    kept = [json.loads(line)["i"] for s in shards for line in s.splitlines()]
    assert kept == sorted(kept)
    assert len(kept) + left_out == len(records)
    assert all(len(s.encode()) <= SHARD_BYTES or s.count("\n") == 1 for s in shards)
