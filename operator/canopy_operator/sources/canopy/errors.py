"""The Canopy backend's failures as a small domain tree; the client translates every httpx error into it.

``BackendError``
  ``BackendUnreachable``    no answer: connection refused, DNS, reset before the answer, timeouts
  ``BackendHTTPError``      an answer with a status other than 200 (``status``, ``detail``)
  ``BackendProtocolError``  an answer the contract does not allow: bad JSON, wrong types, truncated, too big
  ``BackendStreamError``    a well-formed stream whose event reports a failure (``{"error": ...}``)
"""

from __future__ import annotations

from pydantic import ValidationError

from canopy_operator.sources.base import ErrorKind, SourceError


class BackendError(SourceError):
    """Any failure talking to the Canopy backend; the message is one line naming the endpoint."""

    def __init__(self, endpoint: str, problem: str) -> None:
        self.endpoint = endpoint
        self.problem = problem
        super().__init__(f"{endpoint}: {problem}")


class BackendUnreachable(BackendError):
    """No usable answer: connection refused, name not resolved, connection lost before the answer, timeout."""

    kind: ErrorKind = "unreachable"


class BackendHTTPError(BackendError):
    """The backend answered with a non-200 status; ``detail`` is FastAPI's ``detail`` or the body's start."""

    def __init__(self, endpoint: str, status: int, detail: str) -> None:
        self.status = status
        self.detail = detail
        self.kind = "http_5xx" if status >= 500 else "http_4xx"
        super().__init__(endpoint, f"backend answered {status}: {detail}")


class BackendProtocolError(BackendError):
    """The answer breaks the contract: invalid JSON or SSE, wrong types or shape, truncated, too big."""


class BackendStreamError(BackendError):
    """A stream event reported a failure (the model call failed); ``variant`` is ``a``/``b`` on A/B."""

    kind: ErrorKind = "stream"

    def __init__(self, endpoint: str, detail: str, variant: str | None = None) -> None:
        self.detail = detail
        self.variant = variant
        where = f" for variant {variant}" if variant is not None else ""
        super().__init__(endpoint, f"stream reported an error{where}: {detail}")


def describe_validation(exc: ValidationError) -> str:
    """One line for an answer that failed its model: where the first error is, what it is, how many more."""
    first = exc.errors(include_url=False)[0]
    where = ".".join(str(part) for part in first["loc"]) or "body"
    more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"unexpected answer at {where}: {first['msg']}{more}"
