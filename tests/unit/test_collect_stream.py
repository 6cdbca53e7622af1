"""The backend's stores read as logs (``sources/canopy/logs.py``): one streaming pass, entries built on demand.

The reference is the plain reading (``AbFeedbackList``/``FeedbackList.model_validate_json`` of the whole body,
what ``CanopyClient.ab_feedback()``/``feedback()`` do): with every entry counted, the log accepts exactly the
bodies it accepts, with the same entries, and refuses the others with its message word for word. With a read
position, only the entries counted (and the one with the lowest id) are checked beyond their id.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import itertools
import json
import random
from collections.abc import AsyncIterator, Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from ijson.backends import yajl2_c  # type: ignore[import-untyped]
from pydantic import ValidationError

from canopy_operator.api.status import Collection, VoteCounts
from canopy_operator.core.collect import (
    AbEntry,
    EntryLog,
    _duplicate_key,
    _read_store,
    ab_entry_fingerprint,
    ingest_ab,
    ingest_feedback,
)
from canopy_operator.core.readings import VoteLog, Window
from canopy_operator.sources.canopy import logs
from canopy_operator.sources.canopy.client import CanopyClient
from canopy_operator.sources.canopy.errors import BackendProtocolError, BackendUnreachable, describe_validation
from canopy_operator.sources.canopy.logs import AB_LOG, FEEDBACK_LOG, LogShape, Undecided, stream_log
from canopy_operator.sources.canopy.models import AbFeedbackList, FeedbackList
from canopy_operator.sources.canopy.source import CanopySource
from canopy_operator.sources.canopy.wire import AiohttpWire
from tests.support.collect import CHALLENGER_HASH, CHAMPION_HASH, NOW, TEST_PROMPTS, FakeBackend
from tests.support.simulator import (
    CHALLENGER,
    RawHttpServer,
    canned,
    dripped,
    http_head,
    running_simulator,
    write_config,
)

Verdict = tuple[str, Any]
"""``("ok", (entries, total))`` or ``("error", message)``."""


# ---- helpers ---------------------------------------------------------------------------------------------------


async def _chunks(chunks: Sequence[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


def _split(body: bytes, cuts: Sequence[int]) -> list[bytes]:
    points = sorted({0, len(body), *(c % (len(body) + 1) for c in cuts)})
    return [body[a:b] for a, b in itertools.pairwise(points) if b > a]


def read(body: bytes, shape: LogShape[Any], cuts: Sequence[int] = ()) -> tuple[EntryLog[Any], int]:
    """The new reading of ``body`` (given in pieces cut at ``cuts``), decided as the client decides."""
    result = asyncio.run(stream_log(_chunks(_split(body, cuts)), shape))
    return result.decide() if isinstance(result, Undecided) else result


def fast(body: bytes, shape: LogShape[Any]) -> bool:
    """Whether the fast reading vouched for ``body`` (no plain reading needed)."""
    return not isinstance(asyncio.run(stream_log(_chunks([body]), shape)), Undecided)


def plain(body: bytes, shape: LogShape[Any]) -> Verdict:
    model = AbFeedbackList if shape is AB_LOG else FeedbackList
    try:
        listing = model.model_validate_json(body)
    except ValidationError as exc:
        return "error", f"{shape.endpoint}: {describe_validation(exc)}"
    return "ok", (listing.to_entries(), listing.total)


def new(body: bytes, shape: LogShape[Any], cuts: Sequence[int] = ()) -> Verdict:
    """The new reading with every entry counted."""
    try:
        log, total = read(body, shape, cuts)
        return "ok", (log.take(range(len(log))), total)
    except BackendProtocolError as exc:
        return "error", str(exc)


def vote(i: int, **fields: Any) -> dict[str, Any]:
    entry = {
        "id": i,
        "timestamp": f"2026-11-22T10:00:00.{i:06d}+00:00",
        "feature": "summarize",
        "preference": "a",
        "winning_prompt": "prompt_b",
        "prompt_mapping": {"a": "prompt_b", "b": "prompt"},
        "input_text": f"article {i}",
        "response_a": f"left {i}",
        "response_b": f"right {i}",
    }
    return entry | fields


def thumbs(i: int, **fields: Any) -> dict[str, Any]:
    entry = {
        "id": i,
        "timestamp": f"2026-11-22T10:00:00.{i:06d}+00:00",
        "feature": "summarize",
        "rating": "thumbs_down" if i % 3 == 0 else "thumbs_up",
        "input_text": f"article {i}",
        "response_text": f"answer {i}",
        "comment": None,
    }
    return entry | fields


def ab_body(entries: list[dict[str, Any]], **top: Any) -> bytes:
    content = {"total": len(entries), "prompt_a_wins": 0, "prompt_b_wins": len(entries), "ties": 0} | top
    content["entries"] = entries
    return json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode()


def feedback_body(entries: list[dict[str, Any]], **top: Any) -> bytes:
    content = {"total": len(entries)} | top | {"feedback": entries}
    return json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode()


# ---- the equivalence property ----------------------------------------------------------------------------------

# JSON texts of values, valid for a field or not, including those the two parsers read differently.
TEXTS = st.text(
    st.characters(codec="utf-8", exclude_categories=["Cs"]) | st.sampled_from('?"\\\x00\x0b\x0c\u2028\U0001f600'),
    max_size=12,
)
ODD_TOKENS = st.sampled_from(
    [
        "NaN",
        "Infinity",
        "-Infinity",
        "-0",
        "1.0",
        "1e2",
        "1E400",
        "true",
        "null",
        "[]",
        "{}",
        '"\\ud800"',
        '"x\\udbff"',
        '"\\udc00"',
        '"\\ud83d\\ude00"',
        '"\\\\ud800"',
        '"\\u0000"',
        "123456789012345678901234567890",
        "9" * 5000,
        "-9223372036854775808",
        "9223372036854775808",
        "[" * 40 + "]" * 40,
        "[" * 210 + "]" * 210,
        '"2026-11-22T10:00:00"',
        '"yesterday"',
    ]
)


def _value(draw: st.DrawFn, good: str, rate: int) -> str:
    """``good`` (a JSON text), or with ``rate`` percent a string, a number or an odd token."""
    if draw(st.integers(0, 99)) >= rate:
        return good
    choice = draw(st.integers(0, 3))
    if choice <= 1:
        return json.dumps(draw(TEXTS), ensure_ascii=draw(st.booleans()))
    if choice == 2:
        return str(draw(st.integers(-3, 10**20)))
    return draw(ODD_TOKENS)


@st.composite
def bodies(draw: st.DrawFn, shape: LogShape[Any]) -> bytes:
    """Answers close to the backend's, broken in the ways a backend or a proxy could break them (``rate``: how
    often a value is replaced by another JSON text, in percent)."""
    rate = draw(st.sampled_from([0, 2, 8, 30]))
    n = draw(st.integers(0, 6))
    make = vote if shape is AB_LOG else thumbs
    space = draw(st.sampled_from(["", " ", "\n", "\t ", "\r\n"]))
    if draw(st.integers(0, 14)) == 0:
        space = draw(st.sampled_from(["\x0b", "\x0c", " \x0c"]))
    ascii_only = draw(st.booleans())

    def obj(pairs: list[tuple[str, str]]) -> str:
        return "{" + ",".join(f"{space}{json.dumps(k)}:{space}{v}" for k, v in pairs) + space + "}"

    def text(value: Any) -> str:
        return json.dumps(value, ensure_ascii=ascii_only)

    entries = []
    for i in range(n):
        ident = i + 1 if draw(st.integers(0, 99)) >= rate else draw(st.integers(-1, 4))
        fields = make(ident) | ({"input_text": draw(TEXTS)} if draw(st.booleans()) else {})
        pairs = [(k, _value(draw, text(v), rate)) for k, v in fields.items()]
        if draw(st.integers(0, 99)) < rate:
            del pairs[draw(st.integers(0, len(pairs) - 1))]
        if draw(st.integers(0, 99)) < rate:
            pairs.append((draw(st.sampled_from(["extra", "id", "input_text"])), _value(draw, '"x"', 50)))
        if draw(st.booleans()):
            pairs = draw(st.permutations(pairs))
        entries.append(obj(pairs))
    listing = "[" + ",".join(space + e for e in entries) + space + "]"
    head = {"total": str(n)} if shape is FEEDBACK_LOG else {"total": str(n), "prompt_a_wins": "0"}
    head |= {"prompt_b_wins": "1", "ties": "0"} if shape is AB_LOG else {}
    pairs = [(k, _value(draw, v, rate // 2)) for k, v in head.items()] + [(shape.key, listing)]
    if draw(st.integers(0, 99)) < rate:
        pairs.append((draw(st.sampled_from([shape.key, "total", "extra"])), _value(draw, "[]", 50)))
    if draw(st.booleans()):
        pairs = draw(st.permutations(pairs))
    body = (obj(pairs) if draw(st.integers(0, 99)) >= rate // 4 else listing).encode("utf-8", "surrogatepass")
    for _ in range(draw(st.integers(1, 2)) if draw(st.integers(0, 99)) < rate // 2 else 0):  # damage bytes
        at = draw(st.integers(0, len(body)))
        byte = bytes([draw(st.sampled_from(b'{}[],:"\\u0d8 \x0b\xff\xedaN1'))])
        cut = draw(st.sampled_from([b"", byte, body[at : at + 1]]))
        body = body[:at] + cut + body[at + draw(st.integers(0, 2)) :]
    return body


EQUIVALENCE = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@EQUIVALENCE
@given(body=bodies(AB_LOG), cuts=st.lists(st.integers(0, 2000), max_size=6))
@example(body=ab_body([vote(1), vote(2, input_text=7)]), cuts=[])
@example(body=ab_body([vote(1)], total=2), cuts=[])
@example(body=b'{"total": 1, "ent', cuts=[5])
@example(body=ab_body([vote(1)]).replace(b'"id":1,', b'"id":' + b"[" * 210 + b"]" * 210 + b',"id":1,'), cuts=[])
def test_votes_read_as_a_log_are_the_plain_reading_when_all_are_counted(body: bytes, cuts: list[int]) -> None:
    assert_same_reading(body, AB_LOG, cuts)


@EQUIVALENCE
@given(body=bodies(FEEDBACK_LOG), cuts=st.lists(st.integers(0, 2000), max_size=6))
@example(body=feedback_body([thumbs(1, timestamp="yesterday")]), cuts=[])
def test_feedback_read_as_a_log_is_the_plain_reading_when_all_are_counted(body: bytes, cuts: list[int]) -> None:
    assert_same_reading(body, FEEDBACK_LOG, cuts)


def assert_same_reading(body: bytes, shape: LogShape[Any], cuts: Sequence[int]) -> None:
    """The new reading is the plain one, but for the one difference kept (``logs.py``): a value nested past the
    plain parser's limit that a repeated key then replaces is not refused."""
    got, reference = new(body, shape, cuts), plain(body, shape)
    if got != reference:
        assert got[0] == "ok", (got, reference)
        assert "recursion limit exceeded" in reference[1], (got, reference)
        assert _deep_value_replaced(body)


