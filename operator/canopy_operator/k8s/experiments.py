"""The Kubernetes calls of ``kubectl pexp``: one experiment and what it drives, read and patched as a user.

The plugin runs with the user's credentials (a kubeconfig and its context), not the operator's, so this is a
separate small client rather than the operator's :class:`~canopy_operator.k8s.gateway.Gateway`; it shares the
gateway's error tree (:mod:`canopy_operator.k8s.errors`) and its rule that no call may hang. Everything comes
back as plain JSON-shaped dicts, as ``kubectl get -o json`` prints them, for the plugin's pure code to read as
untrusted data, with two exceptions kept deliberately narrow: a ConfigMap is returned without its values, and a
Secret is read one key at a time, bounded, and only when the caller names that key.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import os
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException

from canopy_operator.api.base import GROUP, PLURAL, VERSION
from canopy_operator.k8s.client import api_client
from canopy_operator.k8s.errors import KubeError, Unavailable, translate

T = TypeVar("T")
MERGE = "application/merge-patch+json"
DEFAULT_DEADLINE = 30.0
"""Seconds one API call may take in all."""
WATCH_WINDOW = 240
"""Seconds one watch request stays open at most (the server ends it; the caller watches again)."""
_SA_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class WatchExpired(KubeError):
    """The watch's resourceVersion is too old (410 Gone): read the object again and watch from there."""

    transient = True


class ConfigError(KubeError):
    """No usable kubeconfig (missing file, unknown context)."""


def default_namespace(kubeconfig: str | None = None, context: str | None = None) -> str:
    """The namespace kubectl would use: the in-cluster one, else the context's, else ``default``."""
    if os.environ.get("KUBERNETES_SERVICE_HOST") and _SA_NAMESPACE.is_file():
        try:
            return _SA_NAMESPACE.read_text(encoding="utf-8").strip() or "default"
        except OSError:
            return "default"
    try:
        contexts, current = config.list_kube_config_contexts(config_file=kubeconfig)
    except (config.ConfigException, OSError, ValueError, TypeError):
        return "default"
    chosen: Any = current
    if context is not None:
        chosen = next((c for c in contexts or [] if isinstance(c, dict) and c.get("name") == context), None)
    ctx = chosen.get("context") if isinstance(chosen, dict) else None
    namespace = ctx.get("namespace") if isinstance(ctx, dict) else None
    return namespace if isinstance(namespace, str) and namespace else "default"


