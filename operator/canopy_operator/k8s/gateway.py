"""The Kubernetes gateway: every API call the operator makes, with errors translated once."""

from __future__ import annotations

import asyncio
import base64
import json
import math
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from canopy_operator.api.base import GROUP, KIND, PLURAL, VERSION
from canopy_operator.k8s.errors import KubeError, NotFound, Unavailable, translate
from canopy_operator.k8s.rollout import RolloutView, as_mapping, rollout_of

T = TypeVar("T")
M = TypeVar("M", bound=Mapping[str, Any])
MERGE = "application/merge-patch+json"


@dataclass(frozen=True)
class ConfigMapView:
    """What the operator needs of a ConfigMap."""

    name: str
    namespace: str
    data: dict[str, str]
    resource_version: str
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SecretView:
    """A Secret's decoded data and the version it was read at."""

    name: str
    namespace: str
    data: dict[str, str] = field(repr=False)
    resource_version: str
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)


MAX_OBJECT_BYTES = 4 * 1024 * 1024
"""The largest answer read as one object (etcd keeps objects of at most 1.5 MiB by default)."""
MAX_ERROR_BYTES = 64 * 1024
"""What is read of an error answer's body (its status decides; the body is only quoted, cut short)."""
DEFAULT_DEADLINE = 30.0
"""Seconds one API call may take in all (connect, answer, body): a stalled API server or a half-open
connection must not hang a daemon (security-model rule 3)."""


THROTTLED_RETRIES = 5
"""Times a call the API server refused with 429 (Too Many Requests) is sent again, after the pause it asks for.

API Priority and Fairness answers 429 when a client's queue is full: the request was not run, so sending it
again is safe for every verb (client-go does the same, up to 10 times). Failing the pass instead made the
daemon back off (4, 8, 16, 32 s): in a burst of 500 starts, a few experiments waited a minute (issue #20)."""
MAX_RETRY_AFTER = 5.0
"""The longest pause taken for one 429, whatever its Retry-After says; the call's deadline bounds them all."""


def retry_after(exc: ApiException) -> float:
    """The pause a 429 asks for (its ``Retry-After`` seconds, 1 when absent or unreadable), within
    ``(0, MAX_RETRY_AFTER]``, plus up to a quarter second of jitter so refused callers do not return at once."""
    headers = getattr(exc, "headers", None) or {}
    try:
        seconds = float(headers.get("Retry-After", 1))
    except (TypeError, ValueError):
        seconds = 1.0
    if not math.isfinite(seconds) or seconds <= 0:
        seconds = 1.0
    return min(seconds, MAX_RETRY_AFTER) + random.uniform(0.0, 0.25)  # noqa: S311 - jitter, not a secret


async def _call(what: str, fn: Callable[[], Awaitable[T]], deadline: float = DEFAULT_DEADLINE) -> T:
    try:
        async with asyncio.timeout(deadline):
            for attempt in range(THROTTLED_RETRIES + 1):
                try:
                    return await fn()
                except ApiException as exc:
                    if exc.status != 429 or attempt == THROTTLED_RETRIES:
                        raise
                    await asyncio.sleep(retry_after(exc))
            raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises
    except TimeoutError as exc:
        raise Unavailable(f"{what}: no answer within {deadline:g}s") from exc
    except KubeError:
        raise  # already says what failed
    except Exception as exc:
        raise translate(exc, what) from exc


def drop_managed_fields(obj: M) -> M:
    """``obj`` without ``metadata.managedFields`` (removed in place), as every copy of an experiment the operator
    keeps: nothing in it reads them, and they are more than half of a kept object's memory (about 30 of 51 KiB
    of Python objects for a Running experiment, issue #20). Controllers in Go drop them from their caches the
    same way (controller-runtime's ``TransformStripManagedFields``). ``obj`` may be a read-only view (Kopf's)
    of a plain object: its ``metadata`` dict is what changes."""
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        meta.pop("managedFields", None)
    return obj


