"""What the reconcile benchmark watches: when each experiment's config was written and when it ran.

Both are taken from watches (one per resource, opened before the burst), so observing costs the API server
no polling, and times are when the change reached a client, the same way the operator itself learns of it.
Also here: the physical floor, one ConfigMap merge-patch round trip with the same client library.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from typing import Any

from kubernetes_asyncio import client, watch

from canopy_operator.api.base import GROUP, PLURAL, VERSION
from fleet import KEY, RENDERED_VALUES

MERGE = "application/merge-patch+json"


class Observer:
    """First time each ConfigMap left the rendered values, and first time each experiment reported a phase."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.namespace = namespace
        self.config_written: dict[str, float] = {}
        """ConfigMap name -> monotonic time its text first differed from the rendered values."""
        self.phases: dict[str, dict[str, float]] = {}
        """Experiment name -> phase -> monotonic time it was first seen."""
        self.status_changes: collections.Counter[str] = collections.Counter()
        """Status fields that changed between two watch events of one experiment, counted (what was written),
        while ``track_changes`` is on."""
        self.track_changes = False
        """Off in the burst, on for the idle window: the harness shares the two cores with the subject, and a walk
        of every new status in the burst is CPU the subject loses."""
        self._last_status: dict[str, dict[str, Any]] = {}
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        cms = await self.core.list_namespaced_config_map(self.namespace)
        exps = await self.custom.list_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL)
        self._tasks = [
            asyncio.create_task(self._configmaps(cms.metadata.resource_version)),
            asyncio.create_task(self._experiments(exps["metadata"]["resourceVersion"])),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def count_in_phase(self, phase: str) -> int:
        return sum(1 for seen in self.phases.values() if phase in seen)

    async def _configmaps(self, resource_version: str) -> None:
        stream = watch.Watch(return_type="object").stream(  # plain JSON: no model classes in the harness
            self.core.list_namespaced_config_map, self.namespace, resource_version=resource_version
        )
        async with stream as events:
            async for event in events:
                now = time.monotonic()
                cm = event["object"]
                text = (cm.get("data") or {}).get(KEY)
                if text is not None and text != RENDERED_VALUES:
                    self.config_written.setdefault(cm["metadata"]["name"], now)

    async def _experiments(self, resource_version: str) -> None:
        stream = watch.Watch().stream(
            self.custom.list_namespaced_custom_object,
            GROUP,
            VERSION,
            self.namespace,
            PLURAL,
            resource_version=resource_version,
        )
        async with stream as events:
            async for event in events:
                now = time.monotonic()
                obj: dict[str, Any] = event["object"]
                name = obj["metadata"]["name"]
                status = obj.get("status") or {}
                if status.get("phase"):
                    self.phases.setdefault(name, {}).setdefault(status["phase"], now)
                if self.track_changes and name in self._last_status:
                    self.status_changes.update(changed_paths(self._last_status[name], status))
                self._last_status[name] = status


def changed_paths(old: Any, new: Any, prefix: str = "status") -> list[str]:
    """Dotted paths of the leaves that differ (list items by index; conditions by type)."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys = old.keys() | new.keys()
        return [p for key in keys for p in changed_paths(old.get(key), new.get(key), f"{prefix}.{key}")]
    if isinstance(old, list) and isinstance(new, list) and all(isinstance(c, dict) and "type" in c for c in old + new):
        before, after = {c["type"]: c for c in old}, {c["type"]: c for c in new}
        return [
            p
            for t in before.keys() | after.keys()
            for p in changed_paths(before.get(t), after.get(t), f"{prefix}[{t}]")
        ]
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [p for i, (a, b) in enumerate(zip(old, new, strict=True)) for p in changed_paths(a, b, f"{prefix}[{i}]")]
    return [] if old == new else [prefix]


async def create_configmap(api: client.ApiClient, namespace: str, name: str) -> None:
    body: Any = {"metadata": {"name": name}, "data": {"value": "0"}}
    await client.CoreV1Api(api).create_namespaced_config_map(namespace, body)


async def patch_round_trips(api: client.ApiClient, namespace: str, name: str, samples: int) -> list[float]:
    """Seconds of ``samples`` sequential merge patches of ConfigMap ``name`` (each a real write)."""
    core = client.CoreV1Api(api)
    durations = []
    for i in range(samples):
        began = time.monotonic()
        await core.patch_namespaced_config_map(
            name,
            namespace,
            {"data": {"value": str(time.time_ns() + i)}},  # always a change: a real etcd write
            _content_type=MERGE,  # type: ignore[call-arg]  # a documented **kwargs option
        )
        durations.append(time.monotonic() - began)
    return durations


class FloorUnderLoad:
    """The same round trip, measured every ``every`` seconds in the background (e.g. during the burst)."""

    def __init__(self, api: client.ApiClient, namespace: str, every: float = 0.25) -> None:
        self.api = api
        self.namespace = namespace
        self.every = every
        self.samples: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _loop(self) -> None:
        while True:
            self.samples += await patch_round_trips(self.api, self.namespace, "floor-under-load", 1)
            await asyncio.sleep(self.every)

    async def start(self) -> None:
        await create_configmap(self.api, self.namespace, "floor-under-load")
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
