"""JSON logs: one object per line, secrets redacted, prompt texts hashed unless asked for.

Every record that reaches the root logger, Kopf's own included, is written by one handler as
``{"ts", "level", "logger", "event", "object"?, "message", ...extra fields}``. Kopf is *not* asked to
format its logs (neither ``kopf.configure()`` nor ``kopf run --log-format``): its loggers propagate to
the root logger, so its records come out in the same shape, with Kopf's object reference turned into
``object: "namespace/name"``. :func:`configure_logging` removes a handler that ``kopf.configure()``
may have installed, so calling it last always leaves exactly one JSON writer.

Redaction happens in :class:`RedactionFilter`, installed on that handler and on the ``kopf.objects``
logger (whose records Kopf also posts as Kubernetes Events). It removes URL userinfo, bearer tokens and
every value registered with the filter's :class:`~canopy_operator.core.redact.Redactor` (the one
:func:`configure_logging` returns on its handler, ``handler.redactor``). Fields named like prompts
(``prompt``, ``*_prompt``, ``input_text``, ``response_*`` ...) are replaced by :func:`prompt_ref`; free-text
messages are not searched for prompts, so pass prompts as fields or through :func:`prompt_ref`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from canopy_operator.core.redact import Redactor

PROMPT_FIELDS = frozenset(
    {"prompt", "prompt_b", "input_text", "response_text", "response_a", "response_b", "expected_result"}
)
DEFAULT_EVENT = "log"
_FIELDS_ATTR = "canopy_fields"
_KOPF_ATTRS = frozenset({"settings", "k8s_skip", "k8s_ref"})
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
_PROMPT_REF = re.compile(r"sha256:[0-9a-f]{12}")


def prompt_ref(text: str) -> str:
    """How a prompt text appears in logs (unless ``--log-prompts``): ``sha256:<12 hex>``.

    A reference is returned unchanged, so hashing twice gives the same reference.
    """
    if _PROMPT_REF.fullmatch(text):
        return text
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def _is_prompt_field(key: str) -> bool:
    return key in PROMPT_FIELDS or key.endswith("_prompt")


def _extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = {
        key: value
        for key, value in vars(record).items()
        if key not in _RECORD_ATTRS and key not in _KOPF_ATTRS and key != _FIELDS_ATTR and key[:1] != "_"
    }
    fields.update(getattr(record, _FIELDS_ATTR, None) or {})
    return fields


class RedactionFilter(logging.Filter):
    """Rewrites a record in place: message, extra fields and exception text redacted, prompts hashed."""

    def __init__(self, redact: Redactor, log_prompts: bool = False) -> None:
        super().__init__()
        self.redact = redact
        self.log_prompts = log_prompts

    def _clean(self, value: Any, key: str = "") -> Any:
        if isinstance(value, str):
            if _is_prompt_field(key):
                return value if self.log_prompts else prompt_ref(value)
            return self.redact(value)
        if isinstance(value, dict):
            return {str(k): self._clean(v, str(k)) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self._clean(item, key) for item in value]
        return value

    def filter(self, record: logging.LogRecord) -> bool:
        redact = self.redact
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            message = str(record.msg)
        record.msg, record.args = redact(message), None
        for key, value in list(vars(record).items()):
            if key not in _RECORD_ATTRS and key not in _KOPF_ATTRS:
                setattr(record, key, self._clean(value, key))
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


class QuietSuccesses(logging.Filter):
    """Drops Kopf's "Handler 'ID' succeeded." line for the handlers named: ones that run on every event of every
    object (the operator's ``wake``), where that line was most of the log (2 500 lines for 500 new experiments,
    and about 3 % of the operator's CPU in that burst, issue #20) and said nothing. Their failures are logged as
    before."""

    def __init__(self, handler_ids: tuple[str, ...]) -> None:
        super().__init__()
        self.lines = frozenset(f"Handler {handler_id!r} succeeded." for handler_id in handler_ids)

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno == logging.INFO and isinstance(record.msg, str) and record.msg in self.lines)


def _object_ref(record: logging.LogRecord) -> str | None:
    ref = getattr(record, "k8s_ref", None)
    if isinstance(ref, dict) and ref.get("name"):
        namespace = ref.get("namespace")
        return f"{namespace}/{ref['name']}" if namespace else str(ref["name"])
    return None


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, event, object, message, then extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        fields = _extra_fields(record)
        payload["event"] = fields.pop("event", DEFAULT_EVENT)
        obj = fields.pop("object", None) or _object_ref(record)
        if obj is not None:
            payload["object"] = obj
        payload["message"] = record.getMessage()
        for key, value in fields.items():
            payload[key if key not in {"ts", "level", "logger", "message"} else f"field_{key}"] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            payload["exception"] = record.exc_text
        if record.stack_info:
            payload["stack"] = record.stack_info
        return json.dumps(payload, default=str, ensure_ascii=False)


class JsonHandler(logging.StreamHandler[TextIO]):
    """The handler :func:`configure_logging` installs on the root logger; ``redactor`` takes new secrets."""

    def __init__(self, stream: TextIO, redaction: RedactionFilter) -> None:
        super().__init__(stream)
        self.redaction = redaction
        self.addFilter(redaction)

    @property
    def redactor(self) -> Redactor:
        return self.redaction.redact


def _install_filter(logger: logging.Logger, redaction: RedactionFilter) -> None:
    logger.filters[:] = [f for f in logger.filters if not isinstance(f, RedactionFilter)]
    logger.addFilter(redaction)


def _replaced(handler: logging.Handler) -> bool:
    # Kopf's handler class is private; it is recognised by name rather than by importing kopf here.
    return isinstance(handler, JsonHandler) or type(handler).__name__ == "_KopfStreamHandler"


def configure_logging(
    level: str = "INFO", log_prompts: bool = False, stream: TextIO | None = None, quiet_handlers: tuple[str, ...] = ()
) -> JsonHandler:
    """Send every log record, Kopf's included, to ``stream`` (stderr) as redacted JSON lines; Kopf's success
    line of the ``quiet_handlers`` is dropped (:class:`QuietSuccesses`).

    Idempotent: a second call replaces the handler of the first (and Kopf's, if ``kopf.configure()``
    ran). Returns the installed handler.
    """
    redaction = RedactionFilter(Redactor(), log_prompts)
    handler = JsonHandler(stream if stream is not None else sys.stderr, redaction)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if not _replaced(h)]
    root.addHandler(handler)
    root.setLevel(level.upper())
    objects = logging.getLogger("kopf.objects")
    _install_filter(objects, redaction)
    objects.filters[:] = [f for f in objects.filters if not isinstance(f, QuietSuccesses)]
    if quiet_handlers:
        objects.filters.insert(0, QuietSuccesses(quiet_handlers))  # first: a dropped line is not redacted either
    # Like Kopf: asyncio's chatter only when debugging; the same for httpx's line per backend request.
    for chatty in ("asyncio", "httpx"):
        logging.getLogger(chatty).setLevel(logging.DEBUG if level.upper() == "DEBUG" else logging.WARNING)
    return handler


def log_event(
    logger: logging.Logger | logging.LoggerAdapter[Any],
    event: str,
    obj: str,
    *,
    level: int = logging.INFO,
    message: str | None = None,
    **fields: Any,
) -> None:
    """Log a named, past-tense event about ``obj`` (``namespace/name``) with structured ``fields``.

    ``fields`` may use any name (``name``, ``args`` ... do not clash with the log record's own); ones
    that look like prompts are hashed, strings are redacted.
    """
    extra = {"event": event, "object": obj, _FIELDS_ATTR: fields}
    logger.log(level, message if message is not None else f"{event} {obj}", extra=extra)
