"""The MLflow REST calls of the Generation 2 stand-in, written against ``mlflow==3.17.2`` (docs/gen2-servers.md).

Independent of the operator's own MLflow adapter on purpose: a test double that shared the code under test
would agree with it by construction. The bodies are what the MLflow 3 Python client sends (``message_to_json``
of its protos), checked against the pinned server's handlers:

- ``POST /api/3.0/mlflow/traces`` (StartTraceV3, what the client calls when a trace *ends*):
  ``{"trace": {"trace_info": {trace_id, trace_location: {type: MLFLOW_EXPERIMENT, mlflow_experiment:
  {experiment_id}}, request_time (RFC 3339, ms), execution_duration ("0.012s"), state: OK, trace_metadata,
  tags: {"mlflow.traceName": ...}, request_preview, response_preview}}}``; the client chooses the trace id
  (``tr-`` and 32 hex digits).
- ``POST /api/3.0/mlflow/traces/{trace_id}/assessments`` (CreateAssessment, ``mlflow.log_feedback``):
  ``{"assessment": {assessment_name, trace_id, source: {source_type, source_id}, create_time,
  last_update_time, feedback: {value}, rationale?, valid: true}}``; no ``rationale`` key without one.
- the prompt registry: ``GET /api/2.0/mlflow/registered-models/alias`` (one alias, with the version's tags),
  ``GET .../model-versions/get``, ``GET .../registered-models/get`` (``latest_versions``); prompts are
  registered models and versions tagged ``mlflow.prompt.is_prompt``, the text in the version tag
  ``mlflow.prompt.text`` (what ``mlflow.genai.register_prompt`` writes; :meth:`MlflowApi.register_prompt`
  writes the same for the demo and the tests).
- experiments: ``GET /api/2.0/mlflow/experiments/get-by-name``, ``POST .../experiments/create``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

import httpx

TRACES = "/api/3.0/mlflow/traces"
ALIAS = "/api/2.0/mlflow/registered-models/alias"
MODEL = "/api/2.0/mlflow/registered-models/get"
CREATE_MODEL = "/api/2.0/mlflow/registered-models/create"
VERSION = "/api/2.0/mlflow/model-versions/get"
CREATE_VERSION = "/api/2.0/mlflow/model-versions/create"
EXPERIMENT_BY_NAME = "/api/2.0/mlflow/experiments/get-by-name"
CREATE_EXPERIMENT = "/api/2.0/mlflow/experiments/create"

IS_PROMPT = "mlflow.prompt.is_prompt"
PROMPT_TEXT = "mlflow.prompt.text"
PROMPT_TYPE = "_mlflow_prompt_type"
PROMPT_SOURCE = "dummy-source"
"""The ``source`` MLflow gives prompt versions (a required field, unused for prompts)."""
TRACE_NAME = "mlflow.traceName"
HUMAN = "HUMAN"
CANOPY_USER = "canopy_user"


class MlflowError(Exception):
    """MLflow answered with an error (``status`` 0: no answer at all); ``code`` is MLflow's ``error_code``."""

    def __init__(self, endpoint: str, status: int, code: str, message: str) -> None:
        super().__init__(f"MLflow {endpoint}: {status} {code} {message}".strip())
        self.status = status
        self.code = code

    @property
    def missing(self) -> bool:
        """The thing asked for does not exist (yet)."""
        return self.status == 404 or self.code == "RESOURCE_DOES_NOT_EXIST"


@dataclass(frozen=True)
class PromptVersion:
    """One version of a registered prompt."""

    name: str
    version: str
    text: str


@dataclass(frozen=True)
class TraceRecord:
    """One finished trace as the backend exports it."""

    name: str
    """``summarization``, ``summarization_ab_a``, ``summarization_ab_b``."""
    request_preview: str
    response_preview: str
    started_at: datetime
    trace_id: str
    """Chosen by the client (:func:`new_trace_id`), so it is known before the export."""
    duration_ms: int = 12


def new_trace_id() -> str:
    """A trace id as MLflow 3 clients make them."""
    return f"tr-{uuid.uuid4().hex}"


def rfc3339_ms(moment: datetime) -> str:
    """Protobuf JSON's Timestamp at millisecond precision, as the MLflow client writes it."""
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def _tags(items: object) -> dict[str, str]:
    if not isinstance(items, list):
        return {}
    return {str(t.get("key")): str(t.get("value")) for t in items if isinstance(t, dict)}


def _prompt_version(mv: object, name: str) -> PromptVersion | None:
    if not isinstance(mv, dict) or mv.get("version") is None:
        return None
    return PromptVersion(name=name, version=str(mv["version"]), text=_tags(mv.get("tags")).get(PROMPT_TEXT, ""))


