"""A test playing Argo CD for one Application: Git is the source of truth, the cluster follows it.

On every new commit on the watched branch of a bare repository, the values file at that commit is merged
over the chart's defaults (as ``helm template`` does), written whole into the ConfigMap ``canopy-config``
and the Deployment's pod-template checksum is set to the rendered text's sha256, so a fake kubelet
(``tests.support.kubelet.FakeKubelet``) restarts the simulator with it. Nothing else writes the ConfigMap.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from pathlib import Path
from typing import Any

import yaml
from kubernetes_asyncio import client

from tests.support.gitserver import git

CHECKSUM_ANNOTATION = "checksum/config"
#: The chart's own values.yaml (the part the backend reads); a values file is merged over it.
CHART_DEFAULTS: dict[str, Any] = {
    "summarize": {"enabled": False, "max_tokens": 4096, "temperature": 0.7},
    "feedback": {"enabled": False},
    "ab_testing": {"enabled": False},
    "information-search": {"enabled": False},
    "student-assistant": {"enabled": False},
}


def merge_values(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Helm's coalescing: maps merge key by key, everything else in ``override`` wins."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_values(out[key], value)
        else:
            out[key] = value
    return out


def render(values_text: str, defaults: dict[str, Any] | None = None) -> str:
    """The ``canopy-config.yaml`` the chart renders from a values file."""
    values = yaml.safe_load(values_text) or {}
    return yaml.safe_dump(merge_values(defaults or CHART_DEFAULTS, values), sort_keys=False)


class FakeArgoCD:
    """Automated sync of ``values_file`` on ``branch`` of ``bare`` into the namespace's ConfigMap."""

    def __init__(
        self,
        api: client.ApiClient,
        namespace: str,
        bare: Path,
        values_file: str = "chart/values-test.yaml",
        *,
        branch: str = "main",
        configmap: str = "canopy-config",
        key: str = "canopy-config.yaml",
        deployment: str = "canopy-backend",
    ) -> None:
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)
        self.namespace = namespace
        self.bare = bare
        self.values_file = values_file
        self.branch = branch
        self.configmap = configmap
        self.key = key
        self.deployment = deployment
        self.synced: list[str] = []
        """Revisions synced, oldest first."""
        self._task: asyncio.Task[None] | None = None

    async def head(self) -> str:
        out = await asyncio.to_thread(git, "rev-parse", f"refs/heads/{self.branch}", cwd=self.bare)
        return out.strip()

    async def sync(self) -> bool:
        """Sync the branch head if it is new; True when it did."""
        sha = await self.head()
        if self.synced and self.synced[-1] == sha:
            return False
        text = await asyncio.to_thread(git, "show", f"{sha}:{self.values_file}", cwd=self.bare)
        rendered = render(text)
        await self._apply_configmap(rendered)
        checksum = hashlib.sha256(rendered.encode()).hexdigest()
        patch = {"spec": {"template": {"metadata": {"annotations": {CHECKSUM_ANNOTATION: checksum}}}}}
        await self.apps.patch_namespaced_deployment(self.deployment, self.namespace, patch)
        self.synced.append(sha)
        return True

    async def _apply_configmap(self, rendered: str) -> None:
        body = {"metadata": {"name": self.configmap}, "data": {self.key: rendered}}
        try:
            await self.core.replace_namespaced_config_map(self.configmap, self.namespace, body)  # type: ignore[arg-type]  # dicts serialise as-is
        except client.ApiException as exc:
            if exc.status != 404:
                raise
            await self.core.create_namespaced_config_map(self.namespace, body)  # type: ignore[arg-type]  # dicts serialise as-is

    async def start(self) -> None:
        """Sync once now (the ConfigMap exists afterwards), then follow the branch."""
        await self.sync()
        self._task = asyncio.create_task(self._follow())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _follow(self) -> None:
        while True:
            await asyncio.sleep(0.3)
            await self.sync()
