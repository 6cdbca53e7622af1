"""Shared setup of the experiment integration tests: a deployed backend, the experiment object, UI-like votes.

    async with deployed_backend(admin_api, namespace, tmp_path) as kubelet:   # ConfigMap + Deployment + "pod"
        exp = Experiments(admin_api, namespace)
        await exp.create(kubelet.url, analysis={"interval": "5s", "minVotes": 10})
        with run_operator(operator_kubeconfig, namespace=namespace):
            await exp.wait_phase("Running")
            await vote_like_ui(kubelet.url, ["challenger"] * 8 + ["champion"] * 2, tag="t1")

``ConfigMapWrites`` watches ``canopy-config`` and records every write (by anyone) in order; ``PromotionGate``
holds the operator's promotion write so a test can stop the operator exactly between decision and promotion.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client import ApiClient

from canopy_devkit.simulator import RunningSimulator
from canopy_operator.api.base import GROUP, PLURAL, VERSION
from canopy_operator.core.values import ManagedKeys
from canopy_operator.delivery.base import WriteResult
from canopy_operator.delivery.configmap import ConfigMapDelivery
from canopy_operator.sources.canopy.client import CanopyClient
from canopy_operator.sources.canopy.models import AbAnswers
from tests.support.envtest import Kubectl
from tests.support.kopf_runner import wait_for
from tests.support.kubelet import RENDERED_VALUES, FakeKubelet, deployment_manifest

CHAMPION = "Summarize the following text in a clear and detailed manner:\n"
CHALLENGER = "Provide a brief, concise summary:\n"
CONFIGMAP = "canopy-config"
CONFIG_KEY = "canopy-config.yaml"
WAIT = 60.0
"""Default deadline of a wait on the operator: generous, 4-5 engineers share 2 cores."""


@contextlib.asynccontextmanager
async def deployed_backend(
    api: ApiClient,
    namespace: str,
    workdir: Path,
    *,
    values: str = RENDERED_VALUES,
    port: int | None = None,
    start: bool = True,
) -> AsyncIterator[FakeKubelet]:
    """The chart's ConfigMap and Deployment, and a fake kubelet that (re)starts the simulator on rollouts.

    ``start=False`` leaves the "pod" down (nothing listens on ``port``) until the test calls ``start()``.
    """
    await client.CoreV1Api(api).create_namespaced_config_map(
        namespace,
        {"metadata": {"name": CONFIGMAP}, "data": {CONFIG_KEY: values}},  # type: ignore[arg-type]  # dicts serialise as-is
    )
    await client.AppsV1Api(api).create_namespaced_deployment(namespace, deployment_manifest())  # type: ignore[arg-type]  # dicts serialise as-is
    kubelet = FakeKubelet(api, namespace, workdir)
    if port is not None:
        kubelet.simulator = RunningSimulator(seed=7, port=port)
    if start:
        await kubelet.start()
    try:
        yield kubelet
    finally:
        await kubelet.stop()


def manifest(url: str, name: str = "exp", **spec: Any) -> dict[str, Any]:
    """A PromptExperiment for the backend at ``url``: 5 s polls, 30 s verify timeout, keyword overrides."""
    body: dict[str, Any] = {
        "backend": {"url": url},
        "challenger": {"prompt": CHALLENGER},
        "analysis": {"interval": "5s"},
        "delivery": {"verifyTimeout": "30s"},
    }
    body.update(spec)
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "PromptExperiment", "metadata": {"name": name}, "spec": body}


def conditions(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The status's conditions by type."""
    return {c["type"]: c for c in status.get("conditions", [])}


class Experiments:
    """One PromptExperiment in one namespace, as an admin sees it."""

    def __init__(self, api: ApiClient, namespace: str, name: str = "exp") -> None:
        self.custom = client.CustomObjectsApi(api)
        self.namespace = namespace
        self.name = name

    async def create(self, url: str, **spec: Any) -> None:
        await self.custom.create_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, manifest(url, self.name, **spec)
        )

    async def get(self) -> dict[str, Any]:
        obj: dict[str, Any] = await self.custom.get_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, self.name
        )
        return obj

    async def status(self) -> dict[str, Any]:
        status: dict[str, Any] = (await self.get()).get("status") or {}
        return status

    async def patch_spec(self, spec: dict[str, Any]) -> None:
        """A JSON merge patch of the spec (what ``kubectl patch --type merge`` sends)."""
        await self.custom.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            self.namespace,
            PLURAL,
            self.name,
            {"spec": spec},
            _content_type="application/merge-patch+json",  # type: ignore[call-arg]  # a documented **kwargs option
        )

    async def delete(self) -> None:
        await self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, self.name)

    async def phase_is(self, phase: str) -> bool:
        return (await self.status()).get("phase") == phase

    async def wait_phase(self, phase: str, timeout: float = WAIT) -> dict[str, Any]:  # noqa: ASYNC109 - a polling deadline
        """Wait for the phase; the status at that moment."""
        await wait_for(lambda: self.phase_is(phase), timeout=timeout, what=f"phase {phase}")
        return await self.status()

    async def wait_status(self, check: Any, what: str, timeout: float = WAIT) -> dict[str, Any]:  # noqa: ASYNC109 - a polling deadline
        """Wait until ``check(status)`` is true; the status at that moment."""
        seen: dict[str, Any] = {}

        async def ok() -> bool:
            seen.clear()
            seen.update(await self.status())
            return bool(check(seen))

        await wait_for(ok, timeout=timeout, what=what)
        return dict(seen)


