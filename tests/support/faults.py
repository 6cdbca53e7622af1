"""Support for the resilience suite: the backend scene, votes as the UI posts them, and write counters.

- :func:`backend_scene`: ConfigMap ``canopy-config`` + Deployment + a :class:`FakeKubelet` running the
  simulator (restarted on each rollout), torn down afterwards.
- :func:`experiment` / :func:`status_of` / :func:`phase_is`: the PromptExperiment ``exp``.
- :func:`vote`: A/B votes through the simulator's HTTP API, sides shuffled like the UI.
- :class:`WriteLog`: a watch on one object recording every change of one value (the ConfigMap key's
  text, the Deployment's rollout annotation), to count writes exactly (polling could miss one).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import random
import time
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client import ApiClient

from canopy_operator.api.base import GROUP, PLURAL, VERSION
from canopy_operator.delivery.configmap import ROLLOUT_ANNOTATION
from canopy_operator.failpoints import EXIT_CODE
from canopy_operator.sources.canopy.client import CanopyClient
from tests.support.kubelet import RENDERED_VALUES, FakeKubelet, deployment_manifest
from tests.support.operator_process import OperatorProcess

CHALLENGER = "Provide a brief, concise summary:\n"
CHAMPION = "Summarize the following text in a clear and detailed manner:\n"
KEY = "canopy-config.yaml"


@contextlib.asynccontextmanager
async def backend_scene(
    api: ApiClient, namespace: str, workdir: Path, kubelet_class: type[SturdyKubelet] | None = None
) -> AsyncIterator[SturdyKubelet]:
    """The chart's ConfigMap and Deployment, and a kubelet that runs (and restarts) the simulator
    (``kubelet_class``: a :class:`SturdyKubelet` that does it its own way)."""
    core = client.CoreV1Api(api)
    body: dict[str, Any] = {"metadata": {"name": "canopy-config"}, "data": {KEY: RENDERED_VALUES}}
    await core.create_namespaced_config_map(namespace, body)  # type: ignore[arg-type]  # a dict body is accepted
    await client.AppsV1Api(api).create_namespaced_deployment(namespace, deployment_manifest())  # type: ignore[arg-type]  # a dict body is accepted
    kubelet = (kubelet_class or SturdyKubelet)(api, namespace, workdir)
    await kubelet.start()
    try:
        yield kubelet
    finally:
        await kubelet.stop()


def experiment(url: str, *, min_votes: int = 20, **spec: Any) -> dict[str, Any]:
    """PromptExperiment ``exp``: the fastest interval the CRD allows, small minVotes, Auto promotion."""
    body: dict[str, Any] = {
        "backend": {"url": url, "requestTimeout": "2s"},
        "challenger": {"prompt": CHALLENGER},
        "analysis": {"interval": "5s", "minVotes": min_votes},
        "delivery": {"verifyTimeout": "60s"},
    }
    body.update(spec)
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "PromptExperiment", "metadata": {"name": "exp"}, "spec": body}


async def create_experiment(api: ApiClient, namespace: str, body: dict[str, Any]) -> None:
    await client.CustomObjectsApi(api).create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)


async def get_exp(api: ApiClient, namespace: str) -> dict[str, Any]:
    obj: dict[str, Any] = await client.CustomObjectsApi(api).get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "exp"
    )
    return obj


async def status_of(api: ApiClient, namespace: str) -> dict[str, Any]:
    status: dict[str, Any] = (await get_exp(api, namespace)).get("status") or {}
    return status


def phase_is(api: ApiClient, namespace: str, *phases: str) -> Callable[[], Any]:
    async def check() -> bool:
        return (await status_of(api, namespace)).get("phase") in phases

    return check


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    found: dict[str, Any] = {c["type"]: c for c in status.get("conditions", [])}.get(type_, {})
    return found


def counted(status: dict[str, Any]) -> tuple[int, int, int]:
    votes = status.get("votes") or {}
    return votes.get("challengerWins", 0), votes.get("championWins", 0), votes.get("ties", 0)


async def vote(url: str, challenger: int, champion: int, ties: int = 0, seed: int = 1) -> None:
    """Users vote with a real preference; sides are shuffled as the UI does (one request per vote).

    Ties come first and the decisive votes after them in random order, so a test with minVotes equal to
    the decisive count cannot be decided on a poll that saw only part of the batch.
    """
    rng = random.Random(seed)
    decisive = ["challenger"] * challenger + ["champion"] * champion
    rng.shuffle(decisive)
    picks = ["tie"] * ties + decisive
    async with CanopyClient(url, timeout=10) as http:
        for i, pick in enumerate(picks):
            mapping = {"a": "prompt", "b": "prompt_b"} if rng.random() < 0.5 else {"a": "prompt_b", "b": "prompt"}
            if pick == "tie":
                preference = "tie"
            else:
                key = "prompt_b" if pick == "challenger" else "prompt"
                preference = "a" if mapping["a"] == key else "b"
            await http.post_ab_feedback(f"article {seed}-{i}", f"answer a {i}", f"answer b {i}", preference, mapping)


def configmap_text(obj: Any) -> str | None:
    data = obj.data or {}
    return data.get(KEY)


def rollout_annotation(obj: Any) -> str | None:
    annotations = (obj.spec.template.metadata.annotations if obj.spec.template.metadata else None) or {}
    value = annotations.get(ROLLOUT_ANNOTATION)
    return str(value) if value is not None else None


class WriteLog:
    """Every change of ``value(obj)`` of one named object, seen through a watch (from its current version)."""

    def __init__(self, list_fn: Any, namespace: str, name: str, value: Callable[[Any], str | None]) -> None:
        self.list_fn = list_fn
        self.namespace = namespace
        self.name = name
        self.value = value
        self.values: list[str | None] = []
        self.events = 0
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def configmap(cls, api: ApiClient, namespace: str) -> WriteLog:
        return cls(client.CoreV1Api(api).list_namespaced_config_map, namespace, "canopy-config", configmap_text)

    @classmethod
    def deployment(cls, api: ApiClient, namespace: str) -> WriteLog:
        return cls(client.AppsV1Api(api).list_namespaced_deployment, namespace, "canopy-backend", rollout_annotation)

    @property
    def changes(self) -> int:
        """How many times the value changed after the watch started."""
        return len(self.values) - 1

    async def start(self) -> None:
        listed = await self.list_fn(self.namespace, field_selector=f"metadata.name={self.name}")
        (item,) = listed.items
        self.values.append(self.value(item))
        self._task = asyncio.create_task(self._watch(listed.metadata.resource_version))
        await asyncio.sleep(0)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _watch(self, rv: str) -> None:
        while True:
            try:
                async with watch.Watch() as w:
                    async for event in w.stream(
                        self.list_fn,
                        self.namespace,
                        field_selector=f"metadata.name={self.name}",
                        resource_version=rv,
                        timeout_seconds=60,
                    ):
                        obj = event["object"]
                        rv = obj.metadata.resource_version
                        self.events += 1
                        self._record(obj)
            except asyncio.CancelledError:
                raise
            except Exception:  # the API server restarts under some tests: re-list and go on
                await asyncio.sleep(0.5)
                with contextlib.suppress(Exception):
                    listed = await self.list_fn(self.namespace, field_selector=f"metadata.name={self.name}")
                    for item in listed.items:
                        self._record(item)
                    rv = listed.metadata.resource_version

    def _record(self, obj: Any) -> None:
        value = self.value(obj)
        if value != self.values[-1]:
            self.values.append(value)


class SturdyKubelet(FakeKubelet):
    """A FakeKubelet that keeps watching while the API server is away (it restarts under some tests)."""

    async def _watch(self) -> None:
        while True:
            try:
                await super()._watch()
            except Exception:  # refused or 503 while the API server restarts: watch again
                await asyncio.sleep(0.2)
                continue


@contextlib.contextmanager
def cut_connections_tolerated() -> Iterator[None]:
    """Free, silently, the sockets that killed clients and stopped simulators leave half-closed.

    Killing a process mid-request (the point of these tests) can leave the simulator's side of its
    connection to be garbage collected unclosed; under ``filterwarnings=error`` that ResourceWarning would
    fail whichever test the collector happens to run in. Only ResourceWarning is ignored, only here.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            yield
        finally:
            gc.collect()


