"""The judge client: request shape, bearer key, bounded retries with exponential backoff."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import httpx
import pytest

from canopy_operator.evals.judge import (
    JudgeClient,
    JudgeConfig,
    JudgeError,
    JudgeUnavailable,
    backoff_delays,
    retry_after_seconds,
)

MESSAGES = [{"role": "user", "content": "grade this"}]


def _ok(text: str = "Answer: C") -> httpx.Response:
    return httpx.Response(200, json={"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]})


class Script:
    """A mock transport answering from a list (an exception in the list is raised)."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def _client(script: Script, sleeps: list[float], **config: object) -> JudgeClient:
    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    settings = JudgeConfig(endpoint="http://judge.local/v1/openai/v1/", **config)  # type: ignore[arg-type]
    return JudgeClient(settings, transport=httpx.MockTransport(script), sleep=sleep)


async def test_request_is_an_openai_chat_completion_with_bearer_key() -> None:
    script = Script(_ok("Reasoning.\nAnswer: B"))
    async with _client(script, [], api_key="k-123", model="llama32") as judge:
        reply = await judge.complete(MESSAGES)
    assert reply == "Reasoning.\nAnswer: B"
    request = script.requests[0]
    assert str(request.url) == "http://judge.local/v1/openai/v1/chat/completions"
    assert request.headers["Authorization"] == "Bearer k-123"
    assert json.loads(request.content) == {"model": "llama32", "messages": MESSAGES, "temperature": 0}


async def test_no_key_means_no_authorization_header() -> None:
    script = Script(_ok())
    async with _client(script, []) as judge:
        await judge.complete(MESSAGES, model="other")
    assert "Authorization" not in script.requests[0].headers
    assert json.loads(script.requests[0].content)["model"] == "other"


async def test_server_errors_timeouts_and_connection_errors_are_retried_with_backoff() -> None:
    sleeps: list[float] = []
    script = Script(
        httpx.Response(503, text="busy"),
        httpx.ReadTimeout("slow"),
        httpx.ConnectError("refused"),
        _ok(),
    )
    async with _client(script, sleeps, max_attempts=4, backoff_initial=0.5) as judge:
        assert await judge.complete(MESSAGES) == "Answer: C"
    # full jitter: each wait is drawn below the capped doubling, and they differ
    assert len(sleeps) == 3
    assert all(0 <= wait <= cap for wait, cap in zip(sleeps, [0.5, 1.0, 2.0], strict=True))
    assert len(set(sleeps)) == 3
    assert judge.attempts == 4


async def test_retries_are_bounded() -> None:
    sleeps: list[float] = []
    script = Script(*[httpx.Response(500, text="boom")] * 3)
    async with _client(script, sleeps, max_attempts=3) as judge:
        with pytest.raises(JudgeUnavailable, match="after 3 attempts: HTTP 500: boom"):
            await judge.complete(MESSAGES)
    assert len(script.requests) == 3
    assert len(sleeps) == 2


async def test_rate_limit_is_retried() -> None:
    script = Script(httpx.Response(429, text="slow down"), _ok())
    async with _client(script, []) as judge:
        assert await judge.complete(MESSAGES) == "Answer: C"


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        (httpx.Response(400, text="bad model"), "HTTP 400: bad model"),
        (httpx.Response(401, text="no"), "HTTP 401"),
        (httpx.Response(200, text="not json"), "not JSON"),
        (httpx.Response(200, json={"choices": []}), "no choices"),
        (httpx.Response(200, json={"choices": [{"message": {"content": None}}]}), "not text"),
    ],
)
async def test_refusals_and_malformed_answers_fail_at_once(answer: httpx.Response, problem: str) -> None:
    script = Script(answer)
    async with _client(script, []) as judge:
        with pytest.raises(JudgeError, match=problem):
            await judge.complete(MESSAGES)
    assert len(script.requests) == 1


async def test_key_never_appears_in_errors() -> None:
    script = Script(httpx.Response(401, text="invalid key"))
    async with _client(script, [], api_key="k-secret-9") as judge:
        with pytest.raises(JudgeError) as caught:
            await judge.complete(MESSAGES)
    assert "k-secret-9" not in str(caught.value)


def test_backoff_doubles_up_to_the_cap() -> None:
    config = JudgeConfig(endpoint="http://x", max_attempts=7, backoff_initial=1.0, backoff_max=8.0)
    assert backoff_delays(config) == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


def test_at_least_one_attempt() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        JudgeConfig(endpoint="http://x", max_attempts=0)


async def test_retry_after_in_seconds_is_honoured_with_a_little_jitter() -> None:
    sleeps: list[float] = []
    script = Script(httpx.Response(429, text="slow down", headers={"Retry-After": "7"}), _ok())
    async with _client(script, sleeps, backoff_initial=0.5, backoff_max=1.0) as judge:
        assert await judge.complete(MESSAGES) == "Answer: C"
    assert len(sleeps) == 1
    assert 7.0 <= sleeps[0] <= 7.7


async def test_retry_after_as_an_http_date_and_its_cap() -> None:
    now = datetime(2026, 11, 30, 12, 0, 0, tzinfo=UTC)
    assert retry_after_seconds("Mon, 30 Nov 2026 12:00:30 GMT", now) == 30.0
    assert retry_after_seconds("Mon, 30 Nov 2026 11:00:00 GMT", now) == 0.0
    assert retry_after_seconds("soon", now) is None
    assert retry_after_seconds(None, now) is None
    sleeps: list[float] = []
    script = Script(httpx.Response(503, headers={"Retry-After": "86400"}), _ok())
    async with _client(script, sleeps, retry_after_max=60.0) as judge:
        await judge.complete(MESSAGES)
    assert 60.0 <= sleeps[0] <= 66.0


async def test_without_retry_after_the_waits_of_two_clients_differ() -> None:
    waits: list[list[float]] = []
    for _ in range(2):
        sleeps: list[float] = []
        script = Script(*[httpx.Response(500, text="boom")] * 3, _ok())
        async with _client(script, sleeps, max_attempts=4, backoff_initial=2.0) as judge:
            await judge.complete(MESSAGES)
        waits.append(sleeps)
    assert waits[0] != waits[1]
