"""The simulator answers exactly as the Generation 1 backend does (contract sections 1, 1.1, 1.2, 2, 3, 6).

Checked over real HTTP on 127.0.0.1 with raw bodies, not through the operator's client.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from canopy_devkit.simulator import BackendStartupError, RunningSimulator, SimulatorProcess
from canopy_devkit.simulator.app import answer_chunks
from tests.support.simulator import (
    CHALLENGER,
    CHAMPION,
    LLAMA_STACK_URL,
    FeedbackLogCapture,
    running_simulator,
    write_config,
)

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00$")
SSE_EVENT = re.compile(r"data: [^\n]+\n\n")


@pytest.fixture
async def ab_sim(tmp_path: Path) -> AsyncIterator[RunningSimulator]:
    async with running_simulator(write_config(tmp_path, ab_testing=True, prompt_b=CHALLENGER)) as sim:
        yield sim


@pytest.fixture
async def http(ab_sim: RunningSimulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=ab_sim.url, timeout=5) as client:
        yield client


def _feedback(rating: str = "thumbs_down", input_text: str = "some text", **extra: Any) -> dict[str, Any]:
    return {"input_text": input_text, "response_text": "an answer", "rating": rating, **extra}


def _vote(preference: str, a: str = "prompt", b: str = "prompt_b") -> dict[str, Any]:
    return {
        "input_text": "text",
        "response_a": "answer a",
        "response_b": "answer b",
        "preference": preference,
        "prompt_mapping": {"a": a, "b": b},
    }


def _events(body: str) -> list[str]:
    assert "".join(SSE_EVENT.findall(body)) == body, f"not pure 'data: ...' framing: {body!r}"
    return [event.removeprefix("data: ").removesuffix("\n\n") for event in SSE_EVENT.findall(body)]


# ---- section 1: feature flags and configuration -----------------------------------------------------------


async def test_feature_flags_are_exactly_the_seven_booleans(http: httpx.AsyncClient) -> None:
    response = await http.get("/feature-flags")

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.content == (
        b'{"information-search":false,"summarize":true,"student-assistant":false,"shields":false,'
        b'"feedback":true,"ab_testing":true,"socratic-tutor":false}'
    )


async def test_feature_flags_follow_the_backends_equals_true_comparison(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        f"LLAMA_STACK_URL: {LLAMA_STACK_URL}\nsummarize:\n  enabled: 'true'\nfeedback:\n  enabled: 1\n"
        "ab_testing:\n  enabled: yes\n",
        encoding="utf-8",
    )
    async with running_simulator(path) as sim, httpx.AsyncClient(base_url=sim.url) as http:
        flags = (await http.get("/feature-flags")).json()

    assert (flags["summarize"], flags["feedback"], flags["ab_testing"]) == (False, True, True)


async def test_missing_config_file_turns_every_feature_off(tmp_path: Path) -> None:
    async with running_simulator(tmp_path / "absent.yaml") as sim, httpx.AsyncClient(base_url=sim.url) as http:
        flags = (await http.get("/feature-flags")).json()

    assert flags == dict.fromkeys(flags, False)
    assert len(flags) == 7


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("summarize:\n  enabled: true\n", "LLAMA_STACK_URL"),
        (f"LLAMA_STACK_URL: {LLAMA_STACK_URL}\nfeedback: {{}}\n", "enabled"),
        (f"LLAMA_STACK_URL: {LLAMA_STACK_URL}\nfeedback:\n", "feedback"),
        ("- not\n- a mapping\n", "mapping"),
    ],
)
async def test_start_fails_where_the_backend_would_crash(tmp_path: Path, text: str, reason: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    sim = RunningSimulator()

    with pytest.raises(BackendStartupError, match=reason):
        await sim.start(path)
    assert not sim.running


async def test_config_is_read_once_at_start(tmp_path: Path) -> None:
    path = write_config(tmp_path, feedback=True)
    async with running_simulator(path) as sim, httpx.AsyncClient(base_url=sim.url) as http:
        write_config(tmp_path, feedback=False)  # a hand-patched ConfigMap: no restart, no effect

        assert (await http.get("/feature-flags")).json()["feedback"] is True
        await sim.restart(path)
        assert (await http.get("/feature-flags")).json()["feedback"] is False


# ---- section 1: 404s, 400, 422 ---------------------------------------------------------------------------

FEEDBACK_OFF = "Feedback feature is not enabled"
AB_OFF = "A/B testing feature is not enabled"
SUMMARIZE_OFF = "Summarization feature is not enabled"


@pytest.mark.parametrize(
    ("flags", "method", "path", "body", "detail"),
    [
        ({"feedback": False}, "POST", "/feedback", _feedback(), FEEDBACK_OFF),
        ({"feedback": False}, "GET", "/feedback", None, FEEDBACK_OFF),
        ({"feedback": False}, "GET", "/feedback/export", None, FEEDBACK_OFF),
        ({"feedback": False}, "POST", "/feedback/ab", _vote("a"), FEEDBACK_OFF),
        ({"feedback": False}, "GET", "/feedback/ab", None, FEEDBACK_OFF),
        ({"ab_testing": False}, "POST", "/feedback/ab", _vote("a"), AB_OFF),
        ({"ab_testing": False}, "GET", "/feedback/ab", None, AB_OFF),
        ({"ab_testing": False}, "POST", "/summarize/ab", {"prompt": "x"}, AB_OFF),
        ({"summarize": False}, "POST", "/summarize", {"prompt": "x"}, SUMMARIZE_OFF),
        ({"summarize": False}, "POST", "/summarize/ab", {"prompt": "x"}, SUMMARIZE_OFF),
        ({"feedback": False, "ab_testing": False}, "GET", "/feedback/ab", None, FEEDBACK_OFF),
    ],
)
async def test_disabled_feature_answers_404_naming_it(
    tmp_path: Path, flags: dict[str, bool], method: str, path: str, body: Any, detail: str
) -> None:
    settings: dict[str, Any] = {"ab_testing": True, "prompt_b": CHALLENGER, **flags}
    async with (
        running_simulator(write_config(tmp_path, **settings)) as sim,
        httpx.AsyncClient(base_url=sim.url) as http,
    ):
        response = await http.request(method, path, json=body)

    assert response.status_code == 404
    assert response.json() == {"detail": detail}


@pytest.mark.parametrize("prompt_b", [None, ""])
async def test_summarize_ab_answers_400_without_a_challenger(tmp_path: Path, prompt_b: str | None) -> None:
    path = write_config(tmp_path, ab_testing=True, prompt_b=prompt_b)
    async with running_simulator(path) as sim, httpx.AsyncClient(base_url=sim.url) as http:
        response = await http.post("/summarize/ab", json={"prompt": "x"})

    assert response.status_code == 400
    assert response.content == b'{"detail":"prompt_b is not configured in summarize config"}'


@pytest.mark.parametrize(
    ("path", "content", "expected"),
    [
        (
            "/summarize",
            b'{"prompt": 1}',
            [{"type": "string_type", "loc": ["body", "prompt"], "msg": "Input should be a valid string", "input": 1}],
        ),
        ("/summarize", b"{}", [{"type": "missing", "loc": ["body", "prompt"], "msg": "Field required", "input": {}}]),
        ("/summarize", b"", [{"type": "missing", "loc": ["body"], "msg": "Field required", "input": None}]),
        (
            "/summarize",
            b"{bad",
            [
                {
                    "type": "json_invalid",
                    "loc": ["body", 1],
                    "msg": "JSON decode error",
                    "input": {},
                    "ctx": {"error": "Expecting property name enclosed in double quotes"},
                }
            ],
        ),
        (
            "/summarize",
            b"[1, 2]",
            [
                {
                    "type": "model_attributes_type",
                    "loc": ["body"],
                    "msg": "Input should be a valid dictionary or object to extract fields from",
                    "input": [1, 2],
                }
            ],
        ),
        (
            "/feedback",
            b'{"input_text": "a"}',
            [
                {
                    "type": "missing",
                    "loc": ["body", "response_text"],
                    "msg": "Field required",
                    "input": {"input_text": "a"},
                },
                {"type": "missing", "loc": ["body", "rating"], "msg": "Field required", "input": {"input_text": "a"}},
            ],
        ),
        (
            "/feedback/ab",
            json.dumps({**_vote("a"), "prompt_mapping": {"a": 1, "b": "prompt"}}).encode(),
            [
                {
                    "type": "string_type",
                    "loc": ["body", "prompt_mapping", "a"],
                    "msg": "Input should be a valid string",
                    "input": 1,
                }
            ],
        ),
    ],
)
async def test_bad_body_answers_fastapi_422(
    http: httpx.AsyncClient, path: str, content: bytes, expected: list[dict[str, Any]]
) -> None:
    response = await http.post(path, content=content, headers={"Content-Type": "application/json"})

    assert response.status_code == 422
    assert response.json() == {"detail": expected}


async def test_bad_body_is_rejected_before_the_feature_check(tmp_path: Path) -> None:
    async with (
        running_simulator(write_config(tmp_path, feedback=False)) as sim,
        httpx.AsyncClient(base_url=sim.url) as http,
    ):
        response = await http.post("/feedback", json={"input_text": "a"})

    assert response.status_code == 422


async def test_rating_and_preference_are_not_validated(http: httpx.AsyncClient) -> None:
    thumbs = await http.post("/feedback", json=_feedback(rating="meh"))
    vote = await http.post("/feedback/ab", json=_vote("left"))

    assert thumbs.json() == {"status": "ok", "feedback_id": 1}
    assert vote.json() == {"status": "ok", "feedback_id": 1}
    assert (await http.get("/feedback/ab")).json()["entries"][0]["winning_prompt"] is None


async def test_unknown_path_and_wrong_method_answer_like_fastapi(http: httpx.AsyncClient) -> None:
    missing = await http.get("/health")
    wrong = await http.delete("/feedback")

    assert (missing.status_code, missing.json()) == (404, {"detail": "Not Found"})
    assert (wrong.status_code, wrong.json(), wrong.headers["allow"]) == (405, {"detail": "Method Not Allowed"}, "POST")


async def test_summarize_without_model_answers_plain_500(tmp_path: Path) -> None:
    async with (
        running_simulator(write_config(tmp_path, model=None)) as sim,
        httpx.AsyncClient(base_url=sim.url) as http,
    ):
        response = await http.post("/summarize", json={"prompt": "x"})

    assert (response.status_code, response.text) == (500, "Internal Server Error")


async def test_lone_surrogate_in_a_feedback_text_breaks_the_listing(http: httpx.AsyncClient) -> None:
    posted = await http.post(
        "/feedback",
        content=b'{"input_text": "x\\ud800", "response_text": "r", "rating": "thumbs_up"}',
        headers={"Content-Type": "application/json"},
    )
    listing = await http.get("/feedback")

    assert posted.status_code == 200
    assert (listing.status_code, listing.text) == (500, "Internal Server Error")


# ---- section 1: feedback and A/B stores ------------------------------------------------------------------


async def test_feedback_is_stored_with_sequential_ids_and_utc_timestamps(http: httpx.AsyncClient) -> None:
    first = await http.post("/feedback", json=_feedback(input_text="one"))
    second = await http.post("/feedback", json=_feedback("thumbs_up", "two", feature="other", comment="nice"))
    listing = (await http.get("/feedback")).json()

    assert [first.json()["feedback_id"], second.json()["feedback_id"]] == [1, 2]
    assert listing["total"] == 2
    one, two = listing["feedback"]
    assert list(one) == ["id", "timestamp", "feature", "rating", "input_text", "response_text", "comment"]
    assert (one["id"], one["feature"], one["comment"], one["input_text"]) == (1, "summarize", None, "one")
    assert (two["id"], two["feature"], two["comment"], two["rating"]) == (2, "other", "nice", "thumbs_up")
    assert TIMESTAMP.match(one["timestamp"])
    assert TIMESTAMP.match(two["timestamp"])


async def test_ab_votes_are_attributed_to_config_key_names(http: httpx.AsyncClient) -> None:
    for vote in (
        _vote("a", a="prompt_b", b="prompt"),  # challenger shown left and chosen
        _vote("b", a="prompt_b", b="prompt"),  # champion shown right and chosen
        _vote("a", a="prompt", b="prompt_b"),  # champion
        _vote("tie"),
    ):
        assert (await http.post("/feedback/ab", json=vote)).status_code == 200
    listing = (await http.get("/feedback/ab")).json()

    assert {key: listing[key] for key in ("total", "prompt_a_wins", "prompt_b_wins", "ties")} == {
        "total": 4,
        "prompt_a_wins": 2,
        "prompt_b_wins": 1,
        "ties": 1,
    }
    assert [entry["winning_prompt"] for entry in listing["entries"]] == ["prompt_b", "prompt", "prompt", None]
    assert list(listing["entries"][0]) == [
        "id", "timestamp", "feature", "preference", "winning_prompt", "prompt_mapping",
        "input_text", "response_a", "response_b",
    ]  # fmt: skip
    assert [entry["id"] for entry in listing["entries"]] == [1, 2, 3, 4]


async def test_timestamp_loses_microseconds_when_they_are_zero(tmp_path: Path) -> None:
    sim = RunningSimulator(clock=lambda: datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC))
    await sim.start(write_config(tmp_path))
    try:
        async with httpx.AsyncClient(base_url=sim.url) as http:
            await http.post("/feedback", json=_feedback())
            entry = (await http.get("/feedback")).json()["feedback"][0]
    finally:
        await sim.stop()

    assert entry["timestamp"] == "2026-05-01T12:00:00+00:00"


# ---- section 1.2: export ---------------------------------------------------------------------------------


def _pyyaml_export(prompts: list[str]) -> bytes:
    dataset = {
        "name": "feedback_eval_tests",
        "description": "Tests generated from negative user feedback on summarization.",
        "endpoint": "/summarize",
        "scoring_params": {
            "llm-as-judge::base": {
                "judge_model": "llama32",
                "prompt_template": "judge_prompt.txt",
                "type": "llm_as_judge",
                "judge_score_regexes": ["Answer: (A|B|C|D|E)"],
            },
            "basic::subset_of": None,
        },
        "tests": [{"prompt": prompt, "expected_result": ""} for prompt in prompts],
    }
    return yaml.dump(dataset, default_flow_style=False, allow_unicode=True, sort_keys=False).encode("utf-8")


async def test_export_is_pyyaml_byte_for_byte_with_only_thumbs_down(http: httpx.AsyncClient) -> None:
    texts = ["Zusammenfassung über Bäume — 森林", "line one\nline two", "yes"]
    for text in texts:
        await http.post("/feedback", json=_feedback("thumbs_down", text, comment="not exported"))
    await http.post("/feedback", json=_feedback("thumbs_up", "a liked text"))

    response = await http.get("/feedback/export")

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-yaml"
    assert response.headers["content-disposition"] == "attachment; filename=feedback-eval-dataset.yaml"
    assert response.content == _pyyaml_export(texts)
    assert "- prompt: Zusammenfassung über Bäume — 森林\n  expected_result: ''\n" in response.text
    assert "an answer" not in response.text
    assert "not exported" not in response.text


async def test_export_without_negatives_ends_with_empty_tests(http: httpx.AsyncClient) -> None:
    await http.post("/feedback", json=_feedback("thumbs_up"))

    response = await http.get("/feedback/export")

    assert response.content == _pyyaml_export([])
    assert response.text.endswith("  basic::subset_of: null\ntests: []\n")
    assert "    - 'Answer: (A|B|C|D|E)'\n" in response.text


# ---- section 1.1: streams --------------------------------------------------------------------------------


async def test_summarize_streams_deltas_without_terminator(http: httpx.AsyncClient) -> None:
    response = await http.post("/summarize", json={"prompt": "A long article about forests."})

    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    events = [json.loads(event) for event in _events(response.text)]
    assert all(list(event) == ["delta"] for event in events)
    assert "".join(event["delta"] for event in events) == "".join(
        answer_chunks(CHAMPION, "A long article about forests.")
    )
    assert "[DONE]" not in response.text


async def test_summarize_answer_depends_on_text_and_prompt_only(http: httpx.AsyncClient) -> None:
    first = await http.post("/summarize", json={"prompt": "text one"})
    again = await http.post("/summarize", json={"prompt": "text one"})
    other = await http.post("/summarize", json={"prompt": "text two"})

    assert first.content == again.content
    assert first.content != other.content
    assert "".join(answer_chunks(CHAMPION, "t")) != "".join(answer_chunks(CHALLENGER, "t"))


async def test_summarize_ab_streams_mapping_interleaved_deltas_and_done(http: httpx.AsyncClient) -> None:
    response = await http.post("/summarize/ab", json={"prompt": "A long article about forests."})

    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    events = _events(response.text)
    config = json.loads(events[0])
    assert config["type"] == "ab_config"
    assert list(config) == ["type", "mapping"]
    assert sorted(config["mapping"].items()) in (
        [("a", "prompt"), ("b", "prompt_b")],
        [("a", "prompt_b"), ("b", "prompt")],
    )
    assert events[-1] == "[DONE]"
    deltas = [json.loads(event) for event in events[1:-1]]
    assert all(list(delta) == ["variant", "delta"] for delta in deltas)
    by_variant = {side: "".join(d["delta"] for d in deltas if d["variant"] == side) for side in "ab"}
    prompts = {"prompt": CHAMPION, "prompt_b": CHALLENGER}
    for side, key in config["mapping"].items():
        assert by_variant[side] == "".join(answer_chunks(prompts[key], "A long article about forests."))
    variants = [delta["variant"] for delta in deltas]
    assert variants != sorted(variants), "variant deltas should interleave"


async def test_summarize_ab_shuffles_the_sides_per_request(http: httpx.AsyncClient) -> None:
    seen = set()
    for _ in range(20):
        response = await http.post("/summarize/ab", json={"prompt": "x"})
        seen.add(json.loads(_events(response.text)[0])["mapping"]["a"])

    assert seen == {"prompt", "prompt_b"}


# ---- section 2: restarts ---------------------------------------------------------------------------------


async def test_restart_wipes_memory_and_ids_start_again_at_one(tmp_path: Path) -> None:
    path = write_config(tmp_path, ab_testing=True, prompt_b=CHALLENGER)
    async with running_simulator(path) as sim, httpx.AsyncClient(base_url=sim.url) as http:
        port = sim.port
        for _ in range(3):
            await http.post("/feedback", json=_feedback())
        await http.post("/feedback/ab", json=_vote("a"))

        await sim.restart(write_config(tmp_path, name="v2.yaml", ab_testing=True, prompt_b="New challenger:\n"))

        assert sim.port == port
        assert (await http.get("/feedback")).json() == {"total": 0, "feedback": []}
        assert (await http.get("/feedback/ab")).json()["total"] == 0
        assert (await http.post("/feedback", json=_feedback())).json()["feedback_id"] == 1


async def test_restart_into_a_crashing_config_leaves_the_port_closed(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("feedback:\n  enabled: true\n", encoding="utf-8")
    async with running_simulator(write_config(tmp_path)) as sim, httpx.AsyncClient(base_url=sim.url) as http:
        with pytest.raises(BackendStartupError):
            await sim.restart(bad)

        with pytest.raises(httpx.ConnectError):
            await http.get("/feature-flags")


# ---- section 6: logs -------------------------------------------------------------------------------------


async def test_feedback_events_are_logged_as_bare_json(http: httpx.AsyncClient) -> None:
    with FeedbackLogCapture() as log:
        await http.post("/feedback", json=_feedback("thumbs_down", "x" * 812))
        await http.post("/feedback/ab", json=_vote("b", a="prompt", b="prompt_b"))
        await http.get("/feedback/export")

    submitted, voted, exported = log.events
    assert list(submitted) == [
        "event", "feedback_id", "feature", "rating", "input_length", "response_length", "timestamp",
    ]  # fmt: skip
    assert (submitted["event"], submitted["feedback_id"], submitted["input_length"]) == ("feedback_submitted", 1, 812)
    assert voted == {
        "event": "ab_feedback_submitted",
        "feedback_id": 1,
        "feature": "summarize",
        "preference": "b",
        "winning_prompt": "prompt_b",
        "prompt_mapping": {"a": "prompt", "b": "prompt_b"},
        "timestamp": voted["timestamp"],
    }
    assert (exported["event"], exported["total_negative"]) == ("feedback_exported", 1)
    assert log.lines[0].startswith('{"event": "feedback_submitted", ')


async def test_simulator_process_restarts_like_a_rollout_and_logs_to_stderr(tmp_path: Path) -> None:
    process = SimulatorProcess(seed=1)
    async with process, httpx.AsyncClient(base_url=process.url, timeout=5) as http:
        await process.start(write_config(tmp_path))
        await http.post("/feedback", json=_feedback())
        await process.restart(write_config(tmp_path, name="v2.yaml", feedback=True))
        after = (await http.post("/feedback", json=_feedback())).json()

    events = [json.loads(line) for line in process.log_lines if line.startswith("{")]
    assert after["feedback_id"] == 1
    assert [(event["event"], event["feedback_id"]) for event in events] == [
        ("feedback_submitted", 1),
        ("feedback_submitted", 1),
    ]


async def test_simulator_process_reports_a_crashing_config(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("feedback:\n  enabled: true\n", encoding="utf-8")

    with pytest.raises(BackendStartupError, match="LLAMA_STACK_URL"):
        async with SimulatorProcess() as process:
            await process.start(bad)


# ---- test-only faults (never part of the contract; used by the resilience suite) -------------------------


async def test_faults_limited_to_a_path_leave_other_paths_healthy(
    ab_sim: RunningSimulator, http: httpx.AsyncClient
) -> None:
    ab_sim.faults.status = 500
    ab_sim.faults.paths = frozenset({"/feedback/ab"})
    assert (await http.get("/feedback/ab")).status_code == 500
    assert (await http.get("/feature-flags")).status_code == 200
    assert ab_sim.faults.hits == 1
    ab_sim.faults.clear()
    assert (await http.get("/feedback/ab")).status_code == 200
    assert ab_sim.faults.hits == 1


async def test_drip_sends_the_real_body_slowly(ab_sim: RunningSimulator, http: httpx.AsyncClient) -> None:
    await http.post("/feedback/ab", json=_vote("b"))
    expected = (await http.get("/feedback/ab")).json()
    ab_sim.faults.drip = 0.01
    async with http.stream("GET", "/feedback/ab") as response:
        pieces = [piece async for piece in response.aiter_raw()]
    assert json.loads(b"".join(pieces)) == expected
    assert len(pieces) >= 2  # it did arrive in pieces
    ab_sim.faults.drip = 2.0
    with pytest.raises(httpx.ReadTimeout):
        await http.get("/feedback/ab", timeout=0.5)


async def test_chunked_fault_sends_a_big_body_without_content_length(
    ab_sim: RunningSimulator, http: httpx.AsyncClient
) -> None:
    ab_sim.faults.garbage = b"x" * (3 * 1024 * 1024 + 5)
    ab_sim.faults.chunked = True
    async with http.stream("GET", "/feedback/ab") as response:
        assert "content-length" not in response.headers
        received = sum([len(piece) async for piece in response.aiter_raw()])
    assert received == 3 * 1024 * 1024 + 5
