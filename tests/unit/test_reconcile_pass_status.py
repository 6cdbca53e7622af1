"""One reconcile pass against fakes: what status it reports when the backend fails and while config changes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from canopy_operator.api.spec import PromptExperimentSpec
from canopy_operator.api.status import PromptExperimentStatus
from canopy_operator.core.readings import FeedbackLog, Reading, VoteLog, VoteTally, Window
from canopy_operator.core.values import ManagedKeys
from canopy_operator.delivery.base import DeliveryTraits, SourceState, WriteResult
from canopy_operator.service.reconcile import Ports, reconcile
from canopy_operator.service.report import Report
from canopy_operator.sources.canopy.errors import BackendProtocolError
from canopy_operator.sources.canopy.models import AbFeedbackList, FeedbackList
from canopy_operator.sources.prompts import ConfigTextPrompts

CHAMPION = "Summarize the following text in a clear and detailed manner:\n"
CHALLENGER = "Provide a brief, concise summary:\n"
URL = "http://canopy-backend.user1-test:8000"
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


class FakeDelivery:
    """The managed keys of one config source; a write replaces them."""

    traits = DeliveryTraits()

    def __init__(self) -> None:
        self.keys = ManagedKeys(prompt=CHAMPION, prompt_b=None, feedback_enabled=False, ab_testing_enabled=False)
        self.rollout: str | None = None

    async def read(self) -> SourceState:
        return SourceState(keys=self.keys, text="", version="1", argo_managed=False)

    async def rollout_pending(self) -> str | None:
        return self.rollout

    async def write(
        self, desired: ManagedKeys, *, ensure_rolled: bool = False, record: str | None = None
    ) -> WriteResult:
        self.keys = desired
        return WriteResult(changed=True, revision="config-sha256:0123456789ab", rolled=True)


class FakeBackend:
    """A backend that serves whatever the delivery last wrote; ``garbage`` makes its vote list unreadable."""

    where = URL

    def __init__(self, delivery: FakeDelivery) -> None:
        self.delivery = delivery
        self.garbage = False
        self.probes = 0

    async def flags(self) -> dict[str, bool]:
        self.probes += 1
        keys = self.delivery.keys
        return {"feedback": bool(keys.feedback_enabled), "ab_testing": bool(keys.ab_testing_enabled)}

    async def ab_ready(self) -> bool:
        return self.delivery.keys.prompt_b is not None

    async def read(self, window: Window) -> Reading:
        if self.garbage:
            raise BackendProtocolError("GET /feedback/ab", "unexpected answer at entries.0.id: Input should be an int")
        ab = AbFeedbackList(total=0, prompt_a_wins=0, prompt_b_wins=0, ties=0, entries=[])
        fb = FeedbackList(total=0, feedback=[])
        return Reading(VoteLog(ab.to_entries(), ab.total), FeedbackLog(fb.to_entries(), fb.total))


def body(status: dict[str, Any] | None, challenger: str = CHALLENGER, generation: int = 1) -> dict[str, Any]:
    spec = {"backend": {"url": URL}, "challenger": {"prompt": challenger}, "analysis": {"interval": "5s"}}
    return {"metadata": {"generation": generation, "namespace": "user1-test"}, "spec": spec, "status": status or {}}


async def run_pass(
    obj: dict[str, Any], delivery: FakeDelivery, backend: FakeBackend, written: list[PromptExperimentStatus]
) -> Report:
    async def factory(*_: Any) -> FakeDelivery:
        return delivery

    async def persist(status: PromptExperimentStatus) -> None:
        written.append(status)

    ports = Ports(factory, lambda _: backend, lambda _: ConfigTextPrompts(), persist, lambda: NOW)
    return await reconcile(obj, ports)


def dump(status: PromptExperimentStatus) -> dict[str, Any]:
    return status.model_dump(mode="json", by_alias=True, exclude_none=True)


async def running() -> tuple[FakeDelivery, FakeBackend, dict[str, Any]]:
    delivery = FakeDelivery()
    backend = FakeBackend(delivery)
    report = await run_pass(body(None), delivery, backend, [])
    assert report.status.phase == "Running"
    return delivery, backend, dump(report.status)


async def test_garbage_vote_list_degrades_with_the_reason_when_the_test_runs() -> None:
    delivery, backend, status = await running()
    backend.garbage = True
    report = await run_pass(body(status), delivery, backend, [])
    degraded = {c.type: c for c in report.status.conditions}["Degraded"]
    assert report.status.phase == "Degraded"
    assert report.failed  # the daemon backs off
    assert degraded.status == "True"
    assert degraded.reason == "BackendProtocolError"
    assert URL in degraded.message
    assert "GET /feedback/ab" in degraded.message
    assert report.status.votes == PromptExperimentStatus.model_validate(status).votes


async def test_new_test_is_not_shown_running_before_its_config_is_verified() -> None:
    delivery, backend, status = await running()
    old_test = status["test"]["id"]
    written: list[PromptExperimentStatus] = []
    await run_pass(
        body(status, challenger="Summarize in one short paragraph:\n", generation=2), delivery, backend, written
    )
    intent = written[0]  # persisted before the config write
    assert intent.test is not None
    assert intent.test.id != old_test
    assert intent.phase == "Progressing"
    assert {c.type: c.status for c in intent.conditions}["Ready"] == "False"


async def test_first_delivery_is_shown_progressing_before_the_config_is_written() -> None:
    delivery = FakeDelivery()
    written: list[PromptExperimentStatus] = []
    await run_pass(body(None), delivery, FakeBackend(delivery), written)
    intent = written[0]  # persisted before the config write
    assert intent.test is not None
    assert intent.phase == "Progressing"


async def test_flags_count_only_once_the_rollout_is_complete() -> None:
    delivery = FakeDelivery()
    delivery.rollout = "Deployment canopy-backend: 0 of 1 replicas run the new config"
    backend = FakeBackend(delivery)  # serves the new flags at once, like an old pod with unchanged flags
    first = await run_pass(body(None), delivery, backend, [])
    assert first.status.phase == "Progressing"
    assert first.status.delivery.verified_at is None
    assert backend.probes == 0  # old pods answer meanwhile: nothing they say could verify the config
    delivery.rollout = None
    second = await run_pass(body(dump(first.status)), delivery, backend, [])
    assert second.status.phase == "Running"
    assert second.status.delivery.verified_at is not None


async def test_unreadable_status_degrades_naming_the_field_and_keeps_everything() -> None:
    delivery, backend, status = await running()
    status["votes"]["challengerWins"] = "many"  # not a count: someone edited the status by hand
    written: list[PromptExperimentStatus] = []
    report = await run_pass(body(status), delivery, backend, written)
    assert report.failed
    assert written == []  # no intent write, no config write: nothing starts over
    raw = report.raw_status
    assert raw is not None
    assert raw["phase"] == "Degraded"
    (degraded,) = [c for c in raw["conditions"] if c["type"] == "Degraded"]
    assert degraded["reason"] == "StatusUnreadable"
    assert "status.votes.challengerWins" in degraded["message"]
    assert {k: v for k, v in raw.items() if k not in ("phase", "message", "conditions")} == {
        k: v for k, v in status.items() if k not in ("phase", "message", "conditions")
    }
    assert {c["type"] for c in raw["conditions"]} == {c["type"] for c in status["conditions"]}


class TallySource(FakeBackend):
    """A recounting source (as MLflow assessments or Phoenix annotations are): the window's counts each poll."""

    def __init__(self, delivery: FakeDelivery, challenger: int, champion: int) -> None:
        super().__init__(delivery)
        self.tally = VoteTally(challenger_wins=challenger, champion_wins=champion)
        self.windows: list[Window] = []

    async def read(self, window: Window) -> Reading:
        self.windows.append(window)
        return Reading(self.tally, FeedbackLog((), 0))


