"""The operator's MLflow and Phoenix adapters against real servers seeded like the course's Generation 2 backend
(and its Phoenix-instrumented variant): counts per arm equal the seeded votes (a late vote on an old trace and
a judge's vote included), thumbs-down traces reach the feedback log, an alias moved mid-test stops the test,
the promotion moves the alias exactly once across a crash between the move and the status write and records the
version to roll back to, and the Phoenix span selector counts parent-span votes only when asked."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from canopy_operator.api.spec import MlflowRegistryPrompts, PromptExperimentSpec
from canopy_operator.core.readings import VoteTally, Window
from canopy_operator.core.values import ManagedKeys
from canopy_operator.service.reconcile import Ports, reconcile
from canopy_operator.sources.http import JsonApi
from canopy_operator.sources.mlflow import client as client_module
from canopy_operator.sources.mlflow.client import MlflowClient
from canopy_operator.sources.mlflow.registry import MlflowRegistryStore
from canopy_operator.sources.mlflow.source import MlflowVotes
from canopy_operator.sources.phoenix.client import PhoenixClient
from canopy_operator.sources.phoenix.source import PhoenixVotes
from tests.support.mlflow_server import MlflowServer
from tests.support.phoenix_server import PhoenixServer
from tests.unit.test_reconcile_pass_status import FakeDelivery, TallySource, dump

pytestmark = [pytest.mark.timeout(1500)]
HOUR = timedelta(hours=1)
MAPPING = {"a": "champion", "b": "challenger"}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def mlflow_api(mlflow_server: MlflowServer) -> AsyncIterator[JsonApi]:
    async with JsonApi("MLflow", mlflow_server.url, 30.0, 32 * 1024 * 1024) as api:
        yield api


def ab_votes(challenger: int, champion: int) -> list[dict[str, Any]]:
    """Users preferring the challenger ``challenger`` times and the champion ``champion`` times (the challenger
    is shown at b, so a preference for b maps to challenger)."""
    picks = ["b"] * challenger + ["a"] * champion
    return [{"op": "ab_vote", "preference": p, "prompt_mapping": MAPPING} for p in picks]


@pytest.mark.mlflow
async def test_mlflow_votes_per_arm_equal_the_seeded_ones(mlflow_server: MlflowServer, mlflow_api: JsonApi) -> None:
    experiment = unique("gen2-votes")
    old = mlflow_server.seed(
        [{"op": "ab_request", "start_time_ms": int((datetime.now(UTC) - 2 * HOUR).timestamp() * 1000)}],
        experiment=experiment,
    )
    started = datetime.now(UTC) - timedelta(minutes=5)
    steps = [
        *ab_votes(challenger=7, champion=3),
        # An LLM judge's preference must not count; "unknown" arms are not votes for either.
        {"op": "ab_vote", "preference": "b", "prompt_mapping": MAPPING, "source": {"type": "LLM_JUDGE", "id": "judge"}},
        {"op": "ab_vote", "preference": "a", "prompt_mapping": {"a": "unknown", "b": "challenger"}},
        {"op": "summarize"},
        {"op": "thumbs", "request": 12, "rating": "thumbs_down", "comment": "too vague"},
        {"op": "summarize"},
        {"op": "thumbs", "request": 14, "rating": "thumbs_up"},
    ]
    seeded = mlflow_server.seed(steps, experiment=experiment)
    experiment_id = seeded["experiment_id"]
    votes = MlflowVotes(MlflowClient(mlflow_api), experiment_id, where=mlflow_server.url)

    reading = await votes.read(Window(started_at=started))
    assert reading.votes == VoteTally(challenger_wins=7, champion_wins=3)
    assert votes.last_unmapped == 1
    assert [e.rating for e in reading.feedback.entries] == ["thumbs_down"]
    assert reading.feedback.entries[0].comment == "too vague"
    assert reading.feedback.entries[0].input_text  # the request's text, from the trace

    # A vote on a trace older than the window is outside the test; recounting is idempotent.
    mlflow_server.seed(
        [
            {
                "op": "ab_feedback",
                "trace_id_a": old["steps"][0]["trace_id_a"],
                "trace_id_b": old["steps"][0]["trace_id_b"],
                "preference": "b",
                "prompt_mapping": MAPPING,
            }
        ],
        experiment=experiment,
    )
    again = await votes.read(Window(started_at=started))
    assert again.votes == VoteTally(challenger_wins=7, champion_wins=3)
    # A late vote on an old trace of the window counts on the next poll.
    late = mlflow_server.seed([{"op": "ab_request"}], experiment=experiment)["steps"][0]
    assert (await votes.read(Window(started_at=started))).votes == VoteTally(challenger_wins=7, champion_wins=3)
    mlflow_server.seed(
        [
            {
                "op": "ab_feedback",
                "trace_id_a": late["trace_id_a"],
                "trace_id_b": late["trace_id_b"],
                "preference": "b",
                "prompt_mapping": MAPPING,
            }
        ],
        experiment=experiment,
    )
    assert (await votes.read(Window(started_at=started))).votes == VoteTally(challenger_wins=8, champion_wins=3)


@pytest.mark.mlflow
async def test_mlflow_search_pages_through_more_than_one_page(
    mlflow_server: MlflowServer, mlflow_api: JsonApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    experiment = unique("gen2-pages")
    seeded = mlflow_server.seed(ab_votes(challenger=4, champion=3), experiment=experiment)
    monkeypatch.setattr(client_module, "PAGE_SIZE", 2)  # seven votes over four pages, each trace once
    votes = MlflowVotes(MlflowClient(mlflow_api), seeded["experiment_id"], where=mlflow_server.url)
    reading = await votes.read(Window(started_at=datetime.now(UTC) - HOUR))
    assert reading.votes == VoteTally(challenger_wins=4, champion_wins=3)


class CountingClient(MlflowClient):
    """The real client, counting the alias moves it makes."""

    def __init__(self, api: JsonApi) -> None:
        super().__init__(api)
        self.moves: list[tuple[str, str, str]] = []

    async def set_alias(self, name: str, alias: str, version: str) -> None:
        self.moves.append((name, alias, version))
        await super().set_alias(name, alias, version)


@pytest.mark.mlflow
async def test_registry_alias_moved_mid_test_stops_it_and_promotion_moves_once_across_a_crash(
    mlflow_server: MlflowServer, mlflow_api: JsonApi
) -> None:
    name = unique("summarization")
    mlflow_server.seed(
        [
            {"op": "register_prompt", "name": name, "template": "Summarize: {{text}}", "alias": "champion"},
            {"op": "register_prompt", "name": name, "template": "Summarize in one line: {{text}}"},
            {"op": "register_prompt", "name": name, "template": "Summarize briefly: {{text}}"},
        ]
    )
    client = CountingClient(mlflow_api)
    config = MlflowRegistryPrompts(tracking_url=mlflow_server.url, name=name, alias_cache="0s")
    spec = {
        "backend": {"url": "http://canopy-backend:8000", "generation": 2},
        "challenger": {"version": 3},
        "prompts": {
            "store": "MLflowRegistry",
            "mlflow": {"trackingUrl": mlflow_server.url, "name": name, "aliasCache": "0s"},
        },
        "analysis": {"interval": "5s"},
    }
    delivery = FakeDelivery()
    delivery.keys = ManagedKeys("champion", None, False, False)
    source = TallySource(delivery, challenger=0, champion=0)
    status: dict[str, Any] = {}
    crash = {"armed": False}

    def failpoint(point: str) -> None:
        if point == "after-store-promote" and crash["armed"]:
            crash["armed"] = False
            raise SystemExit("killed between the alias move and the status write")

    async def run() -> Any:
        nonlocal status

        async def factory(*_: Any) -> FakeDelivery:
            return delivery

        async def persist(_: Any) -> None:
            return None

        ports = Ports(
            factory,
            lambda _: source,
            lambda s: MlflowRegistryStore(client, config),
            persist,
            lambda: datetime.now(UTC),
            failpoint=failpoint,
            backend_hosts=("127.0.0.1",),
        )
        report = await reconcile(
            {"metadata": {"generation": 1, "namespace": "ns"}, "spec": spec, "status": status}, ports
        )
        status = dump(report.status)
        return report

    started = await run()
    assert started.status.phase == "Running"
    assert started.status.test is not None
    assert (started.status.test.champion_version, started.status.test.challenger_version) == ("1", "3")

    # Someone moves the alias by hand during the test: the test stops, nothing is pooled.
    await client.set_alias(name, "champion", "2")
    client.moves.clear()
    source.tally = VoteTally(challenger_wins=25, champion_wins=5)
    stopped = await run()
    assert {c.type: c.reason for c in stopped.status.conditions}.get("Degraded") == "PromptAliasMoved"
    assert stopped.status.votes.challenger_wins == 0

    # Moved back, the test goes on and decides; the promotion moves the alias once although the operator dies
    # right after the move.
    await client.set_alias(name, "champion", "1")
    client.moves.clear()
    decided = await run()
    assert decided.status.phase == "Promoting"
    crash["armed"] = True
    with pytest.raises(SystemExit):
        await run()
    assert client.moves == [(name, "champion", "3")]
    done = await run()
    assert done.status.phase == "Concluded"
    assert client.moves == [(name, "champion", "3")]
    assert await client.alias_version(name, "champion") == "3"
    (record,) = done.status.promotions
    assert record.previous_version == "1"
    assert PromptExperimentSpec.model_validate(spec).challenger_ref == "3"


@pytest.mark.phoenix
async def test_phoenix_counts_llm_span_votes_and_parent_span_votes_only_when_asked(
    phoenix_server: PhoenixServer,
) -> None:
    project = unique("canopy")
    started = datetime.now(UTC) - timedelta(minutes=5)
    vote = {"op": "vote", "annotation_name": "ab_preference", "score": 1}
    steps = [
        {**vote, "metadata": {"arm": "challenger"}, "identifier": "u1:r1"},
        {**vote, "metadata": {"arm": "challenger"}, "identifier": "u2:r2"},
        {**vote, "metadata": {"arm": "champion"}, "identifier": "u3:r3"},
        {**vote, "metadata": {"arm": "challenger"}, "identifier": "u4:r4", "on": "parent"},
        {**vote, "metadata": {"arm": "challenger"}, "identifier": "j:r5", "annotator_kind": "LLM"},
        {
            "op": "vote",
            "annotation_name": "user_feedback",
            "label": "thumbs_down",
            "score": 0,
            "explanation": "wrong",
            "identifier": "u6:r6",
        },
    ]
    seeded = phoenix_server.seed(steps, project=project)
    # The same user re-posts their vote on request 3 (same identifier): it replaces the first.
    phoenix_server.seed(
        [
            {
                "op": "annotate",
                "span_id": seeded["steps"][2]["llm_span_id"],
                "annotation_name": "ab_preference",
                "score": 1,
                "metadata": {"arm": "challenger"},
                "identifier": "u3:r3",
            }
        ],
        project=project,
    )
    async with JsonApi("Phoenix", phoenix_server.url, 30.0, 32 * 1024 * 1024) as api:
        client = PhoenixClient(api, project)
        on_llm = PhoenixVotes(
            client, where=phoenix_server.url, vote_name="ab_preference", feedback_name="user_feedback"
        )
        reading = await on_llm.read(Window(started_at=started))
        assert reading.votes == VoteTally(challenger_wins=3, champion_wins=0)
        assert [(e.rating, e.comment) for e in reading.feedback.entries] == [("thumbs_down", "wrong")]
        on_parent = PhoenixVotes(
            client,
            where=phoenix_server.url,
            vote_name="ab_preference",
            feedback_name="user_feedback",
            count_on="ParentSpan",
        )
        assert (await on_parent.read(Window(started_at=started))).votes == VoteTally(challenger_wins=1, champion_wins=0)
        empty = PhoenixVotes(
            PhoenixClient(api, unique("nobody")), where="x", vote_name="ab_preference", feedback_name="f"
        )
        assert (await empty.read(Window(started_at=started))).votes == VoteTally(challenger_wins=0, champion_wins=0)
