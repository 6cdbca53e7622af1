"""A fake kubelet for the envtest API server: restarts the Canopy simulator when the Deployment rolls.

envtest runs no controllers and no kubelet, so nothing would ever restart the backend. This plays that part
the way the cluster would: when the Deployment's pod template changes, the "pod" is replaced by a fresh
simulator process reading the ConfigMap's current values (memory wiped, ids from 1 again).

Used by the integration tests (``tests/support/kubelet.py`` re-exports it) and by the local demo. ``factory``
makes another backend the pod (e.g. the Generation 2 stand-in, :class:`canopy_devkit.gen2.RunningGen2`); by
default it is the Generation 1 simulator.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Protocol

from kubernetes_asyncio import client

from canopy_devkit.simulator import RunningSimulator

RENDERED_VALUES = """\
LLAMA_STACK_URL: http://llama-stack.canopy-test.svc.cluster.local:8321
summarize:
  enabled: true
  model: llama32
  max_tokens: 512
  temperature: 0.2
  prompt: |
    Summarize the following text in a clear and detailed manner:
feedback:
  enabled: false
ab_testing:
  enabled: false
information-search:
  enabled: false
student-assistant:
  enabled: false
"""


class Pod(Protocol):
    """What the kubelet runs as the backend's pod: started, stopped and restarted with a config file."""

    @property
    def url(self) -> str: ...

    async def start(self, config_path: str | Path) -> None: ...

    async def stop(self) -> None: ...

    async def restart(self, config_path: str | Path) -> None: ...


def deployment_manifest(name: str = "canopy-backend", replicas: int = 1) -> dict[str, Any]:
    """A Deployment shaped like the chart's (the API server needs a valid pod template)."""
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels, "annotations": {"checksum/config": "initial"}},
                "spec": {"containers": [{"name": "backend", "image": "quay.io/example/canopy-be:0.16"}]},
            },
        },
    }


class FakeKubelet:
    """Watches one Deployment's pod template and restarts the simulator with the ConfigMap's values."""

    def __init__(
        self,
        api: client.ApiClient,
        namespace: str,
        workdir: Path,
        *,
        deployment: str = "canopy-backend",
        configmap: str = "canopy-config",
        key: str = "canopy-config.yaml",
        factory: Callable[[], Pod] | None = None,
    ) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)
        self.namespace = namespace
        self.workdir = workdir
        self.deployment = deployment
        self.configmap = configmap
        self.key = key
        self.simulator: Pod = factory() if factory is not None else RunningSimulator(seed=7)
        self.rollouts = 0
        self._template = ""
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return self.simulator.url

    async def start(self) -> None:
        self._template = await self._template_hash()
        await self.simulator.start(await self._write_config())
        await self._report_rollout()
        self._task = asyncio.create_task(self._watch())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.simulator.stop()

    async def _template_hash(self) -> str:
        dep = await self.apps.read_namespaced_deployment(self.deployment, self.namespace)
        return json.dumps(self.api.sanitize_for_serialization(dep.spec.template), sort_keys=True)

    async def _report_rollout(self) -> None:
        """Write the Deployment status the deployment controller would once the new pod is available."""
        dep = await self.apps.read_namespaced_deployment(self.deployment, self.namespace)
        replicas = dep.spec.replicas if dep.spec.replicas is not None else 1
        status = {
            "observedGeneration": dep.metadata.generation,
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": replicas,
            "availableReplicas": replicas,
        }
        await self.apps.patch_namespaced_deployment_status(self.deployment, self.namespace, {"status": status})

    async def _write_config(self) -> Path:
        cm = await self.core.read_namespaced_config_map(self.configmap, self.namespace)
        path = self.workdir / f"values-{self.rollouts}.yaml"
        path.write_text(cm.data[self.key], encoding="utf-8")
        return path

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(0.2)
            template = await self._template_hash()
            if template != self._template:
                self._template = template
                self.rollouts += 1
                await self.simulator.restart(await self._write_config())
                await self._report_rollout()


@contextlib.asynccontextmanager
async def running_backend(
    api: client.ApiClient,
    namespace: str,
    workdir: Path,
    values: str = RENDERED_VALUES,
    replicas: int = 1,
    factory: Callable[[], Pod] | None = None,
) -> AsyncIterator[FakeKubelet]:
    """The chart's ConfigMap ``canopy-config`` and Deployment ``canopy-backend`` in ``namespace``.

    A kubelet runs the simulator (or what ``factory`` makes) for them while the block runs.
    """
    config_map = client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="canopy-config"), data={"canopy-config.yaml": values}
    )
    await client.CoreV1Api(api).create_namespaced_config_map(namespace, config_map)
    deployment: Any = deployment_manifest(replicas=replicas)  # the client accepts plain dicts as bodies
    await client.AppsV1Api(api).create_namespaced_deployment(namespace, deployment)
    kubelet = FakeKubelet(api, namespace, workdir, factory=factory)
    await kubelet.start()
    try:
        yield kubelet
    finally:
        await kubelet.stop()