async def test_a_recounting_vote_source_decides_through_the_same_pass() -> None:
    delivery, _, status = await running()
    source = TallySource(delivery, challenger=25, champion=5)
    report = await run_pass(body(status), delivery, source, [])
    assert (report.status.votes.challenger_wins, report.status.votes.champion_wins) == (25, 5)
    assert report.status.phase == "Promoting"  # 25-5 decides (decision-rule.md golden row)
    assert report.decision == "challenger"
    again = await run_pass(body(dump(report.status)), delivery, source, [])
    assert (again.status.votes.challenger_wins, again.status.votes.champion_wins) == (25, 5)  # not added twice
    test = PromptExperimentStatus.model_validate(status).test
    assert test is not None
    assert source.windows[0].started_at == test.started_at


async def test_a_backend_in_another_namespace_degrades_before_anything_is_sent_or_written() -> None:
    delivery = FakeDelivery()
    backend = FakeBackend(delivery)
    calls: list[str] = []

    def make_backend(spec: PromptExperimentSpec) -> FakeBackend:
        calls.append(spec.backend.url)
        return backend

    async def factory(*_: Any) -> FakeDelivery:
        calls.append("delivery")
        return delivery

    written: list[PromptExperimentStatus] = []

    async def persist(status: PromptExperimentStatus) -> None:
        written.append(status)

    obj = body(None)
    obj["spec"]["backend"]["url"] = "http://canopy-backend.user2-test:8000"  # another team's backend
    ports = Ports(factory, make_backend, lambda _: ConfigTextPrompts(), persist, lambda: NOW)
    report = await reconcile(obj, ports)
    degraded = {c.type: c for c in report.status.conditions}["Degraded"]
    assert (report.status.phase, degraded.reason) == ("Degraded", "BackendNotAllowed")
    assert "spec.backend.url names canopy-backend.user2-test:8000" in degraded.message
    assert calls == []  # no backend client made, no config source read
    assert written == []
    assert delivery.keys.prompt_b is None


class ExplodingDelivery(FakeDelivery):
    """A delivery whose read fails in a way nobody planned for (deep nesting, a shape bug)."""

    def __init__(self, exc: Exception) -> None:
        super().__init__()
        self.exc = exc

    async def read(self) -> SourceState:
        raise self.exc


@pytest.mark.parametrize(
    ("exc", "named"),
    [
        (RecursionError("maximum recursion depth exceeded while calling a Python object"), "RecursionError: maximum"),
        (TypeError("'str' object is not a mapping " + "x" * 5000), "TypeError: 'str' object is not a mapping"),
    ],
)
async def test_an_unexpected_exception_degrades_with_internal_error_and_backs_off(exc: Exception, named: str) -> None:
    delivery = ExplodingDelivery(exc)
    report = await run_pass(body(None), delivery, FakeBackend(delivery), [])
    degraded = {c.type: c for c in report.status.conditions}["Degraded"]
    assert (report.status.phase, degraded.reason) == ("Degraded", "InternalError")
    assert degraded.message.startswith(named)
    assert len(degraded.message) <= 240  # the type and a short message, never a page of remote text
    assert report.failed  # the daemon backs off
