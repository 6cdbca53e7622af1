"""The experiments' events are posted in the background, in order, one at a time, within bounds
(``k8s/events.EventPoster``, issue #20)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pytest

from canopy_operator.k8s.errors import Unavailable
from canopy_operator.k8s.events import COMPONENT, MESSAGE_LIMIT, EventPoster, ObjectRef

REF = ObjectRef("canopy.genaiops.io/v1alpha1", "PromptExperiment", "team-a", "exp", "uid-1")
NOW = datetime(2026, 12, 1, 3, 0, 0, 123456, tzinfo=UTC)


class Api:
    def __init__(self) -> None:
        self.bodies: list[tuple[str, Mapping[str, Any]]] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.release = asyncio.Event()
        self.release.set()
        self.fail_reasons: set[str] = set()

    async def create_event(self, namespace: str, body: Mapping[str, Any]) -> None:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await self.release.wait()
            await asyncio.sleep(0)
            if body["reason"] in self.fail_reasons:
                raise Unavailable("create Event: no answer within 30s")
            self.bodies.append((namespace, body))
        finally:
            self.in_flight -= 1


async def test_events_are_posted_in_order_one_at_a_time_and_a_pass_never_waits() -> None:
    api = Api()
    api.release.clear()
    poster = EventPoster(api, instance="pod-1", now=lambda: NOW)
    poster.start()
    for i in range(20):
        poster.post(REF, "Normal", f"Step{i}", f"step {i}")  # returns at once while the API holds the first
    assert poster.waiting >= 19
    api.release.set()
    await poster.aclose()
    assert [b["reason"] for _, b in api.bodies] == [f"Step{i}" for i in range(20)]
    assert api.most_in_flight == 1
    assert poster.posted == 20


async def test_an_event_body_is_a_core_event_about_the_experiment() -> None:
    api = Api()
    poster = EventPoster(api, instance="pod-1", now=lambda: NOW)
    poster.start()
    poster.post(REF, "Warning", "ConfigDrift", "x" * (MESSAGE_LIMIT + 10))
    await poster.aclose()
    ((namespace, body),) = api.bodies
    assert namespace == "team-a"
    assert body["involvedObject"] == {
        "apiVersion": "canopy.genaiops.io/v1alpha1",
        "kind": "PromptExperiment",
        "namespace": "team-a",
        "name": "exp",
        "uid": "uid-1",
    }
    assert (body["type"], body["reason"]) == ("Warning", "ConfigDrift")
    assert len(body["message"]) == MESSAGE_LIMIT
    assert body["source"] == {"component": COMPONENT}
    assert (body["reportingComponent"], body["reportingInstance"]) == (COMPONENT, "pod-1")
    assert body["firstTimestamp"] == body["lastTimestamp"] == "2026-12-01T03:00:00Z"
    assert body["metadata"] == {"generateName": "exp.", "namespace": "team-a"}


async def test_a_failed_post_is_dropped_and_the_next_one_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    api = Api()
    api.fail_reasons = {"Bad"}
    poster = EventPoster(api)
    poster.start()
    poster.post(REF, "Normal", "Bad", "refused")
    poster.post(REF, "Normal", "Good", "posted")
    await poster.aclose()
    assert [b["reason"] for _, b in api.bodies] == ["Good"]
    assert (poster.posted, poster.failed) == (1, 1)
    assert "event Bad of team-a/exp not posted" in caplog.text


async def test_a_full_queue_drops_new_events_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    api = Api()
    poster = EventPoster(api, limit=3)  # not started: nothing leaves the queue
    for i in range(5):
        poster.post(REF, "Normal", f"Step{i}", "")
    assert (poster.waiting, poster.dropped) == (3, 2)
    assert "1 events dropped: more than 3 waited to be posted" in caplog.text
    poster.start()
    await poster.aclose()
    assert [b["reason"] for _, b in api.bodies] == ["Step0", "Step1", "Step2"]


async def test_shutdown_drains_within_its_bound_and_drops_the_rest(caplog: pytest.LogCaptureFixture) -> None:
    api = Api()
    api.release.clear()  # the API server never answers
    poster = EventPoster(api)
    poster.start()
    poster.post(REF, "Normal", "Stuck", "")
    poster.post(REF, "Normal", "Waiting", "")
    loop = asyncio.get_running_loop()
    started = loop.time()
    await poster.aclose(drain=0.2)
    assert loop.time() - started < 2.0
    assert api.bodies == []
    assert poster.waiting == 0
    assert "1 events not posted at shutdown" in caplog.text


async def test_an_event_posted_after_shutdown_is_dropped_not_kept() -> None:
    api = Api()
    poster = EventPoster(api)
    poster.start()
    await poster.aclose()
    poster.post(REF, "Normal", "Late", "")
    assert (poster.waiting, poster.dropped) == (0, 1)
