# mypy: ignore-errors
# (This script runs in the Phoenix virtualenv built by hack/servers-assets.sh, never in the project's: mypy of
# the project cannot see the opentelemetry packages installed there, so it is not type-checked.)
"""Seed a real Phoenix server the way the course's instrumented Canopy app and its feedback handler do.

Run with the Phoenix env's Python; reads a JSON plan on stdin, writes one JSON object on stdout:

    {"url": "http://127.0.0.1:PORT", "project": "canopy", "steps": [STEP, ...]}
    -> {"project": "canopy", "steps": [RESULT, ...]}   (one RESULT per STEP, in order)

Steps (``op``):
- ``request {name?: "summarize", model?, http_child?: false, span_metadata?, start_time_ms?}`` ->
  ``{trace_id, parent_span_id, llm_span_id, http_span_id?, start_time_ms}``: one request traced with
  OpenInference attributes and exported over OTLP/HTTP: a ``CHAIN`` span ``name`` with an ``LLM`` child
  ``ChatCompletion`` (and, with ``http_child``, a plain ``POST`` client span under the LLM span, as an HTTP
  instrumentation would add). ``span_metadata`` goes to the OpenInference ``metadata`` attribute.
- ``annotate {span_id | request: STEP_INDEX, on?: "llm"|"parent"|"http", annotation_name?: "user_feedback",
  annotator_kind?: "HUMAN", label?, score?, explanation?, metadata?, identifier?}`` -> ``{span_id, id}``:
  ``POST /v1/span_annotations?sync=true`` (what the course's feedback handler does; re-posting the same
  ``identifier`` on the same span and name replaces the vote). Retries the short 404 after an export.
- ``vote {...request, ...annotate}``: both in one step (results merged); ``on`` defaults to ``llm``.

Each export is synchronous (SimpleSpanProcessor) and each request is read back from
``GET /v1/projects/{project}/spans`` before the step returns, so seeded spans are listable at once.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, set_span_in_context

VISIBLE_TIMEOUT = 30.0
HTTP_TIMEOUT = 10.0


def _http(method, url, body=None):
    data = None if body is None else json.dumps(body).encode()
    # S310: the URL is the loopback http:// URL of the server this script was given.
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})  # noqa: S310
    with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT) as resp:  # noqa: S310
        return json.loads(resp.read() or b"null")


class Seeder:
    def __init__(self, url, project):
        self.url = url.rstrip("/")
        self.project = project
        self.provider = TracerProvider(resource=Resource.create({"openinference.project.name": project}))
        self.provider.add_span_processor(
            SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{self.url}/v1/traces", timeout=HTTP_TIMEOUT))
        )
        self.tracer = self.provider.get_tracer("canopy-backend")

    def request(self, step):
        start_ms = step.get("start_time_ms")
        start_ns = None if start_ms is None else int(start_ms) * 1_000_000
        text = step.get("text", "Text to summarize.")
        model = step.get("model", "llama-3.2-1b-instruct")
        attributes = {"openinference.span.kind": "CHAIN", "input.value": text, "input.mime_type": "text/plain"}
        if step.get("span_metadata") is not None:
            attributes["metadata"] = json.dumps(step["span_metadata"])
        parent = self.tracer.start_span(
            step.get("name", "summarize"), kind=SpanKind.SERVER, attributes=attributes, start_time=start_ns
        )
        ctx = set_span_in_context(parent)
        llm = self.tracer.start_span(
            "ChatCompletion",
            context=ctx,
            kind=SpanKind.INTERNAL,
            attributes={
                "openinference.span.kind": "LLM",
                "llm.provider": "openai",
                "llm.system": "openai",
                "llm.model_name": model,
                "llm.invocation_parameters": json.dumps({"model": model, "temperature": 0.2, "max_tokens": 256}),
                "llm.input_messages.0.message.role": "system",
                "llm.input_messages.0.message.content": "Summarize the user's text.",
                "llm.input_messages.1.message.role": "user",
                "llm.input_messages.1.message.content": text,
                "llm.output_messages.0.message.role": "assistant",
                "llm.output_messages.0.message.content": "A summary.",
                "llm.token_count.prompt": 42,
                "llm.token_count.completion": 7,
                "llm.token_count.total": 49,
                "input.value": json.dumps({"messages": [{"role": "user", "content": text}], "model": model}),
                "input.mime_type": "application/json",
                "output.value": json.dumps({"choices": [{"message": {"role": "assistant", "content": "A summary."}}]}),
                "output.mime_type": "application/json",
            },
            start_time=None if start_ns is None else start_ns + 1_000_000,
        )
        result = {
            "trace_id": format(parent.get_span_context().trace_id, "032x"),
            "parent_span_id": format(parent.get_span_context().span_id, "016x"),
            "llm_span_id": format(llm.get_span_context().span_id, "016x"),
        }
        if step.get("http_child"):
            http = self.tracer.start_span(
                "POST",
                context=set_span_in_context(llm),
                kind=SpanKind.CLIENT,
                attributes={"http.method": "POST", "http.url": "http://llm.invalid/v1/chat/completions"},
                start_time=None if start_ns is None else start_ns + 2_000_000,
            )
            http.end(end_time=None if start_ns is None else start_ns + 3_000_000)
            result["http_span_id"] = format(http.get_span_context().span_id, "016x")
        llm.end(end_time=None if start_ns is None else start_ns + 4_000_000)
        parent.end(end_time=None if start_ns is None else start_ns + 5_000_000)
        result["start_time_ms"] = parent.start_time // 1_000_000
        self._wait_listed(result)
        return result

    def _wait_listed(self, request):
        """Bounded wait until the server lists every span of the request (ingestion is queued)."""
        wanted = {v for k, v in request.items() if k.endswith("span_id")}
        query = urllib.parse.urlencode({"trace_id": request["trace_id"], "limit": 100})
        url = f"{self.url}/v1/projects/{urllib.parse.quote(self.project)}/spans?{query}"
        deadline = time.monotonic() + VISIBLE_TIMEOUT
        while True:
            try:
                seen = {s["context"]["span_id"] for s in _http("GET", url)["data"]}
            except urllib.error.HTTPError as e:
                if e.code != 404:  # 404: the project does not exist until its first span is stored
                    raise
                seen = set()
            if wanted <= seen:
                return
            if time.monotonic() > deadline:
                raise SystemExit(f"spans {sorted(wanted - seen)} not listed after {VISIBLE_TIMEOUT}s")
            time.sleep(0.1)

    def annotate(self, step, results):
        span_id = step.get("span_id")
        if span_id is None:
            request = results[step["request"]] if "request" in step else step
            span_id = request[f"{step.get('on', 'llm')}_span_id"]
        annotation = {
            "span_id": span_id,
            "name": step.get("annotation_name", "user_feedback"),
            "annotator_kind": step.get("annotator_kind", "HUMAN"),
            "result": {k: step[k] for k in ("label", "score", "explanation") if k in step},
            "metadata": step.get("metadata") or {},
            "identifier": step.get("identifier", ""),
        }
        deadline = time.monotonic() + VISIBLE_TIMEOUT
        while True:
            try:
                body = _http("POST", f"{self.url}/v1/span_annotations?sync=true", {"data": [annotation]})
                break
            except urllib.error.HTTPError as e:
                # Right after an export the span may not be stored yet (about 0.1 s): retry a bounded time.
                if e.code != 404 or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        return {"span_id": span_id, "id": body["data"][0]["id"]}


def run(plan):
    seeder = Seeder(plan["url"], plan.get("project", "canopy"))
    results = []
    try:
        for step in plan["steps"]:
            op = step["op"]
            if op == "request":
                result = seeder.request(step)
            elif op == "annotate":
                result = seeder.annotate(step, results)
            elif op == "vote":
                result = seeder.request(step)
                result.update(seeder.annotate({**step, **result}, results))
            else:
                raise SystemExit(f"unknown op {op!r}")
            results.append(result)
    finally:
        seeder.provider.shutdown()
    return {"project": seeder.project, "steps": results}


if __name__ == "__main__":
    out = sys.stdout
    sys.stdout = sys.stderr  # anything a library prints goes to stderr; stdout carries only the result
    json.dump(run(json.load(sys.stdin)), out)
    out.write("\n")
