"""The Phoenix REST calls the operator makes (Phoenix 20.x; shapes in ``docs/gen2-servers.md``): the LLM spans
of a window, and their annotations in batches. Bounded: pages of at most 1000 spans, at most ``max_spans`` per
window (more is an error, never a silent cut), annotations read for 100 spans a request."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

from canopy_operator.core.tallies import SpanAnnotation
from canopy_operator.sources.http import JsonApi, ServerProtocolError, iso_time, json_object

SPAN_PAGE = 1000
ANNOTATION_BATCH = 100
ANNOTATION_PAGE = 1000
DEFAULT_MAX_SPANS = 50_000


class TooManySpans(ServerProtocolError):
    """A window holds more spans than the operator reads in one poll."""


@dataclass(frozen=True)
class Span:
    """An LLM span of the window: its id, its parent's, when it started, and the texts it carried."""

    span_id: str
    parent_id: str | None
    start_time: str
    input_text: str
    output_text: str


def _str(value: object, limit: int) -> str | None:
    return value[:limit] if isinstance(value, str) else None


def parse_span(item: object, endpoint: str) -> Span:
    if not isinstance(item, dict) or not isinstance(item.get("context"), dict):
        raise ServerProtocolError(endpoint, "a span without context")
    span_id = item["context"].get("span_id")
    if not isinstance(span_id, str):
        raise ServerProtocolError(endpoint, "a span without context.span_id")
    attributes = json_object(item.get("attributes"))
    return Span(
        span_id=span_id[:64],
        parent_id=_str(item.get("parent_id"), 64),
        start_time=_str(item.get("start_time"), 64) or "",
        input_text=_str(attributes.get("input.value"), 65536) or "",
        output_text=_str(attributes.get("output.value"), 65536) or "",
    )


def parse_annotation(item: object, endpoint: str) -> SpanAnnotation:
    if not isinstance(item, dict) or not isinstance(item.get("span_id"), str):
        raise ServerProtocolError(endpoint, "an annotation without span_id")
    result = json_object(item.get("result"))
    metadata = json_object(item.get("metadata"))
    score = result.get("score")
    return SpanAnnotation(
        span_id=item["span_id"][:64],
        name=str(item.get("name") or "")[:128],
        identifier=str(item.get("identifier") or "")[:256],
        label=_str(result.get("label"), 256),
        score=float(score) if isinstance(score, int | float) and not isinstance(score, bool) else None,
        explanation=_str(result.get("explanation"), 4096),
        arm=_str(metadata.get("arm"), 64),
        annotator_kind=_str(item.get("annotator_kind"), 32),
        updated_at=iso_time(item.get("updated_at")),
    )


class PhoenixClient:
    """Spans and span annotations of one Phoenix project."""

    def __init__(self, api: JsonApi, project: str, *, max_spans: int = DEFAULT_MAX_SPANS) -> None:
        self.api = api
        self.project = project
        self.max_spans = max_spans
        self._base = f"/v1/projects/{quote(project, safe='')}"

    async def llm_spans(self, start: datetime, name: str | None) -> AsyncIterator[Span]:
        """The LLM spans that started at or after ``start``, each once."""
        template = "/v1/projects/{project}/spans"
        endpoint = f"Phoenix GET {template}"
        cursor: str | None = None
        seen: set[str] = set()
        for _ in range(self.max_spans // SPAN_PAGE + 2):
            params: dict[str, Any] = {"span_kind": "LLM", "start_time": start.isoformat(), "limit": SPAN_PAGE}
            if name:
                params["name"] = name
            if cursor:
                params["cursor"] = cursor
            status, data = await self.api.call(
                "GET", f"{self._base}/spans", template=template, params=params, ok=(200, 404)
            )
            if status == 404:
                return  # no span was ever sent to this project
            data = data if isinstance(data, dict) else {}
            items = data.get("data") or []
            if not isinstance(items, list):
                raise ServerProtocolError(endpoint, "data is not a list")
            for item in items:
                span = parse_span(item, endpoint)
                if span.span_id in seen:
                    continue
                seen.add(span.span_id)
                if len(seen) > self.max_spans:
                    raise TooManySpans(endpoint, f"more than {self.max_spans} LLM spans in the test's window")
                yield span
            cursor = data.get("next_cursor") if isinstance(data.get("next_cursor"), str) else None
            if not cursor or not items:
                return
        raise TooManySpans(endpoint, f"more than {self.max_spans} LLM spans in the test's window")

    async def annotations(self, span_ids: Sequence[str], names: Sequence[str]) -> list[SpanAnnotation]:
        """The annotations named ``names`` on ``span_ids`` (read 100 spans a request, every page)."""
        template = "/v1/projects/{project}/span_annotations"
        endpoint = f"Phoenix GET {template}"
        out: list[SpanAnnotation] = []
        for start in range(0, len(span_ids), ANNOTATION_BATCH):
            batch = list(span_ids[start : start + ANNOTATION_BATCH])
            cursor: str | None = None
            for _ in range(10_000):
                params: dict[str, Any] = {
                    "span_ids": batch,
                    "include_annotation_names": list(names),
                    "limit": ANNOTATION_PAGE,
                }
                if cursor:
                    params["cursor"] = cursor
                status, data = await self.api.call(
                    "GET", f"{self._base}/span_annotations", template=template, params=params, ok=(200, 404)
                )
                if status == 404:
                    break  # none of these spans is stored (yet): no annotations
                data = data if isinstance(data, dict) else {}
                items = data.get("data") or []
                if not isinstance(items, list):
                    raise ServerProtocolError(endpoint, "data is not a list")
                out.extend(parse_annotation(item, endpoint) for item in items)
                cursor = data.get("next_cursor") if isinstance(data.get("next_cursor"), str) else None
                if not cursor or not items:
                    break
        return out