async def configmap_text(api: ApiClient, namespace: str) -> str:
    cm = await client.CoreV1Api(api).read_namespaced_config_map(CONFIGMAP, namespace)
    return str(cm.data[CONFIG_KEY])


def event_reasons(kubectl: Kubectl, namespace: str) -> list[str]:
    """The reasons of every event in the namespace (one entry per event object)."""
    return kubectl("get", "events", "-n", namespace, "-o", "jsonpath={.items[*].reason}").stdout.split()


async def served_flags(url: str) -> dict[str, bool]:
    """What the running backend process reports at ``GET /feature-flags``."""
    async with CanopyClient(url, timeout=10) as http:
        flags = await http.feature_flags()
    return {k: bool(v) for k, v in flags.model_dump(by_alias=True).items()}


# -- votes, as the Canopy UI casts them -----------------------------------------------------------------------


def preference_for(pick: str, answers: AbAnswers) -> str:
    """The on-screen side to click: ``pick`` is ``challenger``/``champion``/``tie``, or a side ``a``/``b``."""
    if pick in ("a", "b", "tie"):
        return pick
    key = {"challenger": "prompt_b", "champion": "prompt"}[pick]
    return "a" if answers.mapping["a"] == key else "b"


async def vote_like_ui(url: str, picks: Sequence[str], *, tag: str) -> None:
    """For each pick: ``POST /summarize/ab`` for a fresh article, then ``POST /feedback/ab`` with what was shown.

    The mapping sent is the stream's ``ab_config`` (sides shuffled by the backend), so the backend derives
    ``winning_prompt`` from it exactly as for a real user.
    """
    async with CanopyClient(url, timeout=10) as http:
        for i, pick in enumerate(picks):
            article = f"Article {tag}-{i}: the council met on day {i} and discussed item {tag}."
            answers = await http.summarize_ab(article)
            await http.post_ab_feedback(
                article, answers.response_a, answers.response_b, preference_for(pick, answers), answers.mapping
            )


# -- observing writes ----------------------------------------------------------------------------------------


class ConfigMapWrites:
    """Every write to ``canopy-config`` after entering, by anyone, in order (a watch from the current version).

    ``texts`` holds the values text after each write; a write that leaves the object unchanged is not a write.
    """

    def __init__(self, api: ApiClient, namespace: str) -> None:
        self.core = client.CoreV1Api(api)
        self.namespace = namespace
        self.texts: list[str] = []
        self.versions: list[str] = []
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    @property
    def count(self) -> int:
        return len(self.texts)

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._watch())
        await asyncio.wait_for(self._ready.wait(), 10)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def settle(self, quiet: float = 1.0) -> None:
        """Wait until no write arrived for ``quiet`` seconds (events trail the writes slightly)."""
        last = -1
        while last != self.count:
            last = self.count
            await asyncio.sleep(quiet)

    async def _watch(self) -> None:
        cm = await self.core.read_namespaced_config_map(CONFIGMAP, self.namespace)
        version = str(cm.metadata.resource_version)
        self._ready.set()
        while True:
            response: Any = await self.core.list_namespaced_config_map(
                self.namespace,
                field_selector=f"metadata.name={CONFIGMAP}",
                watch=True,
                resource_version=version,
                timeout_seconds=60,
                _preload_content=False,
            )
            try:
                async for line in response.content:
                    event = json.loads(line)
                    obj = event["object"]
                    version = obj["metadata"]["resourceVersion"]
                    if event["type"] == "MODIFIED":
                        self.versions.append(version)
                        self.texts.append(obj.get("data", {}).get(CONFIG_KEY, ""))
            finally:
                response.release()


class PromotionGate:
    """Holds the operator's promotion write (the one that removes ``prompt_b``) while ``holding``.

    Patches :class:`ConfigMapDelivery` in this process (the in-process operator's delivery). Stopping the
    operator while a write is held is a kill between "decided" and "promoted": the decision is in status, the
    write never happens. ``reached`` is set when the operator arrives at the write.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.holding = True
        self.reached = threading.Event()
        original = ConfigMapDelivery.write
        gate = self

        async def write(
            self: ConfigMapDelivery, desired: ManagedKeys, *, ensure_rolled: bool = False, record: str | None = None
        ) -> WriteResult:
            if desired.prompt_b is None and gate.holding:
                gate.reached.set()
                # A flag, not an asyncio.Event: the test releases it from another thread and event loop.
                while gate.holding:  # noqa: ASYNC110 - cancelled when the operator stops: the write never happens
                    await asyncio.sleep(0.1)
            return await original(self, desired, ensure_rolled=ensure_rolled, record=record)

        monkeypatch.setattr(ConfigMapDelivery, "write", write)

    def release(self) -> None:
        self.holding = False
