"""The MLflow REST calls the operator makes (MLflow 3.x; shapes in ``docs/gen2-servers.md``): trace search with
their assessments, and the prompt registry's aliases. Bounded: pages of at most 500 traces, at most
``max_traces`` per search (more is an error, never a silent cut), every answer within the client's body cap.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from canopy_operator.core.tallies import MlflowAssessment, MlflowTrace
from canopy_operator.sources.http import JsonApi, ServerProtocolError, iso_time, json_object

PAGE_SIZE = 500
"""MLflow refuses larger pages."""
DEFAULT_MAX_TRACES = 50_000
SEARCH = "/api/3.0/mlflow/traces/search"
ALIAS = "/api/2.0/mlflow/registered-models/alias"
VERSION = "/api/2.0/mlflow/model-versions/get"


class TooManyTraces(ServerProtocolError):
    """A window holds more matching traces than the operator reads in one poll."""


def _text(value: object, limit: int = 65536) -> str | None:
    return value[:limit] if isinstance(value, str) else None


def parse_trace(item: object, endpoint: str) -> MlflowTrace:
    """One ``TraceInfoV3`` of a search answer, reduced to what counting needs (the rest is dropped at once)."""
    if not isinstance(item, dict) or not isinstance(item.get("trace_id"), str):
        raise ServerProtocolError(endpoint, "a trace without trace_id")
    requested = iso_time(item.get("request_time"))
    assessments = []
    for raw in item.get("assessments") or []:
        if not isinstance(raw, dict):
            continue
        source = json_object(raw.get("source"))
        feedback = json_object(raw.get("feedback"))
        assessments.append(
            MlflowAssessment(
                name=str(raw.get("assessment_name") or ""),
                value=feedback.get("value"),
                rationale=_text(raw.get("rationale"), 4096),
                source_type=_text(source.get("source_type"), 64),
                source_id=_text(source.get("source_id"), 256),
                valid=raw.get("valid") is not False,
                created_at=iso_time(raw.get("create_time")),
            )
        )
    tags = json_object(item.get("tags"))
    return MlflowTrace(
        trace_id=item["trace_id"][:256],
        timestamp_ms=int(requested.timestamp() * 1000) if requested else 0,
        assessments=tuple(assessments),
        tags={str(k)[:256]: str(v)[:1024] for k, v in tags.items() if isinstance(v, str)},
        request=_text(item.get("request_preview")),
        response=_text(item.get("response_preview")),
    )


class MlflowClient:
    """Trace search and prompt-registry aliases on one MLflow server."""

    def __init__(self, api: JsonApi, *, max_traces: int = DEFAULT_MAX_TRACES) -> None:
        self.api = api
        self.max_traces = max_traces

    async def search(self, experiment_id: str, filter_string: str) -> AsyncIterator[MlflowTrace]:
        """Every trace matching ``filter_string`` in the experiment, oldest first, each once (offset pages can
        shift while traces arrive: duplicates are dropped by id)."""
        seen: set[str] = set()
        token: str | None = None
        endpoint = f"MLflow POST {SEARCH}"
        for _ in range(self.max_traces // PAGE_SIZE + 2):
            body: dict[str, Any] = {
                "locations": [{"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": experiment_id}}],
                "filter": filter_string,
                "max_results": PAGE_SIZE,
                "order_by": ["timestamp_ms ASC"],
            }
            if token:
                body["page_token"] = token
            _, data = await self.api.call("POST", SEARCH, body=body)
            data = data if isinstance(data, dict) else {}
            traces = data.get("traces") or []
            if not isinstance(traces, list):
                raise ServerProtocolError(endpoint, "traces is not a list")
            for item in traces:
                trace = parse_trace(item, endpoint)
                if trace.trace_id in seen:
                    continue
                seen.add(trace.trace_id)
                if len(seen) > self.max_traces:
                    raise TooManyTraces(endpoint, f"more than {self.max_traces} traces match in the test's window")
                yield trace
            token = data.get("next_page_token") if isinstance(data.get("next_page_token"), str) else None
            if not token or not traces:
                return
        raise TooManyTraces(endpoint, f"more than {self.max_traces} traces match in the test's window")

    async def alias_version(self, name: str, alias: str) -> str | None:
        status, data = await self.api.call(
            "GET", ALIAS, template=ALIAS, params={"name": name, "alias": alias}, ok=(200, 404)
        )
        if status == 404:
            return None
        version = (data or {}).get("model_version", {}).get("version") if isinstance(data, dict) else None
        if not isinstance(version, str | int):
            raise ServerProtocolError(f"MLflow GET {ALIAS}", "model_version.version missing")
        return str(version)

    async def version_exists(self, name: str, version: str) -> bool:
        status, _ = await self.api.call(
            "GET", VERSION, template=VERSION, params={"name": name, "version": version}, ok=(200, 404)
        )
        return status == 200

    async def set_alias(self, name: str, alias: str, version: str) -> None:
        await self.api.call("POST", ALIAS, body={"name": name, "alias": alias, "version": version})


def preview_text(preview: str | None, key: str) -> str:
    """The text inside a request/response preview (``{"text": ...}`` / ``{"summary": ...}``), else the preview."""
    if not preview:
        return ""
    try:
        data = json.loads(preview)
    except ValueError:
        return preview
    if isinstance(data, dict) and isinstance(data.get(key), str):
        return str(data[key])
    return preview
