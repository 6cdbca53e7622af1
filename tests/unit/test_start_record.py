"""The start record (``core/startrecord``): a new experiment's original config, carried in its first config write
instead of a status write before it (issue #20), read strictly, and honoured only for its own experiment.

The pass runs over the real ConfigMap delivery (values edited by the real editor) on a fake gateway that keeps
the ConfigMap's annotations and the order of every write.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from canopy_operator.api.status import OriginalConfig, PromptExperimentStatus
from canopy_operator.core import startrecord
from canopy_operator.core.values import ManagedKeys
from canopy_operator.delivery.base import Delivery
from canopy_operator.k8s.errors import Conflict
from canopy_operator.k8s.gateway import ConfigMapView
from canopy_operator.k8s.rollout import RolloutView
from canopy_operator.service.reconcile import Ports, reconcile
from canopy_operator.service.report import Report
from canopy_operator.sources.prompts import ConfigTextPrompts
from tests.support.values_files import FakeGateway, configmap_delivery

UID = "0f8e6d1c-1111-4a4a-9b9b-000000000001"
CHAMPION = "Summarize the following text in a clear and detailed manner:\n"
CHALLENGER = "Provide a brief, concise summary:\n"
VALUES = (
    'LLAMA_STACK_URL: "http://llama-stack:8321"\n'
    f"summarize:\n  enabled: true\n  model: llama32\n  prompt: {json.dumps(CHAMPION)}\n"
)
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
ORIGINAL = OriginalConfig(prompt=CHAMPION, prompt_b=None, feedback_enabled=None, ab_testing_enabled=None)


# --- the record itself (pure) -----------------------------------------------------------------------------------


def test_a_record_reads_back_what_it_was_made_of() -> None:
    original = OriginalConfig(prompt="p\n", prompt_b="b", feedback_enabled=False, ab_testing_enabled=True)
    text = startrecord.encode(UID, original)
    assert text is not None
    assert startrecord.decode(text, UID) == original


def test_no_record_or_another_experiments_record_is_no_original() -> None:
    assert startrecord.decode(None, UID) is None
    other = startrecord.encode("another-uid", ORIGINAL)
    assert startrecord.decode(other, UID) is None


def test_a_record_too_long_to_keep_is_not_made() -> None:
    huge = OriginalConfig(prompt="x" * startrecord.MAX_RECORD_CHARS)
    assert startrecord.encode(UID, huge) is None


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{", "not JSON"),
        ("[1]", "not an object naming its experiment"),
        ('{"v": 1, "original": {}}', "not an object naming its experiment"),
        (json.dumps({"v": 2, "experiment": UID, "original": {}}), "expected exactly v=1"),
        (json.dumps({"v": 1, "experiment": UID, "original": {}, "extra": 1}), "expected exactly v=1"),
        (json.dumps({"v": 1, "experiment": UID, "original": []}), "original: expected at most"),
        (json.dumps({"v": 1, "experiment": UID, "original": {"promptC": "x"}}), "original: expected at most"),
        (json.dumps({"v": 1, "experiment": UID, "original": {"feedbackEnabled": "false"}}), "original.feedbackEnabled"),
        (json.dumps({"v": 1, "experiment": UID, "original": {"prompt": 7}}), "original.prompt"),
        ('{"v":1,"experiment":"' + UID + '","original":{"prompt":"' + "x" * 70_000 + '"}}', "longer than"),
        ("[" * 60_000, "not JSON"),
    ],
)
def test_a_record_of_this_experiment_that_cannot_be_read_is_refused_with_its_reason(text: str, problem: str) -> None:
    with pytest.raises(startrecord.StartRecordInvalid, match=problem):
        startrecord.decode(text, UID)


# --- the pass ----------------------------------------------------------------------------------------------------


class Gateway(FakeGateway):
    """The ConfigMap and the Deployment, whose rollout never finishes (the pass's status waits for it)."""

    def __init__(self, text: str, order: list[str]) -> None:
        super().__init__(text)
        self.order = order

    async def write_configmap_key(self, view: ConfigMapView, key: str, text: str, **kwargs: Any) -> str:
        self.order.append("configmap")
        return await super().write_configmap_key(view, key, text, **kwargs)

    async def get_rollout(self, namespace: str, name: str) -> RolloutView:
        return RolloutView(name, 2, 1, 1, 1, 0, 1)

    @property
    def record(self) -> str | None:
        return self.cm_annotations.get(startrecord.ANNOTATION)


class QuietBackend:
    """The pass must not ask it anything while the rollout runs."""

    where = "http://canopy-backend:8000"

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the backend was asked {name} during the rollout")


def no_fence() -> None:
    return None


async def run_pass(
    gateway: Gateway,
    status: dict[str, Any],
    *,
    uid: str = UID,
    challenger: str = CHALLENGER,
    fence: Callable[[], None] = no_fence,
) -> tuple[Report, list[dict[str, Any]]]:
    spec = {"backend": {"url": "http://canopy-backend:8000"}, "challenger": {"prompt": challenger}}
    meta = {"generation": 1, "namespace": "team-a", "name": "exp", "uid": uid}
    obj = {"metadata": meta, "spec": spec, "status": status}
    persisted: list[dict[str, Any]] = []

    async def delivery(*_: Any) -> Delivery:
        return configmap_delivery(gateway)

    async def persist(st: PromptExperimentStatus) -> None:
        gateway.order.append("status")
        persisted.append(st.model_dump(mode="json", by_alias=True, exclude_none=True))

    ports = Ports(delivery, lambda _: QuietBackend(), lambda _: ConfigTextPrompts(), persist, lambda: NOW, fence=fence)
    return await reconcile(obj, ports), persisted


def as_stored(report: Report) -> dict[str, Any]:
    return report.status.model_dump(mode="json", by_alias=True, exclude_none=True)


async def test_a_first_start_carries_its_original_in_the_config_write_and_writes_no_status_before_it() -> None:
    order: list[str] = []
    gateway = Gateway(VALUES, order)
    report, persisted = await run_pass(gateway, {})
    assert order == ["configmap"], "no status write before (or instead of) the config write"
    assert persisted == []
    assert report.recorded_start, "its status may wait for the rollout as an intent's would"
    assert report.rolling is not None
    assert startrecord.decode(gateway.record, UID) == ORIGINAL
    assert report.status.original == ORIGINAL
    assert "prompt_b" in gateway.text


async def test_after_a_crash_the_original_comes_from_the_record_not_from_the_keys_the_write_changed() -> None:
    order: list[str] = []
    gateway = Gateway(VALUES, order)
    await run_pass(gateway, {})  # the status it computed is lost with the process
    report, persisted = await run_pass(gateway, {})
    assert order == ["configmap"], "the written config is adopted, not written again"
    assert persisted == []
    assert report.status.original == ORIGINAL
    assert report.status.delivery.applied_hash


async def test_another_experiments_record_is_not_taken_for_this_ones() -> None:
    order: list[str] = []
    gateway = Gateway(VALUES, order)
    await run_pass(gateway, {}, uid="another-uid")
    report, _ = await run_pass(gateway, {})
    changed = ManagedKeys(prompt=CHAMPION, prompt_b=CHALLENGER, feedback_enabled=True, ab_testing_enabled=True)
    assert report.status.original == OriginalConfig(
        prompt=changed.prompt,
        prompt_b=changed.prompt_b,
        feedback_enabled=changed.feedback_enabled,
        ab_testing_enabled=changed.ab_testing_enabled,
    ), "without a record of its own the keys as they are now are the original"


async def test_a_broken_record_of_this_experiment_degrades_it_and_nothing_is_written() -> None:
    order: list[str] = []
    gateway = Gateway(VALUES, order)
    gateway.cm_annotations[startrecord.ANNOTATION] = json.dumps({"v": 1, "experiment": UID, "original": {"x": 1}})
    report, persisted = await run_pass(gateway, {})
    assert report.failed
    assert report.status.phase == "Degraded"
    degraded = next(c for c in report.status.conditions if c.type == "Degraded")
    assert (degraded.status, degraded.reason) == ("True", "InvalidStartRecord"), degraded
    assert startrecord.ANNOTATION in degraded.message
    assert "original: expected at most" in degraded.message
    assert order == []
    assert persisted == []


async def test_a_later_start_writes_its_intent_first_and_its_write_drops_the_record() -> None:
    order: list[str] = []
    gateway = Gateway(VALUES, order)
    first, _ = await run_pass(gateway, {})
    stored = as_stored(first)  # as if the rollout finished and the status was written
    order.clear()
    report, persisted = await run_pass(gateway, stored, challenger="Summarize it for a ten-year-old:\n")
    assert order == ["status", "configmap"], "the intent before the write, as for every start with a history"
    assert persisted[0]["phase"] == "Progressing"
    assert not report.recorded_start
    assert gateway.record is None, "the record outlives only the write that made it"


async def test_deleted_or_edited_during_the_first_pass_nothing_is_written() -> None:
    """No intent's resourceVersion precondition fences a recorded write: the watch's view is checked instead."""
    order: list[str] = []
    gateway = Gateway(VALUES, order)

    def deleted() -> None:
        raise Conflict("PromptExperiment team-a/exp: deleted or edited during the pass")

    report, persisted = await run_pass(gateway, {}, fence=deleted)
    assert order == []
    assert persisted == []
    assert report.failed
    assert gateway.record is None


async def test_a_record_the_annotations_have_no_room_for_is_not_written_the_intent_is() -> None:
    order: list[str] = []
    gateway = Gateway(VALUES, order)
    gateway.cm_annotations["kubectl.kubernetes.io/last-applied-configuration"] = "x" * (
        startrecord.MAX_ANNOTATION_BYTES - 100
    )
    report, persisted = await run_pass(gateway, {})
    assert order == ["status", "configmap"]
    assert persisted[0]["original"]["prompt"] == CHAMPION
    assert not report.recorded_start
    assert gateway.record is None


def test_a_record_is_ascii_so_its_length_is_its_size() -> None:
    text = startrecord.encode(UID, OriginalConfig(prompt="Résumé en 中文\n"))
    assert text is not None
    assert text.isascii()
    assert startrecord.decode(text, UID) == OriginalConfig(prompt="Résumé en 中文\n")
