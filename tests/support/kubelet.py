"""A fake kubelet for the envtest API server: restarts the Canopy simulator when the Deployment rolls.

envtest runs no controllers and no kubelet, so nothing would ever restart the backend. This plays that part
the way the cluster would: when the Deployment's pod template changes, the "pod" is replaced by a fresh
simulator process reading the ConfigMap's current values (memory wiped, ids from 1 again).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client

from canopy_operator.canopy.simulator import RunningSimulator

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


def deployment_manifest(name: str = "canopy-backend") -> dict[str, Any]:
    """A Deployment shaped like the chart's (the API server needs a valid pod template)."""
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
    ) -> None:
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)
        self.namespace = namespace
        self.workdir = workdir
        self.deployment = deployment
        self.configmap = configmap
        self.key = key
        self.simulator = RunningSimulator(seed=7)
        self.rollouts = 0
        self._template = ""
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return self.simulator.url

    async def start(self) -> None:
        self._template = await self._template_hash()
        await self.simulator.start(await self._write_config())
        self._task = asyncio.create_task(self._watch())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.simulator.stop()

    async def _template_hash(self) -> str:
        dep = await self.apps.read_namespaced_deployment(self.deployment, self.namespace)
        return json.dumps(self.apps.api_client.sanitize_for_serialization(dep.spec.template), sort_keys=True)

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