async def run_until_concluded(
    api: ApiClient,
    namespace: str,
    proc: OperatorProcess,
    backend_url: str,
    votes: tuple[int, int, int],
    *,
    within: float,
    settle: float,
) -> tuple[list[int], dict[str, Any]]:
    """Start ``proc``, restart it each time its failpoint kills it, vote once Running, until Concluded.

    Returns the exit codes of the killed runs and the status ``settle`` seconds after Concluded (room for a
    duplicate write to show). The operator is stopped at the end, whatever happened.
    """
    proc.start()
    exits: list[int] = []
    voted = False
    deadline = time.monotonic() + within
    try:
        while True:
            code = proc.returncode()
            if code is not None:
                exits.append(code)
                assert code == EXIT_CODE, f"operator exited {code}:\n{proc.tail()}"
                proc = proc.again()
                proc.start()
            status = await status_of(api, namespace)
            if not voted and status.get("phase") == "Running":
                await vote(backend_url, *votes)
                voted = True
            if status.get("phase") == "Concluded":
                break
            assert time.monotonic() < deadline, f"not Concluded: {status.get('phase')}\n{proc.tail()}"
            await asyncio.sleep(0.2)
        await asyncio.sleep(settle)
        return exits, await status_of(api, namespace)
    finally:
        assert proc.stop() in (0, EXIT_CODE), proc.tail()