class ExperimentsApi:
    """The calls ``kubectl pexp`` makes; use ``async with await ExperimentsApi.connect(...) as api``."""

    def __init__(self, api: client.ApiClient, deadline: float = DEFAULT_DEADLINE) -> None:
        self.api = api
        self.deadline = deadline
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)
        self.batch = client.BatchV1Api(api)
        self.custom = client.CustomObjectsApi(api)

    @classmethod
    async def connect(cls, kubeconfig: str | None = None, context: str | None = None) -> ExperimentsApi:
        """A client for ``kubeconfig`` (else $KUBECONFIG, else ~/.kube/config) at ``context``."""
        try:
            api = await api_client(kubeconfig, context=context)
        except (config.ConfigException, OSError, ValueError, TypeError, KeyError) as exc:
            where = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
            reason = str(exc) if _any_file(where) else "no such file"
            raise ConfigError(f"cannot load the kubeconfig {where}: {reason}") from exc
        return cls(api)

    async def close(self) -> None:
        await self.api.close()

    async def __aenter__(self) -> ExperimentsApi:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def _call(self, what: str, fn: Callable[[], Awaitable[T]]) -> T:
        try:
            async with asyncio.timeout(self.deadline):
                return await fn()
        except TimeoutError as exc:
            raise Unavailable(f"{what}: no answer within {self.deadline:g}s") from exc
        except KubeError:
            raise
        except Exception as exc:
            raise translate(exc, what) from exc

    # PromptExperiments ----------------------------------------------------------------------------------
    async def get(self, namespace: str, name: str) -> dict[str, Any]:
        """The PromptExperiment as the API server stores it."""
        obj = await self._call(
            f"get PromptExperiment {namespace}/{name}",
            lambda: self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name),
        )
        return _as_dict(obj)

    async def patch_spec(
        self, namespace: str, name: str, spec: Mapping[str, Any], resource_version: str | None = None
    ) -> dict[str, Any]:
        """Merge-patch the spec; with ``resource_version`` it fails with Conflict if anyone wrote since."""
        body: dict[str, Any] = {"spec": dict(spec)}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        obj = await self._call(
            f"patch PromptExperiment {namespace}/{name}",
            lambda: self.custom.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                name,
                body,
                _content_type=MERGE,  # type: ignore[call-arg]  # a documented **kwargs option
            ),
        )
        return _as_dict(obj)

    async def watch(
        self, namespace: str, name: str, resource_version: str | None, timeout_seconds: float
    ) -> AsyncGenerator[tuple[str, dict[str, Any]], None]:
        """The experiment's events after ``resource_version`` (type, object) for up to ``timeout_seconds``.

        Ends when the server closes the watch; raises :class:`WatchExpired` when the version is too old."""
        seconds = max(1, min(int(timeout_seconds), WATCH_WINDOW))
        what = f"watch PromptExperiment {namespace}/{name}"
        kwargs: dict[str, Any] = {"field_selector": f"metadata.name={name}", "timeout_seconds": seconds}
        if resource_version:
            kwargs["resource_version"] = resource_version
        try:
            async with asyncio.timeout(seconds + self.deadline), watch.Watch() as stream:
                events = stream.stream(
                    self.custom.list_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, **kwargs
                )
                async for event in events:
                    kind = event.get("type") if isinstance(event, dict) else None
                    obj = event.get("raw_object") if isinstance(event, dict) else None
                    if isinstance(kind, str) and isinstance(obj, dict):
                        yield kind, obj
        except TimeoutError as exc:
            raise Unavailable(f"{what}: the watch did not end within {seconds + self.deadline:g}s") from exc
        except ApiException as exc:
            if exc.status == 410:
                raise WatchExpired(f"{what}: resourceVersion {resource_version} is too old") from exc
            raise translate(exc, what) from exc
        except KubeError:
            raise
        except Exception as exc:
            raise translate(exc, what) from exc

    # What an experiment drives --------------------------------------------------------------------------
    async def list_jobs(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        result = await self._call(
            f"list Jobs in {namespace}", lambda: self.batch.list_namespaced_job(namespace, label_selector=selector)
        )
        return [_as_dict(self.api.sanitize_for_serialization(j)) for j in result.items or []]

    async def get_deployment(self, namespace: str, name: str) -> dict[str, Any]:
        dep = await self._call(
            f"get Deployment {namespace}/{name}", lambda: self.apps.read_namespaced_deployment(name, namespace)
        )
        return _as_dict(self.api.sanitize_for_serialization(dep))

    async def get_configmap_metadata(self, namespace: str, name: str) -> dict[str, Any]:
        """The ConfigMap's metadata and its key names (``keys``); never its values."""
        cm = await self._call(
            f"get ConfigMap {namespace}/{name}", lambda: self.core.read_namespaced_config_map(name, namespace)
        )
        keys = sorted({*(cm.data or {}), *(cm.binary_data or {})})
        return {"metadata": _as_dict(self.api.sanitize_for_serialization(cm.metadata)), "keys": keys}

    async def read_secret_key(self, namespace: str, name: str, key: str, max_bytes: int) -> bytes | None:
        """One key of a Secret, decoded; None when the Secret has no such key. Raises ``ValueError`` when the
        value is over ``max_bytes`` or not base64."""
        secret = await self._call(
            f"get Secret {namespace}/{name}", lambda: self.core.read_namespaced_secret(name, namespace)
        )
        encoded = (secret.data or {}).get(key)
        if encoded is None:
            return None
        if not isinstance(encoded, str) or len(encoded) > (max_bytes * 4) // 3 + 4:
            raise ValueError(f"Secret {namespace}/{name} key {key} is larger than {max_bytes} bytes")
        try:
            return base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError(f"Secret {namespace}/{name} key {key} is not base64") from exc


def _any_file(paths: str) -> bool:
    """Whether any of the kubeconfig ``paths`` (separated like $KUBECONFIG) is a file."""
    return any(Path(p).expanduser().is_file() for p in paths.split(os.pathsep) if p)


def _as_dict(obj: object) -> dict[str, Any]:
    return dict(obj) if isinstance(obj, dict) else {}