def _deep_value_replaced(body: bytes) -> bool:
    replaced = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [key for key, _ in items]
        replaced.extend(key for key, value in items[:-1] if keys.count(key) > 1 and logs._deeper_than([value], 150))
        return dict(items)

    json.loads(body, object_pairs_hook=pairs)
    return bool(replaced)


@settings(max_examples=200, deadline=None)
@given(
    body=bodies(AB_LOG),
    cursor=st.integers(0, 7),
    stored=st.sampled_from(["", "same", "other"]),
    cuts=st.lists(st.integers(0, 2000), max_size=4),
)
def test_a_poll_counts_as_the_plain_reading_or_fails_with_its_error(
    body: bytes, cursor: int, stored: str, cuts: list[int]
) -> None:
    """With a read position the log may accept a body whose uncounted entries the plain reading refuses; it never
    refuses one the plain reading accepts, fails only with the plain reading's error, and counts the same."""
    reference = plain(body, AB_LOG)
    first = ab_entry_fingerprint(reference[1][0][0]) if reference[0] == "ok" and reference[1][0] else "f" * 16
    collection = Collection(ab_cursor=cursor, ab_fingerprint={"": "", "same": first, "other": "0" * 16}[stored])

    def poll(entries: Sequence[AbEntry], total: int) -> Any:
        args = (TEST_PROMPTS, CHAMPION_HASH, CHALLENGER_HASH, 3)
        return ingest_ab(collection, VoteCounts(), entries, total, *args, now=NOW)

    counted = _verdict(lambda: poll(*read(body, AB_LOG, cuts)))

    if counted[0] == "error":
        assert counted == reference
    elif reference[0] == "ok":
        assert counted[1] == poll(*reference[1])


