"""Hostile answers from a vote or prompt server (MLflow, Phoenix: URLs a tenant names) and hostile server URLs.

A server URL outside the experiment's namespace and the allow-list is refused before any adapter is made; an
answer over the size cap, one that is not JSON, or a redirect is an error naming the endpoint, and a server's
raw body is never repeated in a message (only its own short ``message``/``detail``, or the status phrase)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from canopy_operator.service.reconcile import Ports, reconcile
from canopy_operator.sources.http import JsonApi, ServerHTTPError, ServerProtocolError
from canopy_operator.sources.prompts import ConfigTextPrompts

SECRET_LOOKING = "AKIA" + "X" * 16


def answer(status: int, body: bytes = b"", **headers: str) -> httpx.Response:
    """A response streamed as a server sends it (the client reads the raw stream in chunks)."""
    return httpx.Response(status, headers=headers, stream=httpx.ByteStream(body))


def api(handler: Any, max_body: int = 1024) -> JsonApi:
    return JsonApi("MLflow", "http://mlflow.test:5000", 5.0, max_body, transport=httpx.MockTransport(handler))


async def test_an_answer_over_the_cap_is_refused_naming_the_endpoint() -> None:
    async with api(lambda _: answer(200, b"[" + b"1," * 4000 + b"1]")) as client:
        with pytest.raises(ServerProtocolError, match=r"MLflow POST /search: answer .*over 1024"):
            await client.call("POST", "/search", body={})


async def test_an_answer_that_is_not_json_is_refused() -> None:
    async with api(lambda _: answer(200, b"<html>" + SECRET_LOOKING.encode())) as client:
        with pytest.raises(ServerProtocolError) as raised:
            await client.call("GET", "/x")
    assert SECRET_LOOKING not in str(raised.value)


@pytest.mark.parametrize(
    ("body", "shown"),
    [
        (b'{"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "Model not found"}', "Model not found"),
        (b"<html>" + SECRET_LOOKING.encode() + b"</html>", "Internal Server Error"),
        (b'{"message": "' + b"x" * 5000 + b'"}', "..."),
    ],
)
async def test_an_error_answer_shows_only_the_servers_short_message(body: bytes, shown: str) -> None:
    async with api(lambda _: answer(500, body), max_body=1 << 20) as client:
        with pytest.raises(ServerHTTPError) as raised:
            await client.call("GET", "/x")
    assert shown in str(raised.value)
    assert SECRET_LOOKING not in str(raised.value)
    assert len(str(raised.value)) < 200


async def test_a_redirect_is_not_followed() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return answer(302, Location="http://169.254.169.254/latest/meta-data/")

    async with api(handler) as client:
        with pytest.raises(ServerHTTPError, match="302"):
            await client.call("GET", "/x")
    assert seen == ["http://mlflow.test:5000/x"]


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        (
            {
                "votes": {
                    "source": "MLflow",
                    "mlflow": {"trackingUrl": "http://169.254.169.254:80", "experimentId": "1"},
                }
            },
            "spec.votes.mlflow.trackingUrl",
        ),
        (
            {"votes": {"source": "Phoenix", "phoenix": {"url": "http://phoenix.user2-test.svc:6006"}}},
            "spec.votes.phoenix.url",
        ),
        (
            {
                "backend": {"url": "http://canopy-backend:8000", "generation": 2},
                "challenger": {"version": 2},
                "prompts": {"store": "MLflowRegistry", "mlflow": {"trackingUrl": "http://10.0.0.7:5000", "name": "p"}},
            },
            "spec.prompts.mlflow.trackingUrl",
        ),
    ],
)
async def test_a_server_outside_the_namespace_and_the_allow_list_degrades_before_anything(
    patch: dict[str, Any], field: str
) -> None:
    calls: list[str] = []

    async def delivery(*_: Any) -> Any:
        calls.append("delivery")
        raise AssertionError("no config source may be read")

    def backend(_: Any) -> Any:
        calls.append("backend")
        raise AssertionError("no backend or vote source may be made")

    def prompts(_: Any) -> Any:
        calls.append("prompts")
        return ConfigTextPrompts()

    async def persist(_: Any) -> None:
        calls.append("persist")

    spec: dict[str, Any] = {"backend": {"url": "http://canopy-backend:8000"}, "challenger": {"prompt": "short"}}
    spec.update(patch)
    if "version" in spec["challenger"]:
        spec["challenger"] = {"version": spec["challenger"]["version"]}
    body = {"metadata": {"generation": 1, "namespace": "user1-test"}, "spec": spec, "status": {}}
    report = await reconcile(body, Ports(delivery, backend, prompts, persist, lambda: datetime.now(UTC)))
    degraded = {c.type: c for c in report.status.conditions}["Degraded"]
    assert (report.status.phase, degraded.reason) == ("Degraded", "BackendNotAllowed")
    assert degraded.message.startswith(f"{field} names ")
    assert calls == []
