"""Prompts in the MLflow registry, through the unchanged reconcile pass: arms pinned to versions at test start,
a moved alias stops the test without pooling votes, promotion moves the alias exactly once (across a crash
between the move and the status write), completes after the application's alias cache, and keeps the previous
version for a rollback. The registry here is a fake client; tests/integration/test_mlflow_*.py use the real one."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from canopy_operator.api.spec import PromptExperimentSpec
from canopy_operator.api.status import PromptExperimentStatus
from canopy_operator.core.values import ManagedKeys
from canopy_operator.service.reconcile import Ports, reconcile
from canopy_operator.service.report import Report
from canopy_operator.sources.mlflow.registry import MlflowRegistryStore
from canopy_operator.sources.prompts import StoreRefused
from tests.unit.test_reconcile_pass_status import URL, FakeDelivery, TallySource, dump

NAME = "summarization"
START = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


@dataclass
class FakeRegistry:
    aliases: dict[str, str] = field(default_factory=lambda: {"champion": "3"})
    versions: set[str] = field(default_factory=lambda: {"1", "2", "3", "4", "5"})
    moves: list[tuple[str, str]] = field(default_factory=list)

    async def alias_version(self, name: str, alias: str) -> str | None:
        assert name == NAME
        return self.aliases.get(alias)

    async def version_exists(self, name: str, version: str) -> bool:
        return version in self.versions

    async def set_alias(self, name: str, alias: str, version: str) -> None:
        self.moves.append((alias, version))
        self.aliases[alias] = version


def spec_body(version: int = 5, **mlflow: Any) -> dict[str, Any]:
    return {
        "backend": {"url": URL, "generation": 2},
        "challenger": {"version": version},
        "prompts": {
            "store": "MLflowRegistry",
            "mlflow": {"trackingUrl": "http://mlflow:5000", "name": NAME, **mlflow},
        },
        "analysis": {"interval": "5s"},
    }


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


@dataclass
class World:
    registry: FakeRegistry = field(default_factory=FakeRegistry)
    delivery: FakeDelivery = field(default_factory=FakeDelivery)
    clock: Clock = field(default_factory=Clock)
    status: dict[str, Any] = field(default_factory=dict)
    crash_after_move: bool = False

    def __post_init__(self) -> None:
        self.delivery.keys = ManagedKeys(
            prompt="champion", prompt_b=None, feedback_enabled=False, ab_testing_enabled=False
        )
        self.source = TallySource(self.delivery, challenger=0, champion=0)

    async def run(self, **spec: Any) -> Report:
        async def factory(*_: Any) -> FakeDelivery:
            return self.delivery

        async def persist(_: PromptExperimentStatus) -> None:
            return None

        def failpoint(name: str) -> None:
            if name == "after-store-promote" and self.crash_after_move:
                self.crash_after_move = False
                raise SystemExit("operator killed between the alias move and the status write")

        def store(s: PromptExperimentSpec) -> MlflowRegistryStore:
            assert s.prompts.mlflow is not None
            return MlflowRegistryStore(self.registry, s.prompts.mlflow)

        body = {
            "metadata": {"generation": 1, "namespace": "user1-test"},
            "spec": spec_body(**spec),
            "status": self.status,
        }
        ports = Ports(factory, lambda _: self.source, store, persist, self.clock, failpoint=failpoint)
        report = await reconcile(body, ports)
        self.status = dump(report.status)
        return report


def degraded(report: Report) -> tuple[str, str]:
    condition = {c.type: c for c in report.status.conditions}["Degraded"]
    return condition.reason, condition.message


async def test_the_arms_are_pinned_to_registry_versions_and_served_by_version() -> None:
    world = World()
    report = await world.run()
    assert report.status.phase == "Running"
    test = report.status.test
    assert test is not None
    assert (test.champion_version, test.challenger_version, test.champion_prompt) == ("3", "5", "champion")
    # The config keeps the alias for the champion and names the challenger's version: never latest.
    assert world.delivery.keys == ManagedKeys("champion", "5", True, True)


@pytest.mark.parametrize(
    ("change", "reason", "words"),
    [
        (lambda r: r.aliases.clear(), "PromptAliasMissing", "prompts:/summarization@champion does not exist"),
        (lambda r: r.versions.discard("5"), "PromptVersionMissing", "spec.challenger.version 5"),
        (lambda r: r.aliases.update(champion="5"), "InvalidSpec", "is the version prompts:/summarization@champion"),
    ],
)
async def test_arms_that_cannot_be_pinned_degrade_naming_the_field(change: Any, reason: str, words: str) -> None:
    world = World()
    change(world.registry)
    report = await world.run()
    assert report.status.phase == "Degraded"
    got_reason, message = degraded(report)
    assert got_reason == reason
    assert words in message
    assert world.delivery.keys.prompt_b is None  # nothing delivered


async def test_a_configured_champion_that_is_not_the_alias_is_refused() -> None:
    world = World()
    world.delivery.keys = ManagedKeys("4", None, False, False)  # summarization pinned to a version, not the alias
    report = await world.run()
    assert degraded(report)[0] == "ChampionNotAlias"


async def test_an_alias_moved_mid_test_stops_the_test_without_pooling_votes() -> None:
    world = World()
    await world.run()
    world.source.tally = world.source.tally.__class__(challenger_wins=4, champion_wins=3)
    report = await world.run()
    assert (report.status.votes.challenger_wins, report.status.votes.champion_wins) == (4, 3)
    world.registry.aliases["champion"] = "4"  # someone promoted by hand during the test
    world.source.tally = world.source.tally.__class__(challenger_wins=25, champion_wins=5)
    stopped = await world.run()
    reason, message = degraded(stopped)
    assert (stopped.status.phase, reason) == ("Degraded", "PromptAliasMoved")
    assert "moved from version 3 to version 4" in message
    assert (stopped.status.votes.challenger_wins, stopped.status.votes.champion_wins) == (4, 3)  # not counted
    assert stopped.status.pending_promotion is None
    assert world.registry.moves == []


async def test_promotion_moves_the_alias_once_across_a_crash_and_completes_after_the_alias_cache() -> None:
    world = World()
    await world.run()
    world.source.tally = world.source.tally.__class__(challenger_wins=25, champion_wins=5)
    decided = await world.run()
    assert decided.status.phase == "Promoting"
    assert world.registry.moves == []
    world.crash_after_move = True
    with pytest.raises(SystemExit):
        await world.run()  # flags delivered and verified, alias moved, then the operator dies before writing status
    assert world.registry.moves == [("champion", "5")]
    world.clock.now += timedelta(seconds=5)
    waiting = await world.run()  # the restarted operator: finds the alias already moved, does not move it again
    assert world.registry.moves == [("champion", "5")]
    assert waiting.status.phase == "Promoting"
    assert waiting.status.pending_promotion is not None
    assert waiting.status.pending_promotion.store_moved_at is not None
    world.clock.now += timedelta(seconds=30)
    assert (await world.run()).status.phase == "Promoting"  # the app's client may still cache the old version
    world.clock.now += timedelta(seconds=31)
    done = await world.run()
    assert done.status.phase == "Concluded"
    assert world.registry.moves == [("champion", "5")]
    (record,) = done.status.promotions
    assert (record.outcome, record.previous_version) == ("challenger", "3")
    assert "prompts:/summarization@champion" in record.revision
    assert world.delivery.keys == ManagedKeys("champion", None, True, False)  # the config keeps the alias
    again = await world.run()
    assert again.status.phase == "Concluded"
    assert world.registry.moves == [("champion", "5")]


async def test_a_promotion_never_overwrites_an_alias_someone_else_moved_after_the_decision() -> None:
    world = World()
    await world.run()
    world.source.tally = world.source.tally.__class__(challenger_wins=25, champion_wins=5)
    await world.run()
    world.registry.aliases["champion"] = "2"
    report = await world.run()
    assert degraded(report)[0] == "PromptAliasMoved"
    assert world.registry.moves == []


def test_the_store_is_a_prompt_store_and_latest_is_no_alias() -> None:
    with pytest.raises(ValueError, match="championAlias must not be latest"):
        PromptExperimentSpec.model_validate(spec_body(championAlias="latest"))
    with pytest.raises(ValueError, match="exactly one of prompt"):
        PromptExperimentSpec.model_validate({"challenger": {"prompt": "x", "version": 3}})
    with pytest.raises(ValueError, match=r"goes with spec\.prompts\.store MLflowRegistry"):
        PromptExperimentSpec.model_validate({"challenger": {"version": 3}})
    assert StoreRefused("PromptAliasMoved", "m").reason == "PromptAliasMoved"