def _verdict(work: Callable[[], Any]) -> Verdict:
    try:
        return "ok", work()
    except BackendProtocolError as exc:
        return "error", str(exc)


# ---- what a poll builds --------------------------------------------------------------------------------------


def _store(n: int) -> bytes:
    return ab_body([vote(i + 1, input_text=f"article {i + 1} " + "x" * 500) for i in range(n)])


def _counting(log: EntryLog[Any], built: list[int]) -> EntryLog[Any]:
    build = log._build  # the log's own builder, watched

    def watched(positions: Sequence[int]) -> Sequence[Any]:
        built.extend(positions)
        return build(positions)

    return EntryLog(log.ids, watched)


def _poll_body(body: bytes, collection: Collection) -> Any:
    return _poll(*read(body, AB_LOG, [7, 30]), collection)


def _poll(log: Sequence[AbEntry], total: int, collection: Collection) -> Any:
    return ingest_ab(collection, VoteCounts(), log, total, TEST_PROMPTS, CHAMPION_HASH, CHALLENGER_HASH, 3, now=NOW)


def test_a_steady_poll_builds_only_the_first_entry_and_the_new_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    body = _store(3000)
    log, total = read(body, AB_LOG, range(0, len(body), 4096))
    first = _poll(log, total, Collection()).collection
    parses: list[object] = []
    items = yajl2_c.items

    def counted_items(*args: Any, **kwargs: Any) -> Any:
        parses.append(args)
        return items(*args, **kwargs)

    monkeypatch.setattr(yajl2_c, "items", counted_items)

    built: list[int] = []
    log, total = read(body, AB_LOG, range(0, len(body), 4096))
    behind = first.model_copy(update={"ab_cursor": 2990})
    again = _poll(_counting(log, built), total, behind)

    assert sorted(built) == [0, *range(2990, 3000)]
    assert parses == []  # the new entries were kept from the one pass: nothing parsed again
    assert again.new_entries == 10
    assert again.collection.ab_cursor == 3000
    assert not again.restart_detected


