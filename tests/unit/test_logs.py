"""JSON log lines: parseable, secrets redacted, prompts hashed, Kopf's records in the same shape."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import kopf
import pytest

from canopy_operator.telemetry import logs

TOKEN = "ghp_s3cr3tTokenValue"


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    """Logging configured into a buffer; the root logger and kopf.objects are restored afterwards."""
    root, kopf_objects = logging.getLogger(), logging.getLogger("kopf.objects")
    saved = (list(root.handlers), root.level, list(kopf_objects.filters))
    buffer = io.StringIO()
    logs.configure_logging("INFO", stream=buffer)
    yield buffer
    root.handlers[:], kopf_objects.filters[:] = saved[0], saved[2]
    root.setLevel(saved[1])


def register_secret(value: str) -> None:
    """What the operator does with a secret it reads: hand it to the installed handler's redactor."""
    (handler,) = [h for h in logging.getLogger().handlers if isinstance(h, logs.JsonHandler)]
    handler.redactor.register(value)


def _lines(buffer: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def test_every_line_is_one_json_object_with_core_fields(stream: io.StringIO) -> None:
    logging.getLogger("canopy_operator.x").warning("plain %s message", "formatted")
    logs.log_event(logging.getLogger("canopy_operator.y"), "votes_counted", "team-a/exp-1", challenger=3)

    first, second = _lines(stream)

    assert {"ts", "level", "logger", "event", "message"} <= first.keys()
    assert (first["level"], first["logger"], first["message"]) == (
        "warning",
        "canopy_operator.x",
        "plain formatted message",
    )
    assert first["event"] == logs.DEFAULT_EVENT
    assert second["event"] == "votes_counted"
    assert second["object"] == "team-a/exp-1"
    assert second["challenger"] == 3
    assert second["ts"].endswith("+00:00")


def test_fields_named_like_record_attributes_do_not_break_logging(stream: io.StringIO) -> None:
    logs.log_event(logging.getLogger("t"), "job_created", "ns/e", name="eval-1", args=["--x"], message_id=1)
    (line,) = _lines(stream)
    assert line["name"] == "eval-1"
    assert line["args"] == ["--x"]
    assert line["message"] == "job_created ns/e"


def test_url_userinfo_is_redacted(stream: io.StringIO) -> None:
    logs.log_event(
        logging.getLogger("t"), "repo_cloned", "ns/e", url="https://alice:pa55word@gitea.example/alice/backend.git"
    )
    logging.getLogger("t").error("push to https://bob:hunter22@h.example/x failed")
    text = stream.getvalue()
    assert "pa55word" not in text
    assert "alice:" not in text
    assert "hunter22" not in text
    assert "https://***@gitea.example/alice/backend.git" in text


def test_registered_secret_never_appears(stream: io.StringIO) -> None:
    register_secret(TOKEN)
    log = logging.getLogger("t")
    log.info("using token %s", TOKEN)
    logs.log_event(log, "judge_called", "ns/e", headers={"Authorization": f"Bearer {TOKEN}"}, note=[TOKEN])
    try:
        raise RuntimeError(f"auth failed for {TOKEN}")
    except RuntimeError:
        log.exception("judge failed")
    text = stream.getvalue()
    assert TOKEN not in text
    assert len(_lines(stream)) == 3
    assert "RuntimeError: auth failed for ***" in _lines(stream)[2]["exception"]


def test_bearer_tokens_are_redacted_without_registration(stream: io.StringIO) -> None:
    logging.getLogger("t").info("header Authorization: Bearer abc.def-ghi")
    assert "abc.def-ghi" not in stream.getvalue()


def test_prompts_are_hashed_by_default(stream: io.StringIO) -> None:
    prompt = "Provide a brief, concise summary:"
    logs.log_event(logging.getLogger("t"), "prompt_delivered", "ns/e", prompt_b=prompt, champion_prompt=prompt)
    (line,) = _lines(stream)
    assert prompt not in stream.getvalue()
    assert line["prompt_b"] == logs.prompt_ref(prompt) == line["champion_prompt"]
    assert line["prompt_b"].startswith("sha256:")
    assert len(line["prompt_b"]) == len("sha256:") + 12


def test_prompts_are_shown_when_asked(stream: io.StringIO) -> None:
    logs.configure_logging("INFO", log_prompts=True, stream=stream)
    prompt = "Summarize the following text:"
    logs.log_event(logging.getLogger("t"), "prompt_delivered", "ns/e", prompt=prompt)
    assert _lines(stream)[-1]["prompt"] == prompt


def test_prompt_ref_is_stable_and_distinguishes_texts() -> None:
    assert logs.prompt_ref("a") == logs.prompt_ref("a") != logs.prompt_ref("b")
    assert logs.prompt_ref(logs.prompt_ref("a")) == logs.prompt_ref("a")


def test_kopf_object_records_come_out_as_json_with_object(stream: io.StringIO) -> None:
    settings = kopf.OperatorSettings()
    settings.posting.enabled = False
    body = kopf.Body(
        {
            "apiVersion": "canopy.genaiops.io/v1alpha1",
            "kind": "PromptExperiment",
            "metadata": {"name": "exp-1", "namespace": "team-a", "uid": "u1"},
        }
    )
    kopf.ObjectLogger(body=body, settings=settings).info("Handler 'reconcile' succeeded.")
    (line,) = _lines(stream)
    assert line["logger"] == "kopf.objects"
    assert line["object"] == "team-a/exp-1"
    assert line["message"] == "Handler 'reconcile' succeeded."
    assert "settings" not in line
    assert "k8s_ref" not in line


def test_kopf_object_records_are_redacted_before_kopf_posts_them_as_events(stream: io.StringIO) -> None:
    seen: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    register_secret(TOKEN)
    capture = Capture()
    kopf_objects = logging.getLogger("kopf.objects")
    kopf_objects.addHandler(capture)
    try:
        kopf_objects.error("clone of https://u:%s@h/x failed", TOKEN)
    finally:
        kopf_objects.removeHandler(capture)
    assert seen == ["clone of https://***@h/x failed"]


def test_configuring_twice_leaves_one_writer(stream: io.StringIO) -> None:
    logs.configure_logging("INFO", stream=stream)
    logging.getLogger("t").info("once")
    assert len(_lines(stream)) == 1
    assert sum(isinstance(h, logs.JsonHandler) for h in logging.getLogger().handlers) == 1


def test_short_values_are_not_registered_as_secrets(stream: io.StringIO) -> None:
    register_secret("ab")
    logging.getLogger("t").info("about abba")
    assert _lines(stream)[0]["message"] == "about abba"


def test_the_success_line_of_a_per_event_handler_is_dropped_and_nothing_else(stream: io.StringIO) -> None:
    """Kopf logs "Handler 'wake' succeeded." for every event of every experiment (2 500 lines for 500 new
    experiments, issue #20): dropped. Other handlers' success, and the handler's own failures, still show."""
    from canopy_operator.handlers.main import QUIET_HANDLERS

    logs.configure_logging("INFO", stream=stream, quiet_handlers=QUIET_HANDLERS)
    settings = kopf.OperatorSettings()
    settings.posting.enabled = False
    body = kopf.Body({"metadata": {"name": "exp-1", "namespace": "team-a", "uid": "u1"}})  # type: ignore[arg-type]
    logger = kopf.LocalObjectLogger(body=body, settings=settings)
    logger.info("Handler 'wake' succeeded.")
    logger.info("Handler 'reconcile' succeeded.")
    logger.error("Handler 'wake' failed with an exception and will try again in 60 seconds: boom")
    logger.info("Handler 'wake' succeeded, said nobody.")
    messages = [line["message"] for line in _lines(stream)]
    assert messages == [
        "Handler 'reconcile' succeeded.",
        "Handler 'wake' failed with an exception and will try again in 60 seconds: boom",
        "Handler 'wake' succeeded, said nobody.",
    ]
    logs.configure_logging("INFO", stream=stream)  # configured again without: the line is back
    logger.info("Handler 'wake' succeeded.")
    assert [line["message"] for line in _lines(stream)][-1] == "Handler 'wake' succeeded."
