"""The Generation 2 stand-in (``canopy_devkit.gen2``) against a fake MLflow: what it serves, what it writes.

The stand-in runs on 127.0.0.1 as the fake kubelet runs it; its MLflow client talks to :class:`FakeMlflow`, an
in-process ``httpx.MockTransport`` that keeps every request body, so the tests check the exact REST shapes
(written from the pinned server's handlers: docs/gen2-servers.md). ``tests/integration/test_gen2_standin.py``
runs the same stand-in against a real MLflow.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes_asyncio import client as k8s

from canopy_devkit.demo import format_row, widths_for
from canopy_devkit.gen2 import (
    PROMPT_B_MISSING,
    BackendStartupError,
    Gen2Client,
    MlflowApi,
    PromptNotFound,
    PromptResolver,
    RunningGen2,
    course_config,
    parse_config,
)
from canopy_devkit.gen2.scene import load_sample, local_experiment
from canopy_devkit.kubelet import FakeKubelet
from canopy_devkit.simulator import answer_chunks
from canopy_devkit.voters import fixed_picks, post_gen2_votes
from canopy_operator.api.spec import PromptExperimentSpec
from canopy_operator.core.values import GEN2, ManagedKeys, read_managed, validate_values
from canopy_operator.sources.canopy.client import CanopyClient
from canopy_operator.sources.canopy.source import CanopySource

V1 = "Summarize the following text in a clear and detailed manner: {{text}}"
V2 = "Provide a brief, concise summary: {{text}}"
V3 = "One line only: {{text}}"
NOW = datetime(2026, 11, 30, 8, 15, 42, 123456, tzinfo=UTC)
SSE_EVENT = re.compile(r"data: [^\n]+\n\n")


@dataclass
class FakeMlflow:
    """The MLflow REST endpoints the stand-in calls, in memory; every request is kept in ``requests``."""

    experiments: dict[str, str] = field(default_factory=dict)
    traces: dict[str, dict[str, Any]] = field(default_factory=dict)
    assessments: list[dict[str, Any]] = field(default_factory=list)
    versions: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)
    """prompt -> version -> tags"""
    aliases: dict[str, dict[str, str]] = field(default_factory=dict)
    requests: list[tuple[str, str, dict[str, str], Any]] = field(default_factory=list)
    unknown_trace_answers: int = 0
    """Answer this many assessment posts with RESOURCE_DOES_NOT_EXIST first (a trace not exported yet)."""
    down: bool = False

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def register(self, name: str, *texts: str, alias: str | None = None) -> None:
        for text in texts:
            versions = self.versions.setdefault(name, {})
            versions[str(len(versions) + 1)] = {"mlflow.prompt.is_prompt": "true", "mlflow.prompt.text": text}
        if alias:
            self.aliases.setdefault(name, {})[alias] = str(len(self.versions[name]))

    def calls(self, method: str, path: str) -> list[Any]:
        return [body for m, p, _, body in self.requests if m == method and p == path]

    def _version(self, name: str, version: str) -> dict[str, Any]:
        tags = self.versions[name][version]
        aliases = [a for a, v in self.aliases.get(name, {}).items() if v == version]
        return {
            "name": name,
            "version": version,
            "tags": [{"key": k, "value": v} for k, v in tags.items()],
            "aliases": aliases,
        }

    def handle(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        body = json.loads(request.content) if request.content else None
        params = dict(request.url.params)
        path = request.url.path
        self.requests.append((request.method, path, params, body))
        missing = httpx.Response(404, json={"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "not found"})
        if path == "/api/2.0/mlflow/experiments/get-by-name":
            name = params["experiment_name"]
            if name not in self.experiments:
                return missing
            return httpx.Response(200, json={"experiment": {"experiment_id": self.experiments[name], "name": name}})
        if path == "/api/2.0/mlflow/experiments/create":
            self.experiments[body["name"]] = str(len(self.experiments) + 1)
            return httpx.Response(200, json={"experiment_id": self.experiments[body["name"]]})
        if path == "/api/3.0/mlflow/traces":
            info = body["trace"]["trace_info"]
            self.traces[info["trace_id"]] = info
            return httpx.Response(200, json={"trace": {"trace_info": info}})
        if match := re.fullmatch(r"/api/3\.0/mlflow/traces/([^/]+)/assessments", path):
            if self.unknown_trace_answers or match.group(1) not in self.traces:
                self.unknown_trace_answers = max(0, self.unknown_trace_answers - 1)
                return missing
            assessment = {**body["assessment"], "assessment_id": f"a-{len(self.assessments)}"}
            self.assessments.append(assessment)
            return httpx.Response(200, json={"assessment": assessment})
        if path == "/api/2.0/mlflow/registered-models/alias" and request.method == "GET":
            version = self.aliases.get(params["name"], {}).get(params["alias"])
            if version is None:
                return missing
            return httpx.Response(200, json={"model_version": self._version(params["name"], version)})
        if path == "/api/2.0/mlflow/registered-models/alias" and request.method == "POST":
            self.aliases.setdefault(body["name"], {})[body["alias"]] = body["version"]
            return httpx.Response(200, json={})
        if path == "/api/2.0/mlflow/model-versions/get":
            if params["version"] not in self.versions.get(params["name"], {}):
                return missing
            return httpx.Response(200, json={"model_version": self._version(params["name"], params["version"])})
        if path == "/api/2.0/mlflow/registered-models/get":
            versions = self.versions.get(params["name"])
            if versions is None:
                return missing
            latest = [self._version(params["name"], max(versions, key=int))] if versions else []
            return httpx.Response(200, json={"registered_model": {"name": params["name"], "latest_versions": latest}})
        if path == "/api/2.0/mlflow/registered-models/create":
            if body["name"] in self.versions:
                return httpx.Response(400, json={"error_code": "RESOURCE_ALREADY_EXISTS", "message": "exists"})
            self.versions[body["name"]] = {}
            return httpx.Response(200, json={"registered_model": {"name": body["name"]}})
        if path == "/api/2.0/mlflow/model-versions/create":
            versions = self.versions[body["name"]]
            number = str(len(versions) + 1)
            versions[number] = {t["key"]: t["value"] for t in body["tags"]}
            return httpx.Response(200, json={"model_version": self._version(body["name"], number)})
        return httpx.Response(404, json={"error_code": "ENDPOINT_NOT_FOUND", "message": path})


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def mlflow() -> FakeMlflow:
    fake = FakeMlflow()
    fake.register("summarization", V1, V2, alias=None)
    fake.aliases["summarization"] = {"champion": "1"}
    return fake


@pytest.fixture
def clock() -> Clock:
    return Clock()


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def ab_config(
    b_version: str | None = "'2'", *, ab: bool = True, feedback: bool = True, champion: str = "champion"
) -> str:
    text = course_config("summarization", champion=champion)
    text = text.replace("ab_testing:\n  enabled: false", f"ab_testing:\n  enabled: {str(ab).lower()}")
    text = text.replace("feedback:\n  enabled: false", f"feedback:\n  enabled: {str(feedback).lower()}")
    if b_version is None:
        return text.replace("  mlflow_prompt_b_version: latest\n", "")
    return text.replace("mlflow_prompt_b_version: latest", f"mlflow_prompt_b_version: {b_version}")


@pytest.fixture
def standin_factory(mlflow: FakeMlflow, clock: Clock) -> Callable[..., RunningGen2]:
    def make(**kwargs: Any) -> RunningGen2:
        options: dict[str, Any] = {
            "tracking_uri": "http://mlflow.test:5000",
            "alias_cache_seconds": 60.0,
            "seed": 3,
            "clock": lambda: NOW,
            "monotonic": clock,
            "transport": mlflow.transport(),
        }
        options.update(kwargs)
        return RunningGen2(**options)

    return make


@pytest.fixture
async def standin(tmp_path: Path, standin_factory: Callable[..., RunningGen2]) -> AsyncIterator[RunningGen2]:
    async with standin_factory() as running:
        await running.start(write(tmp_path, ab_config()))
        yield running


@pytest.fixture
async def http(standin: RunningGen2) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=standin.url, timeout=5, trust_env=False) as client:
        yield client


def events(body: str) -> list[Any]:
    assert "".join(SSE_EVENT.findall(body)) == body, f"not pure 'data: ...' framing: {body!r}"
    payloads = [e.removeprefix("data: ").removesuffix("\n\n") for e in SSE_EVENT.findall(body)]
    return [p if p == "[DONE]" else json.loads(p) for p in payloads]


def answer(prompt: str, text: str) -> str:
    return "".join(answer_chunks(prompt, text))


# ---- config and flags ------------------------------------------------------------------------------------------


async def test_feature_flags_are_the_three_generation_2_switches(http: httpx.AsyncClient) -> None:
    response = await http.get("/feature-flags")

    assert response.status_code == 200
    assert response.content == b'{"summarization":true,"feedback":true,"ab_testing":true}'


def test_config_reads_the_prompt_references_as_text() -> None:
    config = parse_config(ab_config("7", champion="'@champion'"))
    assert (config.prompt_name, config.champion_ref, config.challenger_ref) == ("summarization", "champion", "7")
    assert parse_config(ab_config(None, champion="3")).challenger_ref is None
    assert parse_config(ab_config("''")).challenger_ref is None
    bare = parse_config("summarization:\n  enabled: true\n  mlflow_prompt: p\n")
    assert (bare.champion_ref, bare.flags) == (
        "latest",
        {"summarization": True, "feedback": False, "ab_testing": False},
    )


@pytest.mark.parametrize(
    ("text", "crash"),
    [
        ("- a list\n", "must be a mapping"),
        ("feedback: {}\n", "KeyError: 'enabled'"),
        ("ab_testing:\n", "TypeError: section 'ab_testing'"),
        ("summarization: {enabled: true, model: llama32}\n", "KeyError: 'mlflow_prompt'"),
        ("summarization: [\n", "not valid YAML"),
    ],
)
def test_config_the_backend_cannot_start_with_is_a_startup_error(text: str, crash: str) -> None:
    with pytest.raises(BackendStartupError, match=re.escape(crash)):
        parse_config(text)


async def test_start_without_a_tracking_server_or_with_mlflow_down_fails_like_a_crashing_pod(
    tmp_path: Path, mlflow: FakeMlflow, standin_factory: Callable[..., RunningGen2], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config = write(tmp_path, ab_config())
    with pytest.raises(BackendStartupError, match="MLFLOW_TRACKING_URI"):
        await standin_factory(tracking_uri="").start(config)
    mlflow.down = True
    down = standin_factory()
    with pytest.raises(BackendStartupError, match="canopy-backend"):
        await down.start(config)
    assert not down.running


async def test_the_experiment_is_created_once_then_found_by_name(
    tmp_path: Path, mlflow: FakeMlflow, standin_factory: Callable[..., RunningGen2]
) -> None:
    async with standin_factory() as running:
        await running.start(write(tmp_path, ab_config()))
        first = running.experiment_id
        await running.restart(write(tmp_path, ab_config(ab=False), "v2.yaml"))
        assert running.experiment_id == first

    assert mlflow.calls("POST", "/api/2.0/mlflow/experiments/create") == [{"name": "canopy-backend"}]
    assert mlflow.experiments == {"canopy-backend": first}


def test_unset_arguments_come_from_the_environment_as_in_the_pod(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.toolings.svc:5000")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "course-app")
    monkeypatch.setenv("CANOPY_ALIAS_CACHE_SECONDS", "2.5")
    standin = RunningGen2()
    assert (standin.tracking_uri, standin.experiment, standin.alias_cache_seconds) == (
        "http://mlflow.toolings.svc:5000",
        "course-app",
        2.5,
    )
    monkeypatch.delenv("CANOPY_ALIAS_CACHE_SECONDS")
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME")
    assert (RunningGen2().experiment, RunningGen2().alias_cache_seconds) == ("canopy-backend", 60.0)


# ---- answers and traces ----------------------------------------------------------------------------------------


async def test_ab_request_streams_like_generation_1_with_the_trace_ids_and_both_prompts(
    http: httpx.AsyncClient, mlflow: FakeMlflow, standin: RunningGen2
) -> None:
    response = await http.post("/summarize/ab", json={"prompt": "A long article."})

    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    stream = events(response.text)
    config, *deltas, done = stream
    assert done == "[DONE]"
    assert set(config) == {"type", "mapping", "trace_ids"}
    assert config["type"] == "ab_config"
    assert sorted(config["mapping"].values()) == ["prompt", "prompt_b"]
    assert all(set(d) == {"variant", "delta"} for d in deltas)
    said = {side: "".join(d["delta"] for d in deltas if d["variant"] == side) for side in "ab"}
    texts = {"prompt": V1, "prompt_b": V2}
    assert said == {side: answer(texts[key], "A long article.") for side, key in config["mapping"].items()}
    # Two traces, named by screen position, exported before the stream started, nothing naming the arm.
    bodies = mlflow.calls("POST", "/api/3.0/mlflow/traces")
    assert [b["trace"]["trace_info"]["trace_id"] for b in bodies] == [
        config["trace_ids"]["a"],
        config["trace_ids"]["b"],
    ]
    for side, body in zip("ab", bodies, strict=True):
        assert set(body) == {"trace"}
        assert set(body["trace"]) == {"trace_info"}
        info = body["trace"]["trace_info"]
        assert re.fullmatch(r"tr-[0-9a-f]{32}", info["trace_id"])
        assert info["trace_location"] == {
            "type": "MLFLOW_EXPERIMENT",
            "mlflow_experiment": {"experiment_id": standin.experiment_id},
        }
        assert info["request_time"] == "2026-11-30T08:15:42.123Z"
        assert re.fullmatch(r"\d+\.\d{3}s", info["execution_duration"])
        assert info["state"] == "OK"
        assert info["tags"] == {"mlflow.traceName": f"summarization_ab_{side}"}
        assert json.loads(info["request_preview"]) == {"text": "A long article."}
        assert json.loads(info["response_preview"]) == {"summary": said[side]}


async def test_summarize_answers_with_the_champion_and_names_its_trace(
    http: httpx.AsyncClient, mlflow: FakeMlflow
) -> None:
    response = await http.post("/summarize", json={"prompt": "Text."})

    assert response.status_code == 200
    deltas = events(response.text)
    assert all(set(d) == {"delta"} for d in deltas)
    assert "".join(d["delta"] for d in deltas) == answer(V1, "Text.")
    info = mlflow.traces[response.headers["X-Trace-Id"]]
    assert info["tags"] == {"mlflow.traceName": "summarization"}


@pytest.mark.parametrize(
    ("config", "status", "detail"),
    [
        (ab_config(ab=False), 400, PROMPT_B_MISSING),
        (ab_config(None), 400, PROMPT_B_MISSING),
        (ab_config("null"), 400, PROMPT_B_MISSING),
        (
            ab_config().replace("summarization:\n  enabled: true", "summarization:\n  enabled: false"),
            404,
            "Summarization feature is not enabled",
        ),
    ],
    ids=["ab-off", "no-version", "null-version", "summarization-off"],
)
async def test_ab_endpoint_refuses_like_generation_1_without_a_challenger(
    tmp_path: Path, standin_factory: Callable[..., RunningGen2], config: str, status: int, detail: str
) -> None:
    async with standin_factory() as running:
        await running.start(write(tmp_path, config))
        async with httpx.AsyncClient(base_url=running.url, trust_env=False) as http:
            response = await http.post("/summarize/ab", json={"prompt": "x"})

    assert (response.status_code, response.json()) == (status, {"detail": detail})


async def test_the_operators_ab_probe_reads_the_standin(
    tmp_path: Path, standin_factory: Callable[..., RunningGen2]
) -> None:
    async with standin_factory() as running:
        await running.start(write(tmp_path, ab_config(ab=False)))
        async with CanopyClient(running.url, timeout=5) as operator:
            assert await operator.ab_ready() is False
            await running.restart(write(tmp_path, ab_config("'2'"), "on.yaml"))
            assert await operator.ab_ready() is True
            answers = await operator.summarize_ab("An article.")

    texts = {"prompt": V1, "prompt_b": V2}
    assert answers.response_a == answer(texts[answers.mapping["a"]], "An article.")


async def test_a_version_the_registry_lacks_fails_the_request(
    tmp_path: Path, standin_factory: Callable[..., RunningGen2]
) -> None:
    async with standin_factory() as running:
        await running.start(write(tmp_path, ab_config("'9'")))
        async with httpx.AsyncClient(base_url=running.url, trust_env=False) as http:
            response = await http.post("/summarize/ab", json={"prompt": "x"})

    assert response.status_code == 500


async def test_a_failed_trace_export_still_serves_the_answer(http: httpx.AsyncClient, mlflow: FakeMlflow) -> None:
    await http.post("/summarize", json={"prompt": "warm the cache"})
    mlflow.down = True

    response = await http.post("/summarize", json={"prompt": "Text."})

    assert response.status_code == 200
    assert "".join(d["delta"] for d in events(response.text)) == answer(V1, "Text.")


# ---- votes and thumbs ------------------------------------------------------------------------------------------


def ab_body(preference: str, mapping: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "trace_id_a": "tr-a",
        "trace_id_b": "tr-b",
        "preference": preference,
        "prompt_mapping": mapping or {"a": "challenger", "b": "champion"},
        "feature": "summarization",
    }


@pytest.mark.parametrize(
    ("preference", "mapping", "won", "lost"),
    [
        ("a", None, ("tr-a", "challenger"), ("tr-b", "champion")),
        ("b", None, ("tr-b", "champion"), ("tr-a", "challenger")),
        ("tie", None, ("tr-b", "unknown"), ("tr-a", "challenger")),
        ("a", {"a": "prompt", "b": "prompt_b"}, ("tr-a", "unknown"), ("tr-b", "unknown")),
        ("b", {"a": "champion"}, ("tr-b", "unknown"), ("tr-a", "champion")),
    ],
    ids=["a", "b", "tie-counts-as-b", "gen1-words", "missing-side"],
)
async def test_ab_vote_is_two_ab_preference_assessments_as_the_backend_writes_them(
    http: httpx.AsyncClient,
    mlflow: FakeMlflow,
    preference: str,
    mapping: dict[str, str] | None,
    won: tuple[str, str],
    lost: tuple[str, str],
) -> None:
    mlflow.traces.update({"tr-a": {}, "tr-b": {}})

    response = await http.post("/feedback/ab", json=ab_body(preference, mapping))

    assert (response.status_code, response.json()) == (200, {"status": "ok"})
    bodies = [b["assessment"] for b in mlflow.calls("POST", f"/api/3.0/mlflow/traces/{won[0]}/assessments")]
    bodies += [b["assessment"] for b in mlflow.calls("POST", f"/api/3.0/mlflow/traces/{lost[0]}/assessments")]
    human = {"source_type": "HUMAN", "source_id": "canopy_user"}
    stamp = "2026-11-30T08:15:42.123Z"
    assert bodies == [
        {
            "assessment_name": "ab_preference",
            "trace_id": won[0],
            "source": human,
            "create_time": stamp,
            "last_update_time": stamp,
            "feedback": {"value": True},
            "rationale": f"User preferred this response (mapped to {won[1]})",
            "valid": True,
        },
        {
            "assessment_name": "ab_preference",
            "trace_id": lost[0],
            "source": human,
            "create_time": stamp,
            "last_update_time": stamp,
            "feedback": {"value": False},
            "rationale": f"User preferred the alternative response (mapped to {lost[1]})",
            "valid": True,
        },
    ]


@pytest.mark.parametrize(
    ("rating", "comment", "value"),
    [("thumbs_up", "clear", True), ("thumbs_down", None, False), ("meh", "odd", False)],
)
async def test_thumbs_are_user_satisfaction_with_the_comment_as_rationale(
    http: httpx.AsyncClient, mlflow: FakeMlflow, rating: str, comment: str | None, value: bool
) -> None:
    mlflow.traces["tr-1"] = {}

    response = await http.post(
        "/feedback", json={"trace_id": "tr-1", "rating": rating, "feature": "summarization", "comment": comment}
    )

    assert (response.status_code, response.json()) == (200, {"status": "ok"})
    (body,) = mlflow.calls("POST", "/api/3.0/mlflow/traces/tr-1/assessments")
    assessment = body["assessment"]
    assert (assessment["assessment_name"], assessment["feedback"]) == ("user_satisfaction", {"value": value})
    assert assessment["source"] == {"source_type": "HUMAN", "source_id": "canopy_user"}
    assert assessment.get("rationale") == comment
    assert ("rationale" in assessment) == (comment is not None)  # absent, not null, without a comment


async def test_a_vote_on_a_trace_mlflow_does_not_know_yet_is_retried(
    http: httpx.AsyncClient, mlflow: FakeMlflow
) -> None:
    mlflow.traces.update({"tr-a": {}, "tr-b": {}})
    mlflow.unknown_trace_answers = 3

    response = await http.post("/feedback/ab", json=ab_body("a"))

    assert response.status_code == 200
    assert [a["trace_id"] for a in mlflow.assessments] == ["tr-a", "tr-b"]


async def test_a_vote_on_a_trace_that_never_appears_fails_after_bounded_retries(
    tmp_path: Path, standin_factory: Callable[..., RunningGen2], mlflow: FakeMlflow
) -> None:
    async with standin_factory() as running:
        await running.start(write(tmp_path, ab_config()))
        running.state.retries, running.state.retry_delay = 3, 0.0
        async with httpx.AsyncClient(base_url=running.url, trust_env=False) as http:
            response = await http.post("/feedback/ab", json=ab_body("a"))

    assert response.status_code == 500
    assert len(mlflow.calls("POST", "/api/3.0/mlflow/traces/tr-a/assessments")) == 3


@pytest.mark.parametrize(
    ("config", "path", "detail"),
    [
        (ab_config(feedback=False), "/feedback", "Feedback feature is not enabled"),
        (ab_config(feedback=False), "/feedback/ab", "Feedback feature is not enabled"),
        (ab_config(ab=False), "/feedback/ab", "A/B testing feature is not enabled"),
    ],
)
async def test_feedback_endpoints_answer_404_while_their_feature_is_off(
    tmp_path: Path, standin_factory: Callable[..., RunningGen2], config: str, path: str, detail: str
) -> None:
    body = ab_body("a") if path.endswith("/ab") else {"trace_id": "tr-1", "rating": "thumbs_up"}
    async with standin_factory() as running:
        await running.start(write(tmp_path, config))
        async with httpx.AsyncClient(base_url=running.url, trust_env=False) as http:
            response = await http.post(path, json=body)

    assert (response.status_code, response.json()) == (404, {"detail": detail})


async def test_a_bad_body_is_fastapis_422(http: httpx.AsyncClient) -> None:
    response = await http.post("/feedback/ab", json={"trace_id_a": "tr-a", "preference": "a"})

    assert response.status_code == 422
    assert {tuple(e["loc"]) for e in response.json()["detail"]} == {
        ("body", "trace_id_b"),
        ("body", "prompt_mapping"),
    }


async def test_simulated_users_vote_for_the_arm_they_prefer_whichever_side_it_is_shown_on(
    standin: RunningGen2, mlflow: FakeMlflow
) -> None:
    tally = await post_gen2_votes(standin.url, fixed_picks(5, 2, 0), seed=4)

    assert (tally.challenger, tally.champion) == (5, 2)
    won = [a["rationale"] for a in mlflow.assessments if a["feedback"]["value"] is True]
    assert sorted(won) == sorted(
        ["User preferred this response (mapped to challenger)"] * 5
        + ["User preferred this response (mapped to champion)"] * 2
    )
    # The trace a vote names is the answer of the arm it names (the texts tell the prompts apart).
    for a in (x for x in mlflow.assessments if x["feedback"]["value"] is True):
        text = json.loads(mlflow.traces[a["trace_id"]]["request_preview"])["text"]
        summary = json.loads(mlflow.traces[a["trace_id"]]["response_preview"])["summary"]
        prompt = V2 if a["rationale"].endswith("(mapped to challenger)") else V1
        assert summary == answer(prompt, text)


# ---- the alias cache -------------------------------------------------------------------------------------------


async def test_a_moved_alias_is_served_only_once_the_cache_expires(
    tmp_path: Path, standin_factory: Callable[..., RunningGen2], mlflow: FakeMlflow, clock: Clock
) -> None:
    registry = MlflowApi("http://mlflow.test:5000", transport=mlflow.transport())
    async with standin_factory(alias_cache_seconds=60.0) as running, registry:
        await running.start(write(tmp_path, ab_config()))
        async with Gen2Client(running.url) as ui:
            assert (await ui.summarize("t"))[0] == answer(V1, "t")
            await registry.set_alias("summarization", "champion", "2")
            clock.now += 59.9
            assert (await ui.summarize("t"))[0] == answer(V1, "t")  # cached: the old champion
            clock.now += 0.2
            assert (await ui.summarize("t"))[0] == answer(V2, "t")


async def test_a_restart_forgets_the_cache(
    tmp_path: Path, standin_factory: Callable[..., RunningGen2], mlflow: FakeMlflow
) -> None:
    config = write(tmp_path, ab_config())
    async with standin_factory(alias_cache_seconds=3600.0) as running:
        await running.start(config)
        async with Gen2Client(running.url) as ui:
            assert (await ui.summarize("t"))[0] == answer(V1, "t")
            mlflow.aliases["summarization"]["champion"] = "2"
            await running.restart(config)  # a rollout: a new process, an empty cache
            assert (await ui.summarize("t"))[0] == answer(V2, "t")


async def test_resolver_caches_aliases_and_latest_for_the_ttl_and_versions_for_good(
    mlflow: FakeMlflow, clock: Clock
) -> None:
    async with MlflowApi("http://mlflow.test:5000", transport=mlflow.transport()) as api:
        resolver = PromptResolver(api, 10.0, monotonic=clock)
        assert (await resolver.resolve("summarization", "latest")).text == V2
        assert (await resolver.resolve("summarization", "1")).version == "1"
        mlflow.register("summarization", V3)
        clock.now += 9.0
        assert (await resolver.resolve("summarization", "latest")).version == "2"  # cached
        clock.now += 1.0
        assert (await resolver.resolve("summarization", "latest")).version == "3"
        lookups = resolver.lookups
        clock.now += 10_000
        assert (await resolver.resolve("summarization", "1")).text == V1
        assert resolver.lookups == lookups  # a version number never changes what it names
        with pytest.raises(PromptNotFound, match=r"prompts:/summarization@gone"):
            await resolver.resolve("summarization", "gone")
        with pytest.raises(PromptNotFound, match=r"prompts:/missing/4"):
            await resolver.resolve("missing", "4")


async def test_a_zero_ttl_looks_the_alias_up_every_time(mlflow: FakeMlflow, clock: Clock) -> None:
    async with MlflowApi("http://mlflow.test:5000", transport=mlflow.transport()) as api:
        resolver = PromptResolver(api, 0.0, monotonic=clock)
        await resolver.resolve("summarization", "champion")
        mlflow.aliases["summarization"]["champion"] = "2"
        assert (await resolver.resolve("summarization", "champion")).version == "2"


async def test_register_prompt_writes_what_mlflows_register_prompt_writes(mlflow: FakeMlflow) -> None:
    async with MlflowApi("http://mlflow.test:5000", transport=mlflow.transport()) as api:
        assert await api.register_prompt("fresh", "Hello {{text}}") == "1"
        assert await api.register_prompt("fresh", "Bye {{text}}") == "2"
        await api.set_alias("fresh", "champion", "1")
        champion = await api.alias_version("fresh", "champion")

    assert mlflow.calls("POST", "/api/2.0/mlflow/registered-models/create")[0] == {
        "name": "fresh",
        "tags": [{"key": "mlflow.prompt.is_prompt", "value": "true"}],
    }
    assert mlflow.calls("POST", "/api/2.0/mlflow/model-versions/create")[1] == {
        "name": "fresh",
        "source": "dummy-source",
        "tags": [
            {"key": "mlflow.prompt.is_prompt", "value": "true"},
            {"key": "mlflow.prompt.text", "value": "Bye {{text}}"},
            {"key": "_mlflow_prompt_type", "value": "text"},
        ],
    }
    assert champion is not None
    assert (champion.version, champion.text) == ("1", "Hello {{text}}")


# ---- the fake kubelet and the operator's probe -----------------------------------------------------------------


async def test_fake_kubelet_runs_what_its_factory_makes_and_the_simulator_by_default(
    standin_factory: Callable[..., RunningGen2], tmp_path: Path
) -> None:
    made = standin_factory()
    async with k8s.ApiClient() as api:
        assert FakeKubelet(api, "ns", tmp_path, factory=lambda: made).simulator is made
        assert type(FakeKubelet(api, "ns", tmp_path).simulator).__name__ == "RunningSimulator"


async def test_the_operators_probe_reads_the_generation_2_flags(standin: RunningGen2) -> None:
    probe = CanopySource(CanopyClient(standin.url, timeout=5), generation=2)
    try:
        flags = await probe.flags()
    finally:
        await probe.aclose()

    assert (flags["feedback"], flags["ab_testing"]) == (True, True)


# ---- the demo's scene ------------------------------------------------------------------------------------------


def test_the_local_experiment_is_the_shipped_sample_on_local_servers_with_configmap_delivery() -> None:
    sample = load_sample()
    body = local_experiment(
        sample,
        backend_url="http://127.0.0.1:8000",
        tracking_url="http://127.0.0.1:5000",
        experiment_id="7",
        prompt="summarization-x",
        alias_cache="3s",
    )
    spec = PromptExperimentSpec.model_validate(body["spec"])

    assert body["metadata"] == sample["metadata"]
    assert (spec.backend.generation, spec.delivery.mode, spec.challenger.version) == (2, "ConfigMap", 2)
    assert spec.votes.mlflow is not None
    assert (spec.votes.mlflow.tracking_url, spec.votes.mlflow.experiment_id) == ("http://127.0.0.1:5000", "7")
    assert spec.prompts.mlflow is not None
    assert (spec.prompts.mlflow.name, spec.prompts.mlflow.alias_cache) == ("summarization-x", "3s")
    # The course's sample itself is untouched: Git delivery to the GitOps repo, MLflow in toolings, 60 s cache.
    assert sample["spec"]["delivery"]["git"]["valuesFile"] == "canopy/test/backend/config.yaml"
    assert sample["spec"]["prompts"]["mlflow"]["trackingUrl"] == "http://mlflow.toolings.svc:5000"
    assert sample["spec"]["prompts"]["mlflow"]["aliasCache"] == "60s"


def test_the_course_config_is_a_generation_2_file_the_operator_reads_and_the_standin_starts_with() -> None:
    text = course_config("summarization")
    assert read_managed(text, layout=GEN2) == ManagedKeys("champion", "latest", False, False)
    assert validate_values(text, layout=GEN2) == []
    config = parse_config(text)
    assert (config.flags, config.champion_ref, config.challenger_ref) == (
        {"summarization": True, "feedback": False, "ab_testing": False},
        "champion",
        "latest",
    )


def test_the_watch_table_widens_its_name_column_for_a_long_name() -> None:
    assert widths_for("concise-summaries")[0] == 20  # the Generation 1 table is unchanged
    line = format_row(
        ("concise-summaries-gen2", "Running", "1", "0", "0", "", "1", "3s"), widths_for("concise-summaries-gen2")
    )
    assert line.startswith("concise-summaries-gen2  Running ")


def test_the_program_exits_1_when_the_pod_could_not_start(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    result = subprocess.run(
        [sys.executable, "-m", "canopy_devkit.gen2", "--config", str(write(tmp_path, ab_config())), "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 1
    assert "backend start-up failed: no MLflow tracking server: set MLFLOW_TRACKING_URI" in result.stderr