def test_entries_past_the_kept_bytes_are_parsed_again_from_the_kept_body(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logs, "KEEP_BYTES", 2048)
    body = _store(400)
    log, total = read(body, AB_LOG, range(0, len(body), 1024))

    everything = log.take(range(len(log)))

    assert (everything, total) == plain(body, AB_LOG)[1]


def test_restart_is_detected_when_ids_start_again_at_one() -> None:
    backend = FakeBackend()
    for _ in range(6):
        backend.vote_for("challenger")
    body = _fake_body(backend)
    log, total = read(body, AB_LOG)
    first = _poll(log, total, Collection())
    backend.restart()
    for side in ("champion", "challenger", "champion", "tie", "challenger", "champion", "champion"):
        backend.vote_for(side)  # more entries than were read: only the first one's fingerprint tells

    log, total = read(_fake_body(backend), AB_LOG)
    after = _poll(log, total, first.collection)

    assert after.restart_detected
    assert after.new_entries == 7
    assert (after.votes.challenger_wins, after.votes.champion_wins, after.votes.ties) == (2, 4, 1)


def test_restart_is_detected_when_the_store_holds_fewer_entries_than_read() -> None:
    entries = [vote(i + 1) for i in range(5)]
    log, total = read(ab_body(entries), AB_LOG)
    first = _poll(log, total, Collection())

    log, total = read(ab_body(entries[:3]), AB_LOG)  # same first entry, fewer entries than the cursor
    after = _poll(log, total, first.collection)

    assert after.restart_detected
    assert after.collection.ab_cursor == 3
    assert after.new_entries == 3


def test_an_empty_store_after_reading_is_a_restart_and_builds_nothing() -> None:
    log, total = read(ab_body([vote(1)]), AB_LOG)
    first = _poll(log, total, Collection())
    built: list[int] = []
    log, total = read(ab_body([]), AB_LOG)

    after = _poll(_counting(log, built), total, first.collection)

    assert (after.restart_detected, after.collection.ab_cursor, built) == (True, 0, [])


def test_repeated_and_unordered_ids_count_as_the_plain_list_does() -> None:
    entries = [vote(3), vote(1), vote(2), vote(1, input_text="again"), vote(5)]
    body = ab_body(entries)
    log, total = read(body, AB_LOG)
    reference_entries, reference_total = plain(body, AB_LOG)[1]
    for collection in (Collection(), Collection(ab_cursor=2), Collection(ab_cursor=9)):
        assert _poll(log, total, collection) == _poll(reference_entries, reference_total, collection)


