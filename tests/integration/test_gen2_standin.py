"""The Generation 2 stand-in against a real MLflow (``mlflow==3.17.2``, the session's ``mlflow_server``).

What it writes is what the operator reads: A/B requests and votes through the stand-in are counted by the
operator's own ``MlflowVotes`` for the arm the users preferred, and its thumbs-down reaches the feedback log. The
prompts are registered with MLflow's own client (the seeder), so the stand-in reads what the course registers; a
moved alias is served only once the stand-in's 1 s alias cache expires, as an MLflow client's 60 s one would be.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from canopy_devkit.gen2 import Gen2Client, RunningGen2, course_config
from canopy_devkit.simulator import answer_chunks
from canopy_devkit.voters import fixed_picks, post_gen2_votes
from canopy_operator.core.readings import VoteTally, Window
from canopy_operator.sources.http import JsonApi
from canopy_operator.sources.mlflow.client import MlflowClient
from canopy_operator.sources.mlflow.source import MlflowVotes
from tests.support.mlflow_server import MlflowServer

pytestmark = [pytest.mark.mlflow, pytest.mark.timeout(1500)]  # a cold build of the MLflow env takes minutes

V1 = "Summarize the following text in a clear and detailed manner: {{text}}"
V2 = "Provide a brief, concise summary: {{text}}"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def answer(prompt: str, text: str) -> str:
    return "".join(answer_chunks(prompt, text))


def config(prompt: str, *, ab: bool = True) -> str:
    """The course's config with the experiment's keys as the operator writes them (challenger version '2')."""
    text = course_config(prompt).replace("feedback:\n  enabled: false", "feedback:\n  enabled: true")
    if ab:
        text = text.replace(
            "ab_testing:\n  enabled: false\n  mlflow_prompt_b_version: latest",
            "ab_testing:\n  enabled: true\n  mlflow_prompt_b_version: '2'",
        )
    return text


@pytest.fixture
def prompt(mlflow_server: MlflowServer) -> str:
    """A fresh prompt registered with MLflow's own client: version 1 (alias champion) and version 2."""
    name = unique("summarization")
    seeded = mlflow_server.seed(
        [
            {"op": "register_prompt", "name": name, "template": V1, "alias": "champion"},
            {"op": "register_prompt", "name": name, "template": V2},
        ]
    )
    assert [step["version"] for step in seeded["steps"]] in (["1", "2"], [1, 2])
    return name


@pytest.fixture
async def operator_mlflow(mlflow_server: MlflowServer) -> AsyncIterator[MlflowClient]:
    async with JsonApi("MLflow", mlflow_server.url, 30.0, 32 * 1024 * 1024) as api:
        yield MlflowClient(api)


async def test_votes_through_the_standin_are_counted_by_the_operator_for_the_arm_preferred(
    mlflow_server: MlflowServer, prompt: str, operator_mlflow: MlflowClient, tmp_path: Path
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(config(prompt), encoding="utf-8")
    started = datetime.now(UTC) - timedelta(seconds=5)
    async with RunningGen2(tracking_uri=mlflow_server.url, experiment=unique("gen2-standin"), seed=5) as standin:
        await standin.start(path)
        tally = await post_gen2_votes(standin.url, fixed_picks(6, 3, 1), seed=2)
        async with Gen2Client(standin.url) as ui:
            text, trace_id = await ui.summarize("A text the user did not like.")
            await ui.feedback(trace_id, "thumbs_down", comment="too long")
        votes = MlflowVotes(operator_mlflow, standin.experiment_id, where=mlflow_server.url)
        reading = await votes.read(Window(started_at=started, feature="summarization"))
        traces = [t async for t in operator_mlflow.search(standin.experiment_id, "trace.timestamp_ms > 0")]

    assert (tally.challenger, tally.champion, tally.ties) == (6, 3, 1)
    # The tie is posted as the backend's UI cannot: a "b" win whose rationale maps to unknown, never counted.
    assert reading.votes == VoteTally(challenger_wins=6, champion_wins=3)
    assert votes.last_unmapped == 1
    (negative,) = reading.feedback.entries
    assert (negative.input_text, negative.response_text, negative.comment) == (
        "A text the user did not like.",
        text,
        "too long",
    )
    assert text == answer(V1, "A text the user did not like.")  # the champion (alias) answered
    names = sorted(t.tags.get("mlflow.traceName", "") for t in traces)
    assert names == ["summarization"] + ["summarization_ab_a"] * 10 + ["summarization_ab_b"] * 10


async def test_a_moved_alias_is_served_only_after_the_standins_cache_expires(
    mlflow_server: MlflowServer, prompt: str, operator_mlflow: MlflowClient, tmp_path: Path
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(config(prompt, ab=False), encoding="utf-8")
    checks: list[float] = []

    def monotonic() -> float:
        # The resolver reads the clock once per request here (one prompt): when it checked its cached entry
        # and, on a miss, when the entry's 1 s began.
        now = time.monotonic()
        checks.append(now)
        return now

    texts = {answer(V1, "t"): "1", answer(V2, "t"): "2"}
    async with RunningGen2(
        tracking_uri=mlflow_server.url, experiment=unique("gen2-cache"), alias_cache_seconds=1.0, monotonic=monotonic
    ) as standin:
        await standin.start(path)
        async with Gen2Client(standin.url) as ui:
            first, _ = await ui.summarize("t")
            expires = checks[-1] + 1.0  # the alias was looked up (a miss) by this request
            await operator_mlflow.set_alias(prompt, "champion", "2")  # the promotion's call
            served: list[tuple[float, str]] = []
            deadline = time.monotonic() + 3.0
            while time.monotonic() < deadline:
                said, _ = await ui.summarize("t")
                served.append((checks[-1], texts[said]))
                await asyncio.sleep(0.1)

    assert texts[first] == "1"
    cached = [version for at, version in served if at < expires]
    fresh = [version for at, version in served if at >= expires]
    assert cached, "no request came between the move and the cache's expiry (a very slow machine)"
    assert set(cached) == {"1"}, "the moved alias was served before the cache expired"
    assert fresh, "no request after the cache expired"
    assert set(fresh) == {"2"}, "the old champion was still served after the cache expired"
    assert await operator_mlflow.alias_version(prompt, "champion") == "2"
