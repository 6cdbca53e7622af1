"""A small OpenAI-compatible chat-completions client for the LLM judge (Llama Stack serves one).

``POST {endpoint}/chat/completions`` with ``{"model", "messages", "temperature": 0}`` and an optional bearer
key. Timeouts, connection errors, 429 and 5xx answers are retried a bounded number of times: after the
server's ``Retry-After`` (seconds or an HTTP date, at most ``retry_after_max``, plus up to 10 % jitter) when
it sends one, else after an exponential backoff with full jitter (a uniform wait up to the capped
doubling), so many runners do not retry in step. Any other answer fails at once. The key is never logged or
put into an error message.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from canopy_operator.evals.scorers import excerpt


class JudgeError(Exception):
    """The judge could not give an answer."""


class JudgeUnavailable(JudgeError):
    """Every attempt failed with a retryable error (timeout, connection, 429 or 5xx)."""


@dataclass(frozen=True)
class JudgeConfig:
    """Where the judge is and how patiently to ask it."""

    endpoint: str
    """Base URL of the OpenAI-compatible API, e.g. http://llamastack:8321/v1/openai/v1."""
    model: str = "llama32"
    api_key: str | None = None
    timeout: float = 60.0
    max_attempts: int = 4
    backoff_initial: float = 0.5
    backoff_max: float = 8.0
    retry_after_max: float = 60.0
    """The longest ``Retry-After`` honoured; a longer one is cut to this."""

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")


def backoff_delays(config: JudgeConfig) -> list[float]:
    """The longest waits between attempts: initial, doubled each time, capped (each wait is drawn below it)."""
    return [min(config.backoff_max, config.backoff_initial * 2**i) for i in range(config.max_attempts - 1)]


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """``Retry-After`` as seconds from ``now``: a number of seconds or an HTTP date; None when absent or bad."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def _retryable_status(status: int) -> bool:
    return status == 429 or status >= 500


def _reply_text(body: Any) -> str:
    try:
        content = body["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError) as exc:
        raise JudgeError("judge answer has no choices[0].message.content") from exc
    if not isinstance(content, str):
        raise JudgeError("judge answer content is not text")
    return content


class JudgeClient:
    """Async chat-completions client; use as ``async with JudgeClient(config) as judge``."""

    def __init__(
        self,
        config: JudgeConfig,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._config = config
        self._sleep = sleep
        self._rng = rng or random.Random()  # noqa: S311 - retry jitter, not security
        self._clock = clock
        headers = {"Accept": "application/json"}
        if config.api_key:
            headers["Authorization"] = f"Bearer {config.api_key}"
        self._http = httpx.AsyncClient(
            base_url=config.endpoint.rstrip("/") + "/",
            headers=headers,
            timeout=httpx.Timeout(config.timeout),
            transport=transport,
        )
        self.attempts = 0
        """Requests sent so far (for the results file)."""

    async def __aenter__(self) -> JudgeClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _attempt(self, payload: dict[str, Any]) -> tuple[str | None, str, float | None]:
        """One request: the reply text, or None, why it may be retried and the server's Retry-After.
        Raises on final errors."""
        self.attempts += 1
        try:
            response = await self._http.post("chat/completions", json=payload)
        except httpx.TimeoutException:
            return None, f"timed out after {self._config.timeout:g}s", None
        except httpx.TransportError as exc:
            return None, f"connection failed: {type(exc).__name__}", None
        except httpx.HTTPError as exc:
            raise JudgeError(f"judge request failed: {type(exc).__name__}") from exc
        if _retryable_status(response.status_code):
            retry_after = retry_after_seconds(response.headers.get("Retry-After"), self._clock())
            return None, f"HTTP {response.status_code}: {excerpt(response.text, 120)}", retry_after
        if response.status_code >= 400:
            raise JudgeError(f"judge refused the request: HTTP {response.status_code}: {excerpt(response.text, 160)}")
        try:
            body = response.json()
        except ValueError as exc:
            raise JudgeError("judge answer is not JSON") from exc
        return _reply_text(body), "", None

    def _wait(self, attempt: int, retry_after: float | None) -> float:
        """How long to wait before the next attempt."""
        if retry_after is not None:
            base = min(retry_after, self._config.retry_after_max)
            return base + self._rng.uniform(0.0, 0.1 * base)
        return self._rng.uniform(0.0, backoff_delays(self._config)[attempt])

    async def complete(self, messages: list[dict[str, str]], *, model: str | None = None) -> str:
        """The judge's reply to ``messages``; raises :class:`JudgeError` when it cannot get one."""
        payload = {"model": model or self._config.model, "messages": messages, "temperature": 0}
        last = ""
        for attempt in range(self._config.max_attempts):
            reply, last, retry_after = await self._attempt(payload)
            if reply is not None:
                return reply
            if attempt < self._config.max_attempts - 1:
                await self._sleep(self._wait(attempt, retry_after))
        attempts = self._config.max_attempts
        plural = "s" if attempts != 1 else ""
        raise JudgeUnavailable(f"judge unavailable after {attempts} attempt{plural}: {last}")