def test_feedback_log_counts_as_the_plain_list() -> None:
    entries = [thumbs(i + 1) for i in range(9)]
    body = feedback_body(entries)
    log, total = read(body, FEEDBACK_LOG)
    reference_entries, reference_total = plain(body, FEEDBACK_LOG)[1]
    for cursor in (0, 4, 9):
        collection = Collection(feedback_cursor=cursor)
        assert ingest_feedback(collection, log, total, set(), now=NOW) == ingest_feedback(
            collection, reference_entries, reference_total, set(), now=NOW
        )


def _fake_body(backend: FakeBackend) -> bytes:
    rows = [
        {
            "id": e.id,
            "timestamp": e.timestamp,
            "feature": "summarize",
            "preference": e.preference,
            "winning_prompt": e.winning_prompt,
            "prompt_mapping": dict(e.prompt_mapping),
            "input_text": e.input_text,
            "response_a": e.response_a,
            "response_b": e.response_b,
        }
        for e in backend.ab
    ]
    return ab_body(rows)


# ---- checks and the plain reading's word -----------------------------------------------------------------------


def test_a_malformed_entry_above_the_read_position_fails_the_poll_with_the_plain_error() -> None:
    entries = [vote(i + 1) for i in range(6)]
    entries[4]["input_text"] = 42
    body = ab_body(entries)
    log, total = read(body, AB_LOG)

    with pytest.raises(BackendProtocolError) as raised:
        _poll(log, total, Collection(ab_cursor=3))

    assert str(raised.value) == plain(body, AB_LOG)[1]
    assert (
        str(raised.value)
        == "GET /feedback/ab: unexpected answer at entries.4.input_text: Input should be a valid string"
    )


def test_a_malformed_entry_at_or_below_the_read_position_is_not_counted_and_not_checked() -> None:
    entries = [vote(i + 1) for i in range(6)]
    entries[2]["preference"] = ["not", "a", "string"]
    body = ab_body(entries)
    log, total = read(body, AB_LOG)
    first = ab_entry_fingerprint(plain(ab_body([vote(1)]), AB_LOG)[1][0][0])

    counted = _poll(log, total, Collection(ab_cursor=4, ab_fingerprint=first))

    assert plain(body, AB_LOG)[0] == "error"
    assert (counted.new_entries, counted.collection.ab_cursor) == (2, 6)


@pytest.mark.parametrize(
    "body",
    [
        b'{"total": 2, "ent',
        b'{"total": 1, "prompt_a_wins": 0, "prompt_b_wins": 1, "ties": 0, "entries": [{"id": 1,',
        b"<html>oops</html>",
        b"",
        b'{"total": "two", "prompt_a_wins": [], "entries": {}}',
        b'["a", "list"]',
        ab_body([vote(1)]) + b"x",
        ab_body([vote(1)]) + ab_body([vote(2)]),
        ab_body([vote(1), vote(2)], total=3),
        ab_body([vote(1), {"id": "2"}]),
        ab_body([vote(1), vote(True)]),
        ab_body([vote(1)]).replace(b'"id":1', b'"id":1.0'),
        ab_body([vote(1)]).replace(b'"entries":[', b'"entries":[],"entries":['),
        b"\xef\xbb\xbf" + ab_body([vote(1)]),
    ],
)
def test_truncated_or_garbage_json_fails_as_the_plain_reading_fails(body: bytes) -> None:
    verdict = plain(body, AB_LOG)
    assert new(body, AB_LOG) == verdict
    for cursor in (0, 5):
        collection = Collection(ab_cursor=cursor)
        polled = _verdict(partial(_poll_body, body, collection))
        assert polled[0] == "ok" or polled == verdict


def _escaped(text: str, escape: bytes) -> bytes:
    return ab_body([vote(1, input_text=f"<{text}>")]).replace(f"<{text}>".encode(), b"<" + escape + b">")


