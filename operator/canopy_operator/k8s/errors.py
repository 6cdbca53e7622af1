"""Kubernetes client exceptions become this small domain tree once, in the gateway."""

from __future__ import annotations

import asyncio

import aiohttp
from kubernetes_asyncio.client.exceptions import ApiException


class KubeError(Exception):
    """A Kubernetes API call failed."""

    transient = False


class NotFound(KubeError):
    """The object does not exist."""


class Conflict(KubeError):
    """The object changed since it was read (optimistic concurrency) or already exists."""

    transient = True


class Forbidden(KubeError):
    """RBAC denied the call."""


class Invalid(KubeError):
    """The API server rejected the object (schema, CEL, admission)."""


class Unavailable(KubeError):
    """The API server could not be reached or answered 5xx/429."""

    transient = True


def _reason(exc: ApiException) -> str:
    body = getattr(exc, "body", None) or ""
    text = body.decode(errors="replace") if isinstance(body, bytes) else str(body)
    return f"{exc.status} {exc.reason}: {' '.join(text.split())[:300]}"


def translate(exc: BaseException, what: str) -> KubeError:
    """Map a client exception to the domain tree with a message naming the object."""
    if isinstance(exc, ApiException):
        status = exc.status or 0
        cls: type[KubeError] = {404: NotFound, 409: Conflict, 403: Forbidden, 422: Invalid}.get(status, KubeError)
        if status == 429 or status >= 500:
            cls = Unavailable
        return cls(f"{what}: {_reason(exc)}")
    if isinstance(exc, aiohttp.ClientError | asyncio.TimeoutError | OSError):
        return Unavailable(f"{what}: {type(exc).__name__}: {exc}")
    return KubeError(f"{what}: {type(exc).__name__}: {exc}")
