"""FastAPI's wire behaviour, rebuilt on aiohttp: JSON bodies, 422 validation bodies, 404/405/500 answers.

Checked against FastAPI 0.165 / Starlette 1.10 / pydantic 2: compact JSON with ``ensure_ascii=False`` and
``allow_nan=False`` (an answer that cannot be encoded becomes a plain 500, e.g. a lone surrogate stored in a
feedback text), bodies parsed as JSON only for an ``application/json`` or ``+json`` content type, the body
validated before the endpoint runs (so a bad body is a 422 even where the feature is off).
"""

from __future__ import annotations

import email.message
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

log = logging.getLogger(__name__)

_M = TypeVar("_M", bound=BaseModel)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class BodyRejected(Exception):
    """The request body failed FastAPI's parsing or validation; ``response`` is what FastAPI answers."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


def json_response(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """FastAPI's ``JSONResponse``; an answer JSON cannot carry becomes the plain 500 Starlette sends."""
    try:
        body = json.dumps(content, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":"))
        payload = body.encode("utf-8")
    except (ValueError, TypeError) as exc:  # UnicodeEncodeError is a ValueError
        log.warning("answer cannot be encoded as JSON: %s", exc)
        return internal_error()
    return web.Response(body=payload, status=status, headers=headers, content_type="application/json")


def detail(status: int, message: str) -> web.Response:
    """``HTTPException(status_code=status, detail=message)``."""
    return json_response({"detail": message}, status=status)


def internal_error() -> web.Response:
    """An unhandled exception in a FastAPI endpoint."""
    return web.Response(status=500, text="Internal Server Error", content_type="text/plain", charset="utf-8")


async def parse_body(request: web.Request, model: type[_M]) -> _M:
    """The request body as ``model``, or :class:`BodyRejected` carrying FastAPI's 422/400 answer."""
    raw = await request.read()
    body: Any = None
    if raw:
        try:
            body = json.loads(raw) if _is_json(request.headers.get("Content-Type")) else raw
        except json.JSONDecodeError as exc:
            error = {
                "type": "json_invalid",
                "loc": ["body", exc.pos],
                "msg": "JSON decode error",
                "input": {},
            }
            raise BodyRejected(_validation_response([{**error, "ctx": {"error": exc.msg}}])) from exc
        except ValueError as exc:  # bytes that are not text at all
            raise BodyRejected(detail(400, "There was an error parsing the body")) from exc
    if body is None:
        missing = {"type": "missing", "loc": ["body"], "msg": "Field required", "input": None}
        raise BodyRejected(_validation_response([missing]))
    try:
        return model.model_validate(body, from_attributes=True)  # as FastAPI does
    except ValidationError as exc:
        errors = [
            {**error, "loc": ["body", *error["loc"]]} for error in exc.errors(include_url=False, include_context=True)
        ]
        raise BodyRejected(_validation_response(errors)) from exc


def _is_json(content_type: str | None) -> bool:
    if not content_type:
        return False  # FastAPI's strict_content_type: no header, no JSON
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (subtype == "json" or subtype.endswith("+json"))


def _validation_response(errors: list[dict[str, Any]]) -> web.Response:
    return json_response({"detail": [_jsonable(error) for error in errors]}, status=422)


def _jsonable(value: Any) -> Any:
    """FastAPI's ``jsonable_encoder`` for what can appear in a validation error."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


@web.middleware
async def fastapi_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Unknown paths, wrong methods and crashes answered the way FastAPI does."""
    try:
        return await handler(request)
    except BodyRejected as rejected:
        return rejected.response
    except web.HTTPMethodNotAllowed as exc:
        response = detail(405, "Method Not Allowed")
        # Starlette names the methods of the first route registered for the path; in the backend that is
        # the POST wherever a path has one, else the GET (with its implicit HEAD).
        response.headers["Allow"] = "POST" if "POST" in exc.allowed_methods else "GET, HEAD"
        return response
    except web.HTTPNotFound:
        return detail(404, "Not Found")
    except web.HTTPException:
        raise
    except Exception:
        log.exception("simulated backend endpoint crashed: %s %s", request.method, request.path)
        return internal_error()