@pytest.mark.parametrize(
    ("body", "vouched"),
    [
        (ab_body([vote(1)]), True),
        (ab_body([vote(1)]).replace(b',"feature"', b',\x0b"feature"'), False),  # white space to yajl only
        (ab_body([vote(1)]).replace(b',"feature"', b',\x0c"feature"'), False),
        (_escaped("lone", b"\\ud800"), False),  # yajl reads "?", the plain parser refuses
        (_escaped("lone", b"\\udbff\\u0041"), False),
        (_escaped("low", b"\\udc00"), False),
        (_escaped("pair", b"\\ud83d\\ude00"), True),
        (_escaped("text", b"\\\\ud800"), False),  # an escaped backslash: a doubt, decided the plain way
        (ab_body([vote(1, extra=float("nan"))]), False),  # NaN: the plain parser only
        (ab_body([vote(1)], deep=[[[[[]]]]]), True),
        (ab_body([vote(1, deep=json.loads("[" * 60 + "]" * 60))]), True),  # found when the entry is built
        (ab_body([vote(1)], deep=json.loads("[" * 60 + "]" * 60)), False),
        (ab_body([vote(1)]).replace(b'"id":1', b'"id":' + b"7" * 5000), False),  # crashed ijson's exact integers
        (ab_body([vote(1)]).replace(b'"id":1', b'"id":9223372036854775808'), False),  # past a C long long
        (ab_body([vote(1)], extra=10**30), False),
    ],
)
def test_what_the_parsers_read_differently_goes_to_the_plain_reading(body: bytes, vouched: bool) -> None:
    """``vouched``: whether the pass vouches for the body (else the plain reading decides at once)."""
    assert fast(body, AB_LOG) is vouched
    reference = plain(body, AB_LOG)
    for cut in range(0, len(body), 3 if len(body) < 2000 else 97):  # split anywhere, an escape too
        assert new(body, AB_LOG, [cut]) == reference


def test_a_surrogate_pair_split_between_chunks_is_not_a_doubt() -> None:
    body = ab_body([vote(1, input_text="\U0001f600")]).replace("\U0001f600".encode(), b"\\ud83d\\ude00")
    at = body.index(b"\\ud83d")
    for cut in range(at - 2, at + 14):
        result = asyncio.run(stream_log(_chunks(_split(body, [cut])), AB_LOG))
        assert not isinstance(result, Undecided), cut


def test_the_collector_is_left_as_it_was() -> None:
    body = _store(50)
    for state in (True, False):
        (gc.enable if state else gc.disable)()
        try:
            log, total = read(body, AB_LOG)
            _poll(log, total, Collection())
            assert gc.isenabled() is state
        finally:
            gc.enable()


# ---- through the client ----------------------------------------------------------------------------------------


def _answer(body: bytes) -> bytes:
    return http_head(Content_Length=str(len(body))) + body


async def test_source_reads_both_stores_as_logs_of_the_simulator(tmp_path: Path) -> None:
    async with running_simulator(write_config(tmp_path, ab_testing=True, prompt_b=CHALLENGER)) as sim:
        source = CanopySource(CanopyClient(sim.url, timeout=5))
        for i in range(4):
            await source.client.post_ab_feedback(f"text {i}", "l", "r", "a", {"a": "prompt_b", "b": "prompt"})
        await source.client.post_feedback("text", "answer", "thumbs_down")
        try:
            reading = await source.read(Window(started_at=NOW))
            listed = await source.client.ab_feedback()
            thumbs_listed = await source.client.feedback()
        finally:
            await source.aclose()

    assert isinstance(reading.votes, VoteLog)
    assert isinstance(reading.votes.entries, EntryLog)
    assert list(reading.votes.entries) == listed.to_entries()
    assert reading.votes.total == 4
    assert list(reading.feedback.entries) == thumbs_listed.to_entries()


async def test_log_errors_read_as_the_plain_client_words_them() -> None:
    for body in (b"{not json", json.dumps({"total": "1", "feedback": []}).encode(), feedback_body([], total=1)):
        async with RawHttpServer(canned(_answer(body))) as server, CanopyClient(server.url, timeout=2) as client:
            with pytest.raises(BackendProtocolError) as plain_error:
                await client.feedback()
            with pytest.raises(BackendProtocolError) as log_error:
                await client.feedback_log()
        assert str(log_error.value) == str(plain_error.value)


async def test_declared_oversized_log_is_refused_unread() -> None:
    answer = http_head(Content_Length=str(50 * 1024 * 1024)) + b"{" + b" " * 1024
    async with (
        RawHttpServer(canned(answer)) as server,
        CanopyClient(server.url, timeout=2, max_body_bytes=64 * 1024) as client,
    ):
        with pytest.raises(BackendProtocolError, match="GET /feedback/ab: answer of 52428800 bytes is over 65536"):
            await client.ab_log()


