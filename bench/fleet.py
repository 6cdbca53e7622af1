"""Many simulated Canopy backends in one process, each with its ConfigMap and Deployment, and one fake kubelet.

Backend ``i`` serves on its own 127.0.0.1 port and belongs to ConfigMap ``canopy-config-<i>`` and Deployment
``canopy-backend-<i>`` in one namespace. A single Deployment watch plays the kubelet for all of them (one
poller per Deployment as in ``canopy_devkit.kubelet.FakeKubelet`` would cost N reads every 0.2 s): when a pod
template changes, that backend restarts with the ConfigMap's current values (stores wiped, ids from 1) and
the Deployment's status reports the rollout of the generation the watch event showed complete, as the deployment
controller would from its informer (envtest runs none). The harness shares the machine with the subject it
measures, so it reads JSON, never the client's model classes, in the burst: one ConfigMap read per rollout and
one status write. Every request a backend answers is counted by path, across restarts.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import json
import random
import time
from collections.abc import Awaitable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web
from kubernetes_asyncio import client, watch

from canopy_devkit.kubelet import RENDERED_VALUES
from canopy_devkit.simulator.app import BackendState, Faults, build_app
from canopy_devkit.simulator.config import BackendConfig, parse_config

KEY = "canopy-config.yaml"


def configmap_name(i: int) -> str:
    return f"canopy-config-{i}"


def deployment_name(i: int) -> str:
    return f"canopy-backend-{i}"


def deployment_manifest(name: str) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels, "annotations": {"checksum/config": "initial"}},
                "spec": {"containers": [{"name": "backend", "image": "quay.io/example/canopy-be:0.16"}]},
            },
        },
    }


class Backend:
    """One simulated backend process on a fixed port; ``restart`` is a rollout. Counts requests by path."""

    def __init__(self, index: int, counts: collections.Counter[str]) -> None:
        self.index = index
        self.port = 0
        self.counts = counts
        self.starts = 0
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, text: str) -> None:
        state = BackendState(
            config=_config(text),
            rng=random.Random(self.index * 1000 + self.starts),
            clock=lambda: datetime.now(UTC),
            faults=Faults(),
        )
        app = build_app(state)
        app.on_response_prepare.append(self._count)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        if not self.port:
            self.port = int(runner.addresses[0][1])
        self._runner = runner
        self.starts += 1

    async def _count(self, request: web.Request, response: web.StreamResponse) -> None:
        self.counts[f"{request.method} {request.path}"] += 1

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def restart(self, text: str) -> None:
        await self.stop()
        await self.start(text)


class Fleet:
    """N backends with their ConfigMaps and Deployments in ``namespace``, restarted on rollout."""

    def __init__(self, api: client.ApiClient, namespace: str, workdir: Path, count: int) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)
        self.namespace = namespace
        self.workdir = workdir
        self.counts: collections.Counter[str] = collections.Counter()
        self.backends = [Backend(i, self.counts) for i in range(count)]
        self.rollouts: dict[int, list[float]] = collections.defaultdict(list)
        """Monotonic times at which backend i was restarted for a rollout."""
        self._templates: dict[str, str] = {}
        self._locks = [asyncio.Lock() for _ in range(count)]
        self._task: asyncio.Task[None] | None = None
        self._restarts: set[asyncio.Task[None]] = set()

    async def start(self, concurrency: int = 20) -> None:
        """Create every ConfigMap and Deployment, start every backend, then watch the Deployments."""
        gate = asyncio.Semaphore(concurrency)

        async def one(backend: Backend) -> None:
            async with gate:
                body: Any = {"metadata": {"name": configmap_name(backend.index)}, "data": {KEY: RENDERED_VALUES}}
                await self.core.create_namespaced_config_map(self.namespace, body)
                deployment: Any = deployment_manifest(deployment_name(backend.index))
                await self.apps.create_namespaced_deployment(self.namespace, deployment)
                await backend.start(RENDERED_VALUES)
                await self._report_rollout(backend.index)

        await asyncio.gather(*(one(b) for b in self.backends))
        answer = await self.apps.list_namespaced_deployment(self.namespace, _preload_content=False)
        listed = json.loads(await answer.read())
        for dep in listed["items"]:
            self._templates[dep["metadata"]["name"]] = _template_key(dep)
        self._task = asyncio.create_task(self._watch(listed["metadata"]["resourceVersion"]))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for task in list(self._restarts):
            task.cancel()
        await asyncio.gather(*self._restarts, return_exceptions=True)
        await asyncio.gather(*(b.stop() for b in self.backends))

    async def _watch(self, resource_version: str) -> None:
        # Plain JSON, not the client's model classes: the harness shares the machine with the subject it measures.
        stream = watch.Watch(return_type="object").stream(
            self.apps.list_namespaced_deployment, self.namespace, resource_version=resource_version
        )
        async with stream as events:  # without timeout_seconds the stream reconnects by itself
            async for event in events:
                dep = event["object"]
                name = dep["metadata"]["name"]
                key = _template_key(dep)
                if name.startswith("canopy-backend-") and self._templates.get(name) != key:
                    self._templates[name] = key
                    self._spawn(self._rollout(int(name.rsplit("-", 1)[1]), dep["metadata"]["generation"]))

    def _spawn(self, work: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(work)
        self._restarts.add(task)
        task.add_done_callback(self._restarts.discard)

    async def _rollout(self, i: int, generation: int) -> None:
        """Backend ``i`` restarted with its ConfigMap's text as the API server has it now, and the rollout of
        ``generation`` (the watch event's, as the deployment controller takes it from its informer) reported."""
        async with self._locks[i]:
            answer = await self.core.read_namespaced_config_map(
                configmap_name(i), self.namespace, _preload_content=False
            )  # raw JSON: the harness shares the machine with the subject, so it spends no CPU on model classes
            text = json.loads(await answer.read())["data"][KEY]
            await self.backends[i].restart(text)
            self.rollouts[i].append(time.monotonic())
            await self._report_rollout(i, generation)

    async def _report_rollout(self, i: int, generation: int | None = None) -> None:
        """The Deployment status the deployment controller would write once the new pod is available (of
        ``generation``; None: the Deployment's current one, read)."""
        if generation is None:
            dep = await self.apps.read_namespaced_deployment(deployment_name(i), self.namespace)
            generation = dep.metadata.generation
        status = {
            "observedGeneration": generation,
            "replicas": 1,
            "updatedReplicas": 1,
            "readyReplicas": 1,
            "availableReplicas": 1,
        }
        answer = await self.apps.patch_namespaced_deployment_status(
            deployment_name(i), self.namespace, {"status": status}, _preload_content=False
        )  # raw, unread: the harness builds no V1Deployment it would not look at
        answer.release()
        if not 200 <= answer.status <= 299:
            raise RuntimeError(f"the rollout of {deployment_name(i)} was not reported: HTTP {answer.status}")


@functools.lru_cache(maxsize=16)
def _config(text: str) -> BackendConfig:
    """The backend's start-up parse of a values text (``parse_config``, the simulator's), once per distinct text:
    the fleet's backends start with the same few texts, and parsing each (pure-Python YAML) was a fifth of the
    harness's CPU in a burst of 500, on the two cores the subject runs on. ``BackendConfig`` is frozen."""
    return parse_config(text)


def _template_key(dep: dict[str, Any]) -> str:
    return json.dumps(dep["spec"]["template"], sort_keys=True)