class Gateway:
    """Thin typed wrapper over kubernetes_asyncio; holds no state but the ApiClient."""

    def __init__(self, api: client.ApiClient, deadline: float = DEFAULT_DEADLINE) -> None:
        self.api = api
        self.deadline = deadline
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)
        self.batch = client.BatchV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.replaces_status = True
        """Whether status writes may replace the status (``update`` on ``promptexperiments/status``); turned off
        for the process by the first one RBAC refuses (a ClusterRole from before that verb was asked for)."""

    async def _call(self, what: str, fn: Callable[[], Awaitable[T]]) -> T:
        return await _call(what, fn, self.deadline)

    async def _object(self, what: str, fn: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> dict[str, Any]:
        """The object one call answers, as the JSON the API server sent.

        The calls a new experiment makes in a burst (its ConfigMap, Deployment and status writes) skip the client's
        model classes and its deserialising (``_preload_content=False``): building a ``V1Deployment`` from the
        answer cost more CPU than the rest of the call (issue #20). Errors are raised as the client raises them,
        so they translate alike."""

        async def read() -> dict[str, Any]:
            response = await fn(*args, _preload_content=False, **kwargs)
            ok = 200 <= response.status <= 299
            limit = MAX_OBJECT_BYTES if ok else MAX_ERROR_BYTES  # an error's body is only quoted, shortly
            try:
                data = bytearray()
                async for chunk in response.content.iter_any():
                    data += chunk
                    if len(data) > limit:
                        if ok:
                            raise KubeError(f"{what}: answer is over {MAX_OBJECT_BYTES} bytes")
                        break
                if not ok:
                    error = ApiException(status=response.status, reason=response.reason)
                    error.body = bytes(data[:limit])
                    error.headers = response.headers
                    raise error
            finally:
                response.release()
            value = json.loads(data)
            if not isinstance(value, dict):
                raise KubeError(f"{what}: answer is not an object")
            return value

        return await self._call(what, read)

    # ConfigMaps -----------------------------------------------------------------------------------------
    async def get_configmap(self, namespace: str, name: str) -> ConfigMapView:
        cm = await self._object(
            f"get ConfigMap {namespace}/{name}", self.core.read_namespaced_config_map, name, namespace
        )
        meta = as_mapping(cm.get("metadata"))
        return ConfigMapView(
            name=name,
            namespace=namespace,
            data=_strings(cm.get("data")),
            resource_version=str(meta.get("resourceVersion") or ""),
            labels=_strings(meta.get("labels")),
            annotations=_strings(meta.get("annotations")),
        )

    async def write_configmap_key(
        self, view: ConfigMapView, key: str, text: str, *, annotations: Mapping[str, str | None] | None = None
    ) -> str:
        """Set one key, only if the ConfigMap is still at ``view.resource_version`` (409 Conflict otherwise);
        ``annotations``: set (a None value removes) in the same write."""
        meta: dict[str, Any] = {"resourceVersion": view.resource_version}
        if annotations:
            meta["annotations"] = dict(annotations)
        body = {"metadata": meta, "data": {key: text}}
        cm = await self._object(
            f"patch ConfigMap {view.namespace}/{view.name}",
            self.core.patch_namespaced_config_map,
            view.name,
            view.namespace,
            body,
            _content_type=MERGE,
        )
        return str(as_mapping(cm.get("metadata")).get("resourceVersion") or "")

    # Events ---------------------------------------------------------------------------------------------
    async def create_event(self, namespace: str, body: Mapping[str, Any]) -> None:
        """Create one core/v1 Event (:mod:`canopy_operator.k8s.events` builds it); the answer is not kept."""
        await self._object(f"create Event in {namespace}", self.core.create_namespaced_event, namespace, dict(body))

    # Deployments ----------------------------------------------------------------------------------------
    async def get_pod_template_annotation(self, namespace: str, name: str, key: str) -> str | None:
        dep = await self._object(
            f"get Deployment {namespace}/{name}", self.apps.read_namespaced_deployment, name, namespace
        )
        template = as_mapping(as_mapping(dep.get("spec")).get("template"))
        value = as_mapping(as_mapping(template.get("metadata")).get("annotations")).get(key)
        return str(value) if value is not None else None

    async def set_pod_template_annotation(self, namespace: str, name: str, key: str, value: str) -> int:
        """Roll the Deployment by changing a pod-template annotation (what `kubectl rollout restart` does); the
        Deployment's generation after the change."""
        body = {"spec": {"template": {"metadata": {"annotations": {key: value}}}}}
        dep = await self._object(
            f"patch Deployment {namespace}/{name}",
            self.apps.patch_namespaced_deployment,
            name,
            namespace,
            body,
            _content_type=MERGE,
        )
        return rollout_of(name, dep).generation

    async def get_rollout(self, namespace: str, name: str) -> RolloutView:
        """The Deployment's rollout progress as its controller reports it."""
        dep = await self._object(
            f"get Deployment {namespace}/{name}", self.apps.read_namespaced_deployment, name, namespace
        )
        return rollout_of(name, dep)

    # PromptExperiments ----------------------------------------------------------------------------------
    async def patch_experiment_status(
        self, namespace: str, name: str, status: dict[str, Any], resource_version: str | None = None
    ) -> dict[str, Any]:
        """Merge-patch status; with ``resource_version`` the write fails (Conflict) if anyone wrote since."""
        body: dict[str, Any] = {"status": status}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        experiment = (GROUP, VERSION, namespace, PLURAL, name)
        obj = await self._object(
            f"patch PromptExperiment {namespace}/{name} status",
            self.custom.patch_namespaced_custom_object_status,
            *experiment,
            body,
            _content_type=MERGE,
        )
        return drop_managed_fields(obj)

    async def replace_experiment_status(
        self, namespace: str, name: str, status: dict[str, Any], resource_version: str
    ) -> dict[str, Any]:
        """Replace the whole status (``PUT .../status``), only if the object is still at ``resource_version``
        (Conflict otherwise). The API server takes the status alone from the body (spec and metadata stay as
        stored), so the body carries nothing else but the object's name and version.

        The same stored status as a merge patch from the stored one to ``status``, at less API server CPU: a
        patch makes it encode the stored object, merge, and decode the result again, about 1.2 of 8.9 ms of a
        Running experiment's status write (issue #20, bench/RESULTS.md)."""
        body: dict[str, Any] = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND,
            "metadata": {"name": name, "namespace": namespace, "resourceVersion": resource_version},
            "status": status,
        }
        experiment = (GROUP, VERSION, namespace, PLURAL, name)
        obj = await self._object(
            f"replace PromptExperiment {namespace}/{name} status",
            self.custom.replace_namespaced_custom_object_status,
            *experiment,
            body,
        )
        return drop_managed_fields(obj)

    async def read_experiment(self, namespace: str, name: str) -> dict[str, Any]:
        """The PromptExperiment as stored now (a list by name: the operator's RBAC has list, not get).
        Raises ``NotFound``."""
        listed = await self._call(
            f"list PromptExperiment {namespace}/{name}",
            lambda: self.custom.list_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, field_selector=f"metadata.name={name}"
            ),
        )
        for item in (listed or {}).get("items") or []:
            if item.get("metadata", {}).get("name") == name:
                return drop_managed_fields(dict(item))
        raise NotFound(f"list PromptExperiment {namespace}/{name}: not found")

    # Secrets --------------------------------------------------------------------------------------------
    async def read_secret(self, namespace: str, name: str) -> SecretView:
        """A Secret's decoded data and resourceVersion (for a precondition on the next write)."""
        secret = await self._call(
            f"get Secret {namespace}/{name}", lambda: self.core.read_namespaced_secret(name, namespace)
        )
        data = {k: base64.b64decode(v).decode("utf-8", errors="replace") for k, v in (secret.data or {}).items()}
        meta = secret.metadata
        return SecretView(
            name=name,
            namespace=namespace,
            data=data,
            resource_version=meta.resource_version,
            labels=dict(meta.labels or {}),
            annotations=dict(meta.annotations or {}),
        )

    async def patch_secret(self, body: dict[str, Any]) -> str:
        """Merge-patch a Secret; a ``metadata.resourceVersion`` in ``body`` makes it conditional (409 Conflict).
        Returns the new resourceVersion."""
        ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
        secret = await self._call(
            f"patch Secret {ns}/{name}",
            lambda: self.core.patch_namespaced_secret(name, ns, body, _content_type=MERGE),  # type: ignore[call-arg]  # a documented **kwargs option
        )
        return str(secret.metadata.resource_version)

    async def create_secret(self, body: dict[str, Any]) -> None:
        ns = body["metadata"]["namespace"]
        await self._call(
            f"create Secret {ns}/{body['metadata']['name']}",
            lambda: self.core.create_namespaced_secret(ns, body),  # type: ignore[arg-type]  # dicts serialise as-is
        )

    async def delete_secret(self, namespace: str, name: str) -> None:
        await self._call(
            f"delete Secret {namespace}/{name}", lambda: self.core.delete_namespaced_secret(name, namespace)
        )

    # Jobs and pods --------------------------------------------------------------------------------------
    async def create_job(self, body: dict[str, Any]) -> None:
        ns = body["metadata"]["namespace"]
        job: Any = body  # the client serialises plain dicts as they are
        await self._call(
            f"create Job {ns}/{body['metadata']['name']}", lambda: self.batch.create_namespaced_job(ns, job)
        )

    async def list_jobs(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        result = await self._call(
            f"list Jobs in {namespace}",
            lambda: self.batch.list_namespaced_job(namespace, label_selector=selector),
        )
        return [self.api.sanitize_for_serialization(j) for j in result.items]

    async def delete_job(self, namespace: str, name: str) -> None:
        await self._call(
            f"delete Job {namespace}/{name}",
            lambda: self.batch.delete_namespaced_job(name, namespace, propagation_policy="Background"),
        )

    async def job_termination_message(self, namespace: str, job_name: str) -> str | None:
        """The termination message of the Job's newest pod's first container, if any."""
        pods = await self._call(
            f"list Pods of Job {namespace}/{job_name}",
            lambda: self.core.list_namespaced_pod(namespace, label_selector=f"job-name={job_name}"),
        )
        for pod in sorted(pods.items, key=lambda p: p.metadata.creation_timestamp or 0, reverse=True):
            for cs in (pod.status.container_statuses if pod.status else None) or []:
                term = cs.state.terminated if cs.state else None
                if term is not None and term.message:
                    return str(term.message)
        return None

    async def job_pod_log(
        self, namespace: str, job_name: str, container: str, *, limit_bytes: int, tail_lines: int | None = None
    ) -> str | None:
        """The log of a container of the Job's newest pod, at most ``limit_bytes`` (None: the Job has no pod)."""
        pods = await self._call(
            f"list Pods of Job {namespace}/{job_name}",
            lambda: self.core.list_namespaced_pod(namespace, label_selector=f"job-name={job_name}"),
        )
        newest = sorted(pods.items, key=lambda p: p.metadata.creation_timestamp or 0, reverse=True)
        if not newest:
            return None
        name = newest[0].metadata.name
        # Raw bytes (_preload_content=False): the client would parse a log that happens to be one JSON document
        # and hand back the str() of a dict.
        options: dict[str, Any] = {"container": container, "limit_bytes": limit_bytes, "_preload_content": False}
        if tail_lines is not None:
            options["tail_lines"] = tail_lines

        async def read() -> bytes:
            response: Any = await self.core.read_namespaced_pod_log(name, namespace, **options)
            data = bytearray()
            try:
                while len(data) <= limit_bytes:
                    chunk = await response.content.read(64 * 1024)
                    if not chunk:
                        break
                    data += chunk
            finally:
                response.release()
            return bytes(data)

        data = await self._call(f"read the log of Pod {namespace}/{name}", read)
        return data[:limit_bytes].decode("utf-8", "replace")


def _strings(value: object) -> dict[str, str]:
    """A string map of an answer (``data``, ``labels``, ``annotations``); absent or malformed reads as empty."""
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, Mapping) else {}
