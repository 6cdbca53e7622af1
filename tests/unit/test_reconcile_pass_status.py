"""One reconcile pass against fakes: what status it reports when the backend fails and while config changes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from canopy_operator.api.status import PromptExperimentStatus
from canopy_operator.sources.canopy.errors import BackendProtocolError
from canopy_operator.sources.canopy.models import AbFeedbackList, FeedbackList
from canopy_operator.core.values import ManagedKeys
from canopy_operator.handlers.reconcile import Pass, Report
from canopy_operator.k8s.configmap_delivery import SourceState, WriteResult

CHAMPION = "Summarize the following text in a clear and detailed manner:\n"
CHALLENGER = "Provide a brief, concise summary:\n"
URL = "http://canopy-backend.user1-test:8000"
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


class FakeDelivery:
    """The managed keys of one config source; a write replaces them."""

    def __init__(self) -> None:
        self.keys = ManagedKeys(prompt=CHAMPION, prompt_b=None, feedback_enabled=False, ab_testing_enabled=False)
        self.rollout: str | None = None

    async def read(self) -> SourceState:
        return SourceState(keys=self.keys, text="", version="1", argo_managed=False)

    async def rollout_pending(self) -> str | None:
        return self.rollout

    async def write(self, desired: ManagedKeys, *, ensure_rolled: bool = False) -> WriteResult:
        self.keys = desired
        return WriteResult(changed=True, revision="config-sha256:0123456789ab", rolled=True)


class FakeBackend:
    """A backend that serves whatever the delivery last wrote; ``garbage`` makes its vote list unreadable."""

    def __init__(self, delivery: FakeDelivery) -> None:
        self.delivery = delivery
        self.garbage = False

    async def flags(self) -> dict[str, bool]:
        keys = self.delivery.keys
        return {"feedback": bool(keys.feedback_enabled), "ab_testing": bool(keys.ab_testing_enabled)}

    async def ab_ready(self) -> bool:
        return self.delivery.keys.prompt_b is not None

    async def ab_feedback(self) -> AbFeedbackList:
        if self.garbage:
            raise BackendProtocolError("GET /feedback/ab", "unexpected answer at entries.0.id: Input should be an int")
        return AbFeedbackList(total=0, prompt_a_wins=0, prompt_b_wins=0, ties=0, entries=[])

    async def feedback(self) -> FeedbackList:
        return FeedbackList(total=0, feedback=[])


def body(status: dict[str, Any] | None, challenger: str = CHALLENGER, generation: int = 1) -> dict[str, Any]:
    spec = {"backend": {"url": URL}, "challenger": {"prompt": challenger}, "analysis": {"interval": "5s"}}
    return {"metadata": {"generation": generation}, "spec": spec, "status": status or {}}


async def run_pass(
    obj: dict[str, Any], delivery: FakeDelivery, backend: FakeBackend, written: list[PromptExperimentStatus]
) -> Report:
    async def factory(*_: Any) -> FakeDelivery:
        return delivery

    async def persist(status: PromptExperimentStatus) -> None:
        written.append(status)

    return await Pass(obj, factory, lambda _: backend, persist, lambda: NOW).run()


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
    delivery.rollout = None
    second = await run_pass(body(dump(first.status)), delivery, backend, [])
    assert second.status.phase == "Running"
    assert second.status.delivery.verified_at is not None
