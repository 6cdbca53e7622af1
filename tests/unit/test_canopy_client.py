"""The operator's Canopy client: typed answers from the simulator, one clear domain error for everything else."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from canopy_devkit.simulator import RunningSimulator, free_port
from canopy_devkit.simulator.app import answer_chunks
from canopy_operator.core.collect import AbEntry, FeedbackEntry
from canopy_operator.core.export import render_export
from canopy_operator.sources.canopy.client import CanopyClient
from canopy_operator.sources.canopy.errors import (
    BackendHTTPError,
    BackendProtocolError,
    BackendStreamError,
    BackendUnreachable,
)
from tests.support.gitserver import tls_server_context
from tests.support.simulator import (
    CHALLENGER,
    CHAMPION,
    RawHttpServer,
    canned,
    dripped,
    http_head,
    running_simulator,
    write_config,
)


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[RunningSimulator]:
    async with running_simulator(write_config(tmp_path, ab_testing=True, prompt_b=CHALLENGER)) as simulator:
        yield simulator


@pytest.fixture
async def client(sim: RunningSimulator) -> AsyncIterator[CanopyClient]:
    async with CanopyClient(sim.url, timeout=5) as canopy:
        yield canopy


def _answer(prompt: str, text: str) -> str:
    return "".join(answer_chunks(prompt, text))


# ---- against the simulator -------------------------------------------------------------------------------


async def test_feature_flags_are_typed(client: CanopyClient) -> None:
    flags = await client.feature_flags()

    assert (flags.summarize, flags.feedback, flags.ab_testing) == (True, True, True)
    assert (flags.information_search, flags.student_assistant, flags.shields, flags.socratic_tutor) == (
        False,
        False,
        False,
        False,
    )


async def test_posted_feedback_lists_back_as_collect_entries(client: CanopyClient) -> None:
    first = await client.post_feedback("text one", "answer", "thumbs_down", comment="too long")
    second = await client.post_feedback("text two", "answer", "thumbs_up")

    listing = await client.feedback()

    assert (first, second, listing.total) == (1, 2, 2)
    entry = listing.to_entries()[0]
    assert isinstance(entry, FeedbackEntry)
    assert (entry.id, entry.rating, entry.comment, entry.feature) == (1, "thumbs_down", "too long", "summarize")
    assert entry.timestamp == listing.feedback[0].timestamp
    assert entry.timestamp.endswith("+00:00")


async def test_ab_votes_list_back_as_collect_entries(client: CanopyClient) -> None:
    await client.post_ab_feedback("text", "left", "right", "a", {"a": "prompt_b", "b": "prompt"})
    await client.post_ab_feedback("text", "left", "right", "tie", {"a": "prompt", "b": "prompt_b"})

    listing = await client.ab_feedback()

    assert (listing.total, listing.prompt_b_wins, listing.prompt_a_wins, listing.ties) == (2, 1, 0, 1)
    entries = listing.to_entries()
    assert all(isinstance(entry, AbEntry) for entry in entries)
    assert [entry.winning_prompt for entry in entries] == ["prompt_b", None]
    assert entries[0].prompt_mapping == {"a": "prompt_b", "b": "prompt"}


async def test_export_returns_the_backend_yaml(client: CanopyClient) -> None:
    await client.post_feedback("Straße und Bäume", "answer", "thumbs_down")

    assert await client.export() == render_export(["Straße und Bäume"])


async def test_summarize_joins_the_streamed_deltas(client: CanopyClient) -> None:
    assert await client.summarize("An article.") == _answer(CHAMPION, "An article.")


async def test_summarize_ab_maps_shuffled_sides_back_to_config_keys(client: CanopyClient) -> None:
    seen = set()
    for _ in range(12):
        answers = await client.summarize_ab("An article.")
        seen.add(answers.mapping["a"])
        assert answers.prompt == _answer(CHAMPION, "An article.")
        assert answers.prompt_b == _answer(CHALLENGER, "An article.")
        assert answers.answer_of(answers.mapping["a"]) == answers.response_a

    assert seen == {"prompt", "prompt_b"}


async def test_ab_ready_tells_whether_a_challenger_is_served(tmp_path: Path) -> None:
    async with (
        running_simulator(write_config(tmp_path, ab_testing=True, prompt_b=CHALLENGER)) as sim,
        CanopyClient(sim.url, timeout=5) as client,
    ):
        assert await client.ab_ready() is True
        await sim.restart(write_config(tmp_path, name="v2.yaml", ab_testing=True, prompt_b=None))
        assert await client.ab_ready() is False
        await sim.restart(write_config(tmp_path, name="v3.yaml", ab_testing=False))
        with pytest.raises(BackendHTTPError) as raised:
            await client.ab_ready()

    assert (raised.value.status, raised.value.detail) == (404, "A/B testing feature is not enabled")


async def test_disabled_feature_raises_http_error_naming_endpoint(tmp_path: Path) -> None:
    async with (
        running_simulator(write_config(tmp_path, feedback=False)) as sim,
        CanopyClient(sim.url, timeout=5) as client,
    ):
        with pytest.raises(BackendHTTPError) as raised:
            await client.feedback()

    assert str(raised.value) == "GET /feedback: backend answered 404: Feedback feature is not enabled"


async def test_restart_shows_as_an_empty_store(tmp_path: Path, sim: RunningSimulator, client: CanopyClient) -> None:
    await client.post_feedback("text", "answer", "thumbs_down")

    await sim.restart(write_config(tmp_path, name="v2.yaml"))

    assert (await client.feedback()).total == 0
    assert await client.post_feedback("text", "answer", "thumbs_down") == 1


async def test_stream_error_event_raises_stream_error(sim: RunningSimulator, client: CanopyClient) -> None:
    sim.faults.stream_error = "model llama32 not found"

    with pytest.raises(BackendStreamError, match="model llama32 not found"):
        await client.summarize("text")
    with pytest.raises(BackendStreamError) as raised:
        await client.summarize_ab("text")
    assert raised.value.variant == "a"


async def test_plain_500_raises_http_error(sim: RunningSimulator, client: CanopyClient) -> None:
    sim.faults.status = 500

    with pytest.raises(BackendHTTPError) as raised:
        await client.feature_flags()

    assert (raised.value.status, raised.value.detail) == (500, "Internal Server Error")


async def test_connection_refused_raises_unreachable() -> None:
    async with CanopyClient(f"http://127.0.0.1:{free_port()}", timeout=2) as client:
        with pytest.raises(BackendUnreachable, match=r"^GET /feature-flags: cannot connect to http://127\.0\.0\.1"):
            await client.feature_flags()


async def test_a_refused_get_is_tried_once_more_a_moment_later() -> None:
    """A Service can route to a pod that has just gone away (the rollout finished, the endpoints not yet caught
    up): nothing was sent, so the GET is tried again once, after ``CONNECT_RETRY_SECONDS``."""
    port = free_port()
    body = b'{"detail": "reached"}'
    served: list[bytes] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        served.append(await reader.readuntil(b"\r\n\r\n"))
        head = f"HTTP/1.1 500 Oops\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        writer.write(head.encode() + body)
        await writer.drain()
        writer.close()

    async def listen_soon() -> asyncio.Server:
        await asyncio.sleep(0.1)  # after the first try was refused, before the retry
        return await asyncio.start_server(answer, "127.0.0.1", port)

    async with CanopyClient(f"http://127.0.0.1:{port}", timeout=5) as client:
        starting = asyncio.create_task(listen_soon())
        with pytest.raises(BackendHTTPError, match="500"):  # the server's answer: the retry reached it
            await client.feature_flags()
        server = await starting
    server.close()
    await server.wait_closed()
    assert len(served) == 1


# ---- against a raw server giving garbage -----------------------------------------------------------------


FLAGS = {"summarize": True, "feedback": True, "ab_testing": True, "information-search": False}
FLAGS |= {"student-assistant": False, "shields": False, "socratic-tutor": False}
FLAGS_ANSWER = json.dumps(FLAGS).encode()
"""A Generation 1 ``/feature-flags`` body with every flag the contract names."""


def _json_answer(body: bytes) -> bytes:
    return http_head(Content_Length=str(len(body))) + body


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "Invalid JSON"),
        (b'["a", "list"]', "unexpected answer at body"),
        (
            json.dumps({"total": "1", "feedback": []}).encode(),
            "unexpected answer at total: Input should be a valid integer",
        ),
        (json.dumps({"total": 1, "feedback": []}).encode(), "total is 1 but 0 entries were listed"),
        (
            json.dumps(
                {
                    "total": 1,
                    "feedback": [
                        {
                            "id": 1,
                            "timestamp": "yesterday",
                            "feature": "summarize",
                            "rating": "thumbs_up",
                            "input_text": "t",
                            "response_text": "r",
                            "comment": None,
                        }
                    ],
                }
            ).encode(),
            "feedback.0.timestamp",
        ),
    ],
)
async def test_malformed_json_answer_raises_protocol_error(body: bytes, message: str) -> None:
    async with RawHttpServer(canned(_json_answer(body))) as server, CanopyClient(server.url, timeout=2) as client:
        with pytest.raises(BackendProtocolError, match=message) as raised:
            await client.feedback()

    assert str(raised.value).startswith("GET /feedback: ")
    assert "\n" not in str(raised.value)


async def test_string_flag_raises_protocol_error() -> None:
    flags = {**FLAGS, "summarize": "true"}
    answer = _json_answer(json.dumps(flags).encode())
    async with RawHttpServer(canned(answer)) as server, CanopyClient(server.url, timeout=2) as client:
        with pytest.raises(BackendProtocolError, match="summarize: Input should be a valid boolean"):
            await client.feature_flags()


async def test_truncated_body_raises_protocol_error() -> None:
    answer = http_head(Content_Length="100") + b'{"total": 0, "feed'
    async with RawHttpServer(canned(answer)) as server, CanopyClient(server.url, timeout=2) as client:
        with pytest.raises(BackendProtocolError, match="answer cut short"):
            await client.feedback()


async def test_declared_oversized_body_is_refused_unread() -> None:
    answer = http_head(Content_Length=str(50 * 1024 * 1024)) + b"{" + b" " * 1024
    async with (
        RawHttpServer(canned(answer)) as server,
        CanopyClient(server.url, timeout=2, max_body_bytes=64 * 1024) as client,
    ):
        with pytest.raises(BackendProtocolError, match="52428800 bytes is over 65536"):
            await client.feedback()


async def test_streamed_oversized_body_is_abandoned_past_the_limit() -> None:
    chunk = b"x" * 16 * 1024
    piece = b"%x\r\n%s\r\n" % (len(chunk), chunk)
    sent = 0

    async def fifty_megabytes(writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        writer.write(http_head(Transfer_Encoding="chunked"))
        for _ in range(3200):
            writer.write(piece)
            await writer.drain()
            sent += 1

    async with (
        RawHttpServer(fifty_megabytes) as server,
        CanopyClient(server.url, timeout=10, max_body_bytes=256 * 1024) as client,
    ):
        with pytest.raises(BackendProtocolError, match="answer is over 262144 bytes"):
            await client.feedback()

    assert sent < 3200 / 2, "the client should hang up long before the end of the body"


async def test_ab_ready_reads_only_the_first_event() -> None:
    config = b'data: {"type": "ab_config", "mapping": {"a": "prompt_b", "b": "prompt"}}\n\n'
    slow_rest = [b'data: {"variant": "a", "delta": "x"}\n\n'] * 100
    head = http_head(content_type="text/event-stream; charset=utf-8")
    async with (
        RawHttpServer(dripped(head + config, slow_rest, 0.2)) as server,
        CanopyClient(server.url, timeout=5) as client,
    ):
        started = time.monotonic()
        assert await client.ab_ready() is True

    assert time.monotonic() - started < 1


async def test_slow_drip_times_out_as_unreachable() -> None:
    head = http_head(Content_Length="1000")
    async with (
        RawHttpServer(dripped(head, [b" "] * 1000, 0.05)) as server,
        CanopyClient(server.url, timeout=0.4) as client,
    ):
        started = time.monotonic()
        with pytest.raises(BackendUnreachable, match=r"GET /feedback: no complete answer within 0\.4s"):
            await client.feedback()

    assert time.monotonic() - started < 2


async def test_sse_split_into_single_bytes_is_reassembled() -> None:
    events = b'data: {"delta": "Hel"}\n\ndata: {"delta": "l\xc3\xb6"}\n\n'
    head = http_head(content_type="text/event-stream; charset=utf-8")
    async with (
        RawHttpServer(dripped(head, [bytes([b]) for b in events], 0)) as server,
        CanopyClient(server.url, timeout=5) as client,
    ):
        assert await client.summarize("x") == "Hellö"


@pytest.mark.parametrize(
    ("stream", "error", "message"),
    [
        (
            b'data: {"type": "ab_config", "mapping": {"a": "prompt", "b": "prompt_b"}}\n\n',
            BackendProtocolError,
            "before \\[DONE\\]",
        ),
        (
            b'data: {"type": "ab_config", "mapping": {"a": "prompt", "b": "prompt"}}\n\n',
            BackendProtocolError,
            "must pair",
        ),
        (b'data: {"variant": "a", "delta": "x"}\n\ndata: [DONE]\n\n', BackendProtocolError, "ab_config"),
        (b'event: message\ndata: {"type": "ab_config"}\n\n', BackendProtocolError, "only 'data:' lines"),
        (
            b'data: {"type": "ab_config", "mapping": {"a": "prompt", "b": "prompt_b"}}\n\ndata: {"varia',
            BackendProtocolError,
            "inside an event",
        ),
    ],
)
async def test_broken_ab_stream_raises(stream: bytes, error: type[Exception], message: str) -> None:
    head = http_head(content_type="text/event-stream; charset=utf-8")
    async with RawHttpServer(canned(head + stream)) as server, CanopyClient(server.url, timeout=2) as client:
        with pytest.raises(error, match=message):
            await client.summarize_ab("x")


async def test_json_answer_on_a_stream_endpoint_raises_protocol_error() -> None:
    async with RawHttpServer(canned(_json_answer(b"{}"))) as server, CanopyClient(server.url, timeout=2) as client:
        with pytest.raises(BackendProtocolError, match="expected an event stream"):
            await client.summarize("x")


async def test_export_of_another_shape_raises_protocol_error() -> None:
    answer = http_head(content_type="application/x-yaml", Content_Length="8") + b"tests: 1"
    async with RawHttpServer(canned(answer)) as server, CanopyClient(server.url, timeout=2) as client:
        with pytest.raises(BackendProtocolError, match="export keys must be"):
            await client.export()


async def test_an_https_backend_is_verified_with_the_trust_store_given(tmp_path: Path) -> None:
    """The aiohttp wire verifies HTTPS with the context the operator shares (a private CA here), and refuses a
    certificate the default trust store does not know before sending anything."""
    server_tls, ca = tls_server_context(["127.0.0.1"], tmp_path / "tls")
    answer = _json_answer(FLAGS_ANSWER)
    requests: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            requests.append(await reader.readuntil(b"\r\n\r\n"))
            writer.write(answer)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass  # the refused handshake
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_tls)
    url = f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        async with CanopyClient(url, timeout=5, tls=ssl.create_default_context(cadata=ca)) as client:
            assert (await client.feature_flags()).ab_testing is True
        assert len(requests) == 1
        async with CanopyClient(url, timeout=5, tls=ssl.create_default_context()) as client:
            with pytest.raises(
                BackendUnreachable, match=r"^GET /feature-flags: cannot connect to https://127\.0\.0\.1"
            ):
                await client.feature_flags()
        assert len(requests) == 1  # nothing was sent to the unverified server
    finally:
        server.close()
        await server.wait_closed()


async def test_the_proxy_the_environment_names_is_used_unless_no_proxy_excludes_the_backend(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As with httpx before: ``HTTP_PROXY`` carries the polls (looked up once per client), ``NO_PROXY`` wins."""
    server, heads = await _recording_proxy(_json_answer(FLAGS_ANSWER))
    _no_proxy_env(monkeypatch)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}")
    try:
        async with CanopyClient("http://canopy-backend.team-a.svc:8000", timeout=5) as client:
            assert (await client.feature_flags()).summarize is True
        assert [head.split(b"\r\n")[0] for head in heads] == [
            b"GET http://canopy-backend.team-a.svc:8000/feature-flags HTTP/1.1"
        ]
        monkeypatch.setenv("NO_PROXY", ".svc")
        async with CanopyClient("http://canopy-backend.team-a.svc:8000", timeout=2) as client:
            with pytest.raises(BackendUnreachable):  # straight to the (unresolvable) host, not via the proxy
                await client.feature_flags()
        assert len(heads) == 1
    finally:
        server.close()
        await server.wait_closed()


