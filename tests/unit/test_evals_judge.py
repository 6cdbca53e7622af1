"""The judge client: request shape, bearer key, bounded retries with exponential backoff."""

from __future__ import annotations

import json

import httpx
import pytest

from canopy_operator.evals.judge import JudgeClient, JudgeConfig, JudgeError, JudgeUnavailable, backoff_delays

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
    assert sleeps == [0.5, 1.0, 2.0]
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
