"""A call the API server refuses with 429 (API Priority and Fairness: the client's queue is full, the request was
not run) is sent again after the pause the answer asks for, a bounded number of times within the call's
deadline; it fails the pass only when the server keeps refusing (issue #20: in a burst of 500 starts, a few
429s made their daemons back off for a minute).

The API server here is a real HTTP server on 127.0.0.1 that answers 429 to the first requests it gets."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from canopy_operator.k8s.errors import Conflict, Unavailable
from canopy_operator.k8s.gateway import MAX_RETRY_AFTER, THROTTLED_RETRIES, Gateway, retry_after

CONFIGMAP = {"metadata": {"name": "canopy-config", "resourceVersion": "7"}, "data": {"k": "v"}}


class Server:
    """Answers the first ``refuse`` requests with ``status`` (and ``Retry-After``), then the ConfigMap."""

    def __init__(self, refuse: int, status: int = 429, after: str | None = "0.01") -> None:
        self.refuse = refuse
        self.status = status
        self.after = after
        self.times: list[float] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.times.append(time.monotonic())
        if len(self.times) <= self.refuse:
            headers = {"Retry-After": self.after} if self.after is not None else {}
            body = {"kind": "Status", "code": self.status, "reason": "TooManyRequests"}
            return web.json_response(body, status=self.status, headers=headers)
        return web.Response(text=json.dumps(CONFIGMAP), content_type="application/json")


@pytest.fixture
async def serve() -> AsyncIterator[object]:
    runners: list[web.AppRunner] = []
    apis: list[client.ApiClient] = []

    async def start(server: Server, deadline: float = 30.0) -> Gateway:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", server.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        api = client.ApiClient(client.Configuration(host=f"http://127.0.0.1:{port}"))
        apis.append(api)
        return Gateway(api, deadline=deadline)

    yield start
    for api in apis:
        await api.close()
    for runner in runners:
        await runner.cleanup()


async def test_a_429_is_sent_again_after_the_pause_it_asks_for(serve: object) -> None:
    server = Server(refuse=2, after="1")
    gateway = await serve(server)  # type: ignore[operator]
    view = await gateway.get_configmap("ns", "canopy-config")
    assert view.data == {"k": "v"}
    assert len(server.times) == 3
    gaps = [b - a for a, b in zip(server.times, server.times[1:], strict=False)]
    assert all(1.0 <= gap < 1.0 + 0.25 + 0.5 for gap in gaps), gaps  # Retry-After: 1, plus the jitter


async def test_a_server_that_keeps_refusing_fails_the_call_after_the_bounded_retries(serve: object) -> None:
    server = Server(refuse=100, after="0.01")
    gateway = await serve(server)  # type: ignore[operator]
    with pytest.raises(Unavailable, match=r"^get ConfigMap ns/canopy-config: 429 "):
        await gateway.get_configmap("ns", "canopy-config")
    assert len(server.times) == THROTTLED_RETRIES + 1


async def test_the_pauses_count_against_the_call_deadline(serve: object) -> None:
    server = Server(refuse=100, after="3")
    gateway = await serve(server, deadline=1.0)  # type: ignore[operator]
    started = time.monotonic()
    with pytest.raises(Unavailable, match=r"no answer within 1s"):
        await gateway.get_configmap("ns", "canopy-config")
    assert time.monotonic() - started < 2.0
    assert len(server.times) == 1


@pytest.mark.parametrize(("status", "error"), [(409, Conflict), (503, Unavailable)])
async def test_other_refusals_are_not_sent_again(serve: object, status: int, error: type[Exception]) -> None:
    server = Server(refuse=1, status=status)
    gateway = await serve(server)  # type: ignore[operator]
    with pytest.raises(error):
        await gateway.get_configmap("ns", "canopy-config")
    assert len(server.times) == 1


@pytest.mark.parametrize(
    ("header", "low", "high"),
    [
        (None, 1.0, 1.25),
        ("2", 2.0, 2.25),
        ("0.5", 0.5, 0.75),
        ("3600", MAX_RETRY_AFTER, MAX_RETRY_AFTER + 0.25),
        ("0", 1.0, 1.25),
        ("-4", 1.0, 1.25),
        ("nan", 1.0, 1.25),
        ("inf", 1.0, 1.25),
        ("Wed, 21 Oct 2026 07:28:00 GMT", 1.0, 1.25),
    ],
)
def test_the_pause_is_read_from_retry_after_and_bounded(header: str | None, low: float, high: float) -> None:
    exc = ApiException(status=429, reason="Too Many Requests")
    exc.headers = {"Retry-After": header} if header is not None else {}
    for _ in range(20):
        assert low <= retry_after(exc) <= high


async def test_the_pauses_do_not_block_other_calls(serve: object) -> None:
    """A throttled call sleeps on the event loop; other experiments' calls go on meanwhile."""
    slow, fast = Server(refuse=1, after="1"), Server(refuse=0)
    throttled, free = await serve(slow), await serve(fast)  # type: ignore[operator]
    first = asyncio.ensure_future(throttled.get_configmap("ns", "canopy-config"))
    await asyncio.sleep(0.2)
    started = time.monotonic()
    await free.get_configmap("ns", "canopy-config")
    assert time.monotonic() - started < 0.5
    assert not first.done()
    await first