async def _recording_proxy(answer: bytes) -> tuple[asyncio.Server, list[bytes]]:
    """A plain HTTP proxy on 127.0.0.1 that records each request head and answers ``answer``."""
    heads: list[bytes] = []

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(answer)
        await writer.drain()
        writer.close()

    return await asyncio.start_server(proxy, "127.0.0.1", 0), heads


def _no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


async def test_all_proxy_and_proxy_credentials_are_honoured_as_httpx_did(monkeypatch: pytest.MonkeyPatch) -> None:
    server, heads = await _recording_proxy(_json_answer(FLAGS_ANSWER))
    port = server.sockets[0].getsockname()[1]
    _no_proxy_env(monkeypatch)
    monkeypatch.setenv("ALL_PROXY", f"http://user1:s3cret@127.0.0.1:{port}")
    try:
        async with CanopyClient("http://canopy-backend.team-a.svc:8000", timeout=5) as client:
            assert (await client.feature_flags()).summarize is True
    finally:
        server.close()
        await server.wait_closed()
    assert heads[0].startswith(b"GET http://canopy-backend.team-a.svc:8000/feature-flags HTTP/1.1")
    assert b"Proxy-Authorization: Basic dXNlcjE6czNjcmV0" in heads[0]  # user1:s3cret


@pytest.mark.parametrize("proxy", ["socks5://user1:s3cret@127.0.0.1:1080", "https://user1:s3cret@127.0.0.1:3128"])
async def test_a_proxy_this_client_cannot_use_fails_the_call_and_is_never_gone_around(
    monkeypatch: pytest.MonkeyPatch, proxy: str
) -> None:
    """Going straight to the backend would send the poll where the cluster's egress rules say it must not go."""
    async with RawHttpServer(canned(_json_answer(b"{}"))) as backend:
        _no_proxy_env(monkeypatch)
        monkeypatch.setenv("ALL_PROXY", proxy)
        async with CanopyClient(backend.url, timeout=5) as client:
            with pytest.raises(BackendUnreachable, match="is not supported: http:// only") as raised:
                await client.feature_flags()
        assert backend.requests == 0
    assert "s3cret" not in str(raised.value)
