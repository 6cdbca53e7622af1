"""A pass that died between the config write and the roll: the next pass rolls instead of waiting forever."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from canopy_operator.api.status import PromptExperimentStatus
from canopy_operator.core.readings import FeedbackLog, Reading, VoteLog, Window
from canopy_operator.core.values import ManagedKeys
from canopy_operator.delivery.base import DeliveryTraits, SourceState, WriteResult
from canopy_operator.service.reconcile import Ports, reconcile
from canopy_operator.service.report import Report
from canopy_operator.sources.canopy.models import AbFeedbackList, FeedbackList
from canopy_operator.sources.prompts import ConfigTextPrompts

CHAMPION = "Summarize the following text in a clear and detailed manner:\n"
CHALLENGER = "Provide a brief, concise summary:\n"
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


class Killed(BaseException):
    """The process died here (a BaseException: nothing in the pass may catch it)."""


class RollingDelivery:
    """The managed keys of a ConfigMap plus what the running backend was started with (the last roll)."""

    traits = DeliveryTraits()

    def __init__(self) -> None:
        self.keys = ManagedKeys(prompt=CHAMPION, prompt_b=None, feedback_enabled=False, ab_testing_enabled=False)
        self.live = self.keys
        self.die_before_roll = False
        self.writes = 0
        self.rolls = 0

    async def read(self) -> SourceState:
        return SourceState(keys=self.keys, text="", version=str(self.writes), argo_managed=False)

    async def rollout_pending(self) -> str | None:
        return None

    async def write(
        self, desired: ManagedKeys, *, ensure_rolled: bool = False, record: str | None = None
    ) -> WriteResult:
        changed = desired != self.keys
        if changed:
            self.keys = desired
            self.writes += 1
            if self.die_before_roll:
                raise Killed
        rolled = (changed or ensure_rolled) and self.live != self.keys
        if rolled:
            self.live = self.keys
            self.rolls += 1
        return WriteResult(changed=changed, revision="config-sha256:0123456789ab", rolled=rolled)


class LiveBackend:
    """Reports the flags of the last rolled config."""

    where = "http://canopy-backend:8000"

    def __init__(self, delivery: RollingDelivery) -> None:
        self.delivery = delivery

    async def flags(self) -> dict[str, bool]:
        live = self.delivery.live
        return {"feedback": bool(live.feedback_enabled), "ab_testing": bool(live.ab_testing_enabled)}

    async def ab_ready(self) -> bool:
        return self.delivery.live.prompt_b is not None

    async def read(self, window: Window) -> Reading:
        ab = AbFeedbackList(total=0, prompt_a_wins=0, prompt_b_wins=0, ties=0, entries=[])
        fb = FeedbackList(total=0, feedback=[])
        return Reading(VoteLog(ab.to_entries(), ab.total), FeedbackLog(fb.to_entries(), fb.total))


async def run_pass(status: dict[str, Any], delivery: RollingDelivery, written: list[dict[str, Any]]) -> Report:
    spec = {"backend": {"url": "http://canopy-backend:8000"}, "challenger": {"prompt": CHALLENGER}}
    obj = {"metadata": {"generation": 1, "namespace": "user1-test"}, "spec": spec, "status": status}

    async def factory(*_: Any) -> RollingDelivery:
        return delivery

    async def persist(st: PromptExperimentStatus) -> None:
        written.append(st.model_dump(mode="json", by_alias=True, exclude_none=True))

    ports = Ports(factory, lambda _: LiveBackend(delivery), lambda _: ConfigTextPrompts(), persist, lambda: NOW)
    return await reconcile(obj, ports)


async def test_config_written_but_not_rolled_is_rolled_by_the_next_pass() -> None:
    delivery = RollingDelivery()
    delivery.die_before_roll = True
    written: list[dict[str, Any]] = []
    with pytest.raises(Killed):
        await run_pass({}, delivery, written)
    assert delivery.writes == 1
    assert delivery.rolls == 0
    delivery.die_before_roll = False
    report = await run_pass(written[-1], delivery, written)  # the restarted operator reads the intent
    assert delivery.writes == 1  # the ConfigMap is not written again
    assert delivery.rolls == 1  # but the backend is restarted with it
    assert report.status.phase == "Running"
    assert report.status.delivery.revision == "config-sha256:0123456789ab"


async def test_adopted_config_already_live_is_not_rolled_again() -> None:
    delivery = RollingDelivery()
    written: list[dict[str, Any]] = []
    await run_pass({}, delivery, written)
    assert (delivery.writes, delivery.rolls) == (1, 1)
    report = await run_pass(written[0], delivery, written)  # died after the roll, before the status write
    assert (delivery.writes, delivery.rolls) == (1, 1)
    assert report.status.phase == "Running"