async def test_the_stores_read_as_logs_have_their_own_limit() -> None:
    """A store larger than the plain limit is read whole under the log limit; the plain reading still refuses it,
    and the log limit refuses a larger one (a default of 32 MiB refused the 124 MiB of 100 000 votes)."""
    body = ab_body([vote(i) for i in range(1, 201)])
    assert len(body) > 32 * 1024
    async with RawHttpServer(canned(_answer(body))) as server:
        async with CanopyClient(server.url, timeout=5, max_body_bytes=32 * 1024, max_log_bytes=len(body)) as client:
            log = await client.ab_log()
            assert log.total == 200
            assert [entry.id for entry in log.entries] == list(range(1, 201))
            with pytest.raises(BackendProtocolError, match=f"answer of {len(body)} bytes is over 32768"):
                await client.ab_feedback()
        async with CanopyClient(server.url, timeout=5, max_body_bytes=len(body), max_log_bytes=len(body) - 1) as client:
            with pytest.raises(BackendProtocolError, match=f"answer of {len(body)} bytes is over {len(body) - 1}"):
                await client.ab_log()


async def test_streamed_oversized_log_is_abandoned_past_the_limit() -> None:
    start = b'{"total":1,"prompt_a_wins":0,"prompt_b_wins":1,"ties":0,"entries":['
    votes = (json.dumps(vote(1), separators=(",", ":")).encode() + b",") * 16
    sent = 0

    async def endless_votes(writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        writer.write(http_head(Transfer_Encoding="chunked") + b"%x\r\n%s\r\n" % (len(start), start))
        for _ in range(20_000):
            writer.write(b"%x\r\n%s\r\n" % (len(votes), votes))
            await writer.drain()
            sent += 1

    async with (
        RawHttpServer(endless_votes) as server,
        CanopyClient(server.url, timeout=10, max_body_bytes=256 * 1024) as client,
    ):
        with pytest.raises(BackendProtocolError, match="GET /feedback/ab: answer is over 262144 bytes"):
            await client.ab_log()

    assert sent < 20_000 / 2, "the client should hang up long before the end of the body"


async def test_truncated_log_answer_is_cut_short() -> None:
    answer = http_head(Content_Length="100") + b'{"total": 0, "feed'
    async with RawHttpServer(canned(answer)) as server, CanopyClient(server.url, timeout=2) as client:
        with pytest.raises(BackendProtocolError, match="GET /feedback: answer cut short"):
            await client.feedback_log()


async def test_a_log_sent_a_byte_at_a_time_reads_whole() -> None:
    body = feedback_body([thumbs(1), thumbs(2, comment="ok")])
    head = http_head(Content_Length=str(len(body)))
    async with (
        RawHttpServer(dripped(head, [bytes([b]) for b in body], 0)) as server,
        CanopyClient(server.url, timeout=5) as client,
    ):
        log = await client.feedback_log()

    assert (list(log.entries), log.total) == plain(body, FEEDBACK_LOG)[1]


def test_the_kept_bytes_bound_what_stays_parsed() -> None:
    body = _store(5000)
    kept, total = asyncio.run(_read_kept(body))
    assert total == 5000
    assert 1 < kept < 5000 * logs.KEEP_BYTES / len(body) * 1.5 + 2


async def _read_kept(body: bytes) -> tuple[int, int]:
    result = await stream_log(_chunks(_split(body, range(0, len(body), 65536))), AB_LOG)
    assert not isinstance(result, Undecided)
    entries, total = result
    builder = entries._build.__self__  # type: ignore[attr-defined]
    return len(builder.kept), total


def test_without_the_c_parser_every_body_is_read_the_plain_way(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logs, "ijson", None)
    for body in (ab_body([vote(1), vote(2)]), ab_body([vote(1, input_text=3)]), b"{"):
        assert not fast(body, AB_LOG)
        assert new(body, AB_LOG) == plain(body, AB_LOG)


def test_any_split_of_the_body_reads_the_same() -> None:
    rng = random.Random(7)
    body = ab_body([vote(i + 1) for i in range(40)])
    for _ in range(20):
        cuts = [rng.randrange(len(body)) for _ in range(rng.randrange(1, 60))]
        assert new(body, AB_LOG, cuts) == plain(body, AB_LOG)


@given(texts=st.tuples(TEXTS, TEXTS, TEXTS))
def test_the_duplicate_key_is_the_json_dumps_one(texts: tuple[str, str, str]) -> None:
    """The duplicate-cap record in status keeps these keys: writing them out faster must not change them."""
    entry = AbEntry(1, "t", "a", "prompt", {"a": "prompt", "b": "prompt_b"}, *texts)
    payload = json.dumps([entry.input_text, sorted([entry.response_a, entry.response_b])], ensure_ascii=False)

    assert _duplicate_key(entry) == hashlib.sha256(payload.encode("utf-8")).digest()[:6]


def _read_store_before(stored_fingerprint: str, cursor: int, entries: Sequence[Any], total: int) -> tuple[Any, ...]:
    """``core.collect._read_store`` as it was before logs (every entry built), the reference for its new form."""
    already_counted = stored_fingerprint.startswith("~")
    stored = stored_fingerprint.lstrip("~")
    by_id: dict[int, Any] = {}
    for entry in entries:
        by_id.setdefault(entry.id, entry)
    if not by_id:
        restarted = cursor > 0 or bool(stored)
        return restarted, restarted and not already_counted, (), "", 0
    first = ab_entry_fingerprint(by_id[min(by_id)])
    top = max(by_id)
    restarted = (bool(stored) and first != stored) or min(top, total) < cursor
    base = 0 if restarted else cursor
    fresh = tuple(by_id[i] for i in sorted(by_id) if i > base)
    return restarted, restarted and not already_counted, fresh, first, max(base, top)


@given(
    ids=st.lists(st.integers(-2, 12), max_size=12) | st.lists(st.integers(1, 30), unique=True).map(sorted),
    cursor=st.integers(0, 14),
    stored=st.sampled_from(["", "~", "same", "~same", "other"]),
    extra=st.integers(-2, 2),
    as_log=st.booleans(),
)
def test_reading_a_store_by_ids_is_the_reading_by_entries(
    ids: list[int], cursor: int, stored: str, extra: int, as_log: bool
) -> None:
    mapping = {"a": "prompt_b", "b": "prompt"}
    entries = [AbEntry(i, f"t{n}", "a", "prompt_b", mapping, "x", "l", "r") for n, i in enumerate(ids)]
    first = ab_entry_fingerprint(min(entries, key=lambda e: e.id)) if entries else "f"
    stored_fingerprint = stored.replace("same", first).replace("other", "0" * 16)
    given_entries: Sequence[AbEntry] = EntryLog(ids, partial(_pick_entries, entries)) if as_log else entries

    read = _read_store(stored_fingerprint, cursor, given_entries, len(ids) + extra, ab_entry_fingerprint)

    assert (read.restarted, read.counted, read.fresh, read.fingerprint, read.cursor) == _read_store_before(
        stored_fingerprint, cursor, entries, len(ids) + extra
    )


def _pick_entries(entries: Sequence[AbEntry], positions: Sequence[int]) -> list[AbEntry]:
    return [entries[p] for p in positions]


async def test_a_read_cut_by_the_deadline_leaves_nothing_running(caplog: pytest.LogCaptureFixture) -> None:
    """The parser never awaits: the deadline's cancellation reaches the body's reader, which closes as it should
    (ijson's own async reading did not pass it on, and left the reader to be torn down by another task)."""
    body = ab_body([vote(i + 1) for i in range(40)])
    head = http_head(Content_Length=str(len(body)))
    pieces = [body[i : i + 64] for i in range(0, len(body), 64)]
    async with (
        RawHttpServer(dripped(head, pieces, 0.05)) as slow,
        RawHttpServer(canned(_answer(body))) as fast_server,
        CanopyClient(slow.url, timeout=0.3) as client,
    ):
        for _ in range(3):
            with pytest.raises(BackendUnreachable, match=r"GET /feedback/ab: no complete answer within 0\.3s"):
                await client.ab_log()
        cast(AiohttpWire, client._wire).base_url = fast_server.url  # the same client and pool, a prompt server
        log = await client.ab_log()
        await asyncio.sleep(0.1)

    assert log.total == 40
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == []


async def test_a_source_cancelled_mid_body_is_closed_by_its_own_task() -> None:
    closed: list[str] = []

    async def hanging() -> AsyncIterator[bytes]:
        try:
            yield b'{"total": 1, "entries": ['
            await asyncio.sleep(10)
            yield b"]}"
        finally:
            closed.append("closed")

    source = hanging()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.1):
            await stream_log(source, AB_LOG)

    assert closed == ["closed"]