class MlflowApi:
    """The calls to one MLflow tracking server (``base_url``, e.g. ``$MLFLOW_TRACKING_URI``)."""

    def __init__(
        self, base_url: str, *, timeout: float = 10.0, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.AsyncClient(
            base_url=self.base_url, timeout=timeout, transport=transport, trust_env=False, follow_redirects=False
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def call(
        self, method: str, path: str, *, params: dict[str, str] | None = None, body: Any = None
    ) -> dict[str, Any]:
        """The JSON object of a 200 answer; :class:`MlflowError` otherwise."""
        endpoint = f"{method} {path}"
        try:
            response = await self._http.request(method, path, params=params, json=body)
        except httpx.HTTPError as exc:
            raise MlflowError(endpoint, 0, "UNREACHABLE", type(exc).__name__) from None
        try:
            data = response.json() if response.content else {}
        except ValueError:
            data = {}
        data = data if isinstance(data, dict) else {}
        if response.status_code != 200:
            code = str(data.get("error_code") or "")
            raise MlflowError(endpoint, response.status_code, code, str(data.get("message") or "")[:200])
        return data

    # ---- tracking --------------------------------------------------------------------------------------------

    async def experiment_id(self, name: str) -> str:
        """The id of the experiment ``name``, created when missing (``mlflow.set_experiment``)."""
        for _ in range(3):
            try:
                data = await self.call("GET", EXPERIMENT_BY_NAME, params={"experiment_name": name})
                return str(data["experiment"]["experiment_id"])
            except MlflowError as exc:
                if not exc.missing:
                    raise
            try:
                return str((await self.call("POST", CREATE_EXPERIMENT, body={"name": name}))["experiment_id"])
            except MlflowError as exc:
                if exc.code != "RESOURCE_ALREADY_EXISTS":
                    raise  # created by someone else in between: read it again
        raise MlflowError(f"GET {EXPERIMENT_BY_NAME}", 0, "RACE", f"experiment {name!r} neither found nor created")

    async def start_trace(self, experiment_id: str, trace: TraceRecord) -> str:
        """Export one finished trace (StartTraceV3); its id."""
        info = {
            "trace_id": trace.trace_id,
            "trace_location": {"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": experiment_id}},
            "request_time": rfc3339_ms(trace.started_at),
            "execution_duration": f"{trace.duration_ms / 1000:.3f}s",
            "state": "OK",
            "trace_metadata": {
                "mlflow.traceInputs": trace.request_preview,
                "mlflow.traceOutputs": trace.response_preview,
                "mlflow.trace_schema.version": "3",
            },
            "tags": {TRACE_NAME: trace.name},
            "request_preview": trace.request_preview,
            "response_preview": trace.response_preview,
        }
        await self.call("POST", TRACES, body={"trace": {"trace_info": info}})
        return trace.trace_id

    async def log_feedback(
        self,
        trace_id: str,
        name: str,
        value: object,
        *,
        rationale: str | None,
        now: datetime,
        source_type: str = HUMAN,
        source_id: str = CANOPY_USER,
    ) -> str:
        """``mlflow.log_feedback``: one feedback assessment on the trace; its id."""
        stamp = rfc3339_ms(now)
        assessment: dict[str, Any] = {
            "assessment_name": name,
            "trace_id": trace_id,
            "source": {"source_type": source_type, "source_id": source_id},
            "create_time": stamp,
            "last_update_time": stamp,
            "feedback": {"value": value},
            "valid": True,
        }
        if rationale is not None:
            assessment["rationale"] = rationale
        data = await self.call("POST", f"{TRACES}/{trace_id}/assessments", body={"assessment": assessment})
        return str((data.get("assessment") or {}).get("assessment_id", ""))

    # ---- prompt registry: reads ------------------------------------------------------------------------------

    async def alias_version(self, name: str, alias: str) -> PromptVersion | None:
        """The version ``prompts:/<name>@<alias>`` names (with its text), or None when there is none."""
        try:
            data = await self.call("GET", ALIAS, params={"name": name, "alias": alias})
        except MlflowError as exc:
            if exc.missing:
                return None
            raise
        return _prompt_version(data.get("model_version"), name)

    async def prompt_version(self, name: str, version: str) -> PromptVersion | None:
        """``prompts:/<name>/<version>``, or None when there is no such version."""
        try:
            data = await self.call("GET", VERSION, params={"name": name, "version": version})
        except MlflowError as exc:
            if exc.missing:
                return None
            raise
        return _prompt_version(data.get("model_version"), name)

    async def latest_version(self, name: str) -> PromptVersion | None:
        """The newest version (``registered-models/get``'s ``latest_versions``), or None without a version."""
        try:
            data = await self.call("GET", MODEL, params={"name": name})
        except MlflowError as exc:
            if exc.missing:
                return None
            raise
        versions = [v for v in (data.get("registered_model") or {}).get("latest_versions") or [] if isinstance(v, dict)]
        numbered = [v for v in versions if str(v.get("version", "")).isdigit()]
        if not numbered:
            return None
        newest = max(numbered, key=lambda v: int(v["version"]))
        if PROMPT_TEXT in _tags(newest.get("tags")):
            return _prompt_version(newest, name)
        return await self.prompt_version(name, str(newest["version"]))  # a server that lists versions without tags

    # ---- prompt registry: writes (the demo and the tests set the registry up) --------------------------------

    async def register_prompt(self, name: str, template: str) -> str:
        """``mlflow.genai.register_prompt``: a new text version of ``name`` (the prompt created if missing)."""
        try:
            await self.call("POST", CREATE_MODEL, body={"name": name, "tags": [{"key": IS_PROMPT, "value": "true"}]})
        except MlflowError as exc:
            if exc.code != "RESOURCE_ALREADY_EXISTS":
                raise
        tags = [
            {"key": IS_PROMPT, "value": "true"},
            {"key": PROMPT_TEXT, "value": template},
            {"key": PROMPT_TYPE, "value": "text"},
        ]
        data = await self.call("POST", CREATE_VERSION, body={"name": name, "source": PROMPT_SOURCE, "tags": tags})
        return str(data["model_version"]["version"])

    async def set_alias(self, name: str, alias: str, version: str) -> None:
        """Point ``alias`` at ``version`` (what a promotion does)."""
        await self.call("POST", ALIAS, body={"name": name, "alias": alias, "version": version})
