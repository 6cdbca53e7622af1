"""The webhook adapter: POST one JSON message to an incoming webhook (Slack-compatible), bounded.

One call is bounded by ``timeout`` seconds in all (connect, send, answer); redirects are not followed (a
redirect could take the message, and the URL's secret path, elsewhere); the answer's body is read up to
:data:`MAX_ANSWER_BYTES` and discarded. Every post carries an ``Idempotency-Key`` header, so a receiver that
honours it drops the repeat of a post the operator could not record as sent.

The URL is a secret (a Slack webhook URL authorises posting): it never appears in a result, an exception or a
log line of this module; a result names a status code or an exception type only.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from dataclasses import dataclass
from typing import Any

import httpx

from canopy_operator.core.notify import Outcome
from canopy_operator.sources.http import ClosingClient, bounded_client

DEFAULT_TIMEOUT = 10.0
"""Seconds one post may take in all."""
MAX_ANSWER_BYTES = 64 * 1024
"""Bytes of an answer read (and discarded) at most; the rest is abandoned."""
MAX_PAYLOAD_BYTES = 16 * 1024
"""A message larger than this is not sent (the core keeps its messages far below)."""
RETRY_STATUSES = frozenset({408, 425, 429})
"""4xx answers that mean "later", like every 5xx."""


@dataclass(frozen=True)
class PostResult:
    """What one post did, and a short detail for events and logs (a status code or an exception type)."""

    outcome: Outcome
    detail: str


def classify(status: int) -> Outcome:
    """2xx: sent; 408, 425, 429 and 5xx: retry later; anything else (other 4xx, a 3xx not followed): failed."""
    if 200 <= status < 300:
        return "sent"
    if status in RETRY_STATUSES or status >= 500:
        return "retry"
    return "failed"


class WebhookPoster(ClosingClient):
    """Posts JSON to webhook URLs; one client (connection pool) per pass, closed with :meth:`aclose`."""

    def __init__(
        self,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        tls: ssl.SSLContext | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.timeout = timeout
        self._http = bounded_client(
            timeout=timeout, headers={"User-Agent": "canopy-operator"}, tls=tls, transport=transport
        )

    async def post(self, url: str, payload: dict[str, Any], idempotency_key: str) -> PostResult:
        """POST ``payload`` as JSON to ``url``; never raises for what the network or the receiver does."""
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        if len(body) > MAX_PAYLOAD_BYTES:
            return PostResult("failed", f"message of {len(body)} bytes is over {MAX_PAYLOAD_BYTES}")
        headers = {"Content-Type": "application/json", "Idempotency-Key": idempotency_key}
        try:
            async with asyncio.timeout(self.timeout):
                status = await self._send(url, body, headers)
        except TimeoutError:
            return PostResult("retry", f"no answer within {self.timeout:g}s")
        except (httpx.InvalidURL, httpx.UnsupportedProtocol, ValueError) as exc:
            return PostResult("failed", f"unusable URL ({type(exc).__name__})")
        except (httpx.HTTPError, OSError) as exc:
            return PostResult("retry", f"no answer ({type(exc).__name__})")
        return PostResult(classify(status), f"HTTP {status}")

    async def _send(self, url: str, body: bytes, headers: dict[str, str]) -> int:
        request = self._http.build_request("POST", url, content=body, headers=headers)
        response = await self._http.send(request, stream=True)
        try:
            read = 0
            if response.is_stream_consumed:  # an answer already in memory (an in-process transport)
                return response.status_code
            async for chunk in response.aiter_raw():
                read += len(chunk)
                if read > MAX_ANSWER_BYTES:
                    break  # the answer is not used: stop reading, the status is what counts
            return response.status_code
        finally:
            await response.aclose()
