"""The operator's leader-election Lease (``coordination.k8s.io/v1``): read it, create it, replace it.

One named Lease in the operator's namespace; every replace carries the resourceVersion it was read at, so two
replicas racing for it cannot both win (409 Conflict for the loser). What to write is decided in
:mod:`canopy_operator.core.leader`; the loop that renews it is in ``handlers/leadership``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from kubernetes_asyncio import client

from canopy_operator.core.leader import LeaseRecord
from canopy_operator.k8s.errors import NotFound, Unavailable, translate

T = TypeVar("T")
LABELS = {"app.kubernetes.io/name": "canopy-operator", "app.kubernetes.io/component": "leader-election"}


@dataclass(frozen=True)
class LeaseView:
    """A Lease's record and the resourceVersion it was read (or written) at."""

    record: LeaseRecord
    resource_version: str


def micro_time(value: datetime | None) -> str | None:
    """A MicroTime as the API server parses it: RFC 3339 in UTC with exactly six fractional digits."""
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _utc(value: Any) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _view(lease: Any) -> LeaseView:
    spec = lease.spec
    record = LeaseRecord(
        holder=(spec.holder_identity or None) if spec else None,
        duration=spec.lease_duration_seconds if spec else None,
        acquired=_utc(spec.acquire_time) if spec else None,
        renewed=_utc(spec.renew_time) if spec else None,
        transitions=int(spec.lease_transitions or 0) if spec else 0,
    )
    return LeaseView(record, str(lease.metadata.resource_version))


class Leases:
    """One Lease, ``namespace/name``; each call bounded by ``deadline`` seconds (a stalled API server)."""

    def __init__(self, api: client.ApiClient, namespace: str, name: str, deadline: float = 10.0) -> None:
        self.coordination = client.CoordinationV1Api(api)
        self.namespace = namespace
        self.name = name
        self.deadline = deadline

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    async def _call(self, verb: str, fn: Callable[[], Awaitable[T]]) -> T:
        what = f"{verb} Lease {self.ref}"
        try:
            async with asyncio.timeout(self.deadline):
                return await fn()
        except TimeoutError as exc:
            raise Unavailable(f"{what}: no answer within {self.deadline:g}s") from exc
        except Exception as exc:
            raise translate(exc, what) from exc

    def _body(self, record: LeaseRecord, resource_version: str | None) -> dict[str, Any]:
        metadata: dict[str, Any] = {"name": self.name, "namespace": self.namespace, "labels": dict(LABELS)}
        if resource_version is not None:
            metadata["resourceVersion"] = resource_version
        spec = {
            "holderIdentity": record.holder or None,
            "leaseDurationSeconds": record.duration,
            "acquireTime": micro_time(record.acquired),
            "renewTime": micro_time(record.renewed),
            "leaseTransitions": record.transitions,
        }
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": metadata,
            "spec": {key: value for key, value in spec.items() if value is not None},
        }

    async def get(self) -> LeaseView | None:
        """The Lease now; None when it does not exist."""
        try:
            lease = await self._call("get", lambda: self.coordination.read_namespaced_lease(self.name, self.namespace))
        except NotFound:
            return None
        return _view(lease)

    async def create(self, record: LeaseRecord) -> LeaseView:
        """Create the Lease holding ``record``; Conflict when another replica created it first."""
        body = self._body(record, None)
        lease = await self._call("create", lambda: self.coordination.create_namespaced_lease(self.namespace, body))  # type: ignore[arg-type]  # a dict body is serialised as-is
        return _view(lease)

    async def replace(self, current: LeaseView, record: LeaseRecord) -> LeaseView:
        """Write ``record`` only if the Lease is still at ``current.resource_version`` (Conflict otherwise)."""
        body = self._body(record, current.resource_version)
        lease = await self._call(
            "update",
            lambda: self.coordination.replace_namespaced_lease(self.name, self.namespace, body),  # type: ignore[arg-type]  # a dict body is serialised as-is
        )
        return _view(lease)
