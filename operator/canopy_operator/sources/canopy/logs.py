"""``GET /feedback/ab`` and ``GET /feedback`` read as logs: one streaming parse of the body, entries built on demand.

The backend answers its whole store every time (no paging, no "after id N"): at the contract's text sizes a
backend holding 100 000 votes answers 124 MiB even when nothing is new. Building and checking every entry (what
:meth:`CanopyClient.ab_feedback` does) costs seconds and several times the body in memory, while a poll needs far
less (``core.collect``): every id, ``total``, the entry with the lowest id (its fingerprint tells a restart) and
the entries above the read position. So the body is parsed by ijson's C parser (yajl) as it arrives, chunk by
chunk on the event loop, and kept as read (its chunks); nothing stays parsed but every entry's id, the entry with
the lowest id and the entries that end in the last ``KEEP_BYTES`` of the body, where the new ones are. The
returned :class:`~canopy_operator.core.collect.EntryLog` builds the entries a poll asks for, checked then with
the plain reading's own item model (``AbFeedbackItem``, ``FeedbackItem``: strict, on the parsed values); an entry
not kept parsed is parsed again from the kept body.

What is checked:

- everything besides the list as the plain reading checks it (``AbFeedbackHead``, ``FeedbackHead``), ``total``
  against the number of entries, every entry an object with an integer ``id``;
- every entry a poll builds (those it counts and the one with the lowest id) in full, as before;
- an entry at or below the read position only for its ``id``: it is never counted.

Only ijson's yajl backend is used (without it, every body is read the plain way). yajl and the plain reading's
parser (pydantic's) disagree on a few inputs: yajl takes vertical tab and form feed as white space, reads a lone
UTF-16 surrogate escape as ``?`` and has no nesting limit; the other takes ``NaN``. Numbers are read as C
``long long`` and ``double`` (ijson's ``use_float``), because ijson's exact integers crash the process
(segmentation fault, ijson 3.3 to 3.6) on an integer of more than 4 300 digits, which Python refuses to convert;
a number out of range is then a parse error. Whenever the fast reading cannot vouch that both read the body alike
(such bytes in it, a number out of range, a value nested deeper than ``_DEPTH`` in a checked object) or finds
anything wrong, the plain reading decides on the whole body: its entries, or its error word for word. A poll
therefore fails only when the plain reading fails too, with its message. One difference is kept, as not worth a
tokenizer of its own: a value nested past the plain parser's limit (200 levels) that a repeated key of the same
object then replaces is not seen, so such a body is read where the plain reading refuses it whole.

The parser is pushed each chunk between two awaits (ijson's C stages chained directly, :class:`_Send`): it never
awaits itself, so a cancelled read (the deadline) unwinds through the body's reader as any other. (ijson's own
async reading does not pass a cancellation on to the read it awaits: the reader was left to be torn down later
by another task, breaking httpx's cancel scopes.)
"""

from __future__ import annotations

import gc
import itertools
import re
import threading
from array import array
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from operator import itemgetter
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError

from canopy_operator.core.collect import AbEntry, EntryLog, FeedbackEntry
from canopy_operator.sources.canopy.errors import BackendProtocolError, describe_validation
from canopy_operator.sources.canopy.models import (
    AbFeedbackHead,
    AbFeedbackItem,
    AbFeedbackList,
    FeedbackHead,
    FeedbackItem,
    FeedbackList,
)

try:
    from ijson.backends import yajl2_c as ijson  # type: ignore[import-untyped]  # no type information shipped
except ImportError:  # pragma: no cover - the wheels ship it; without it every body is read the plain way
    ijson = None

__all__ = ["AB_LOG", "FEEDBACK_LOG", "KEEP_BYTES", "LogShape", "Undecided", "stream_log"]


KEEP_BYTES = 2**20
"""Entries that end in this many last bytes of the body are kept parsed: about 800 votes at the contract's text
sizes, far more than arrive between two polls (30 s apart by default). An older entry a poll needs (the first
poll, after a restart) is parsed again. Keeping more costs time as well as memory (measured: 4 MiB kept made
the pass 15 % slower)."""
_DEPTH = 32
"""Nesting a checked object's extra values may have before the plain reading decides (its parser's limit: 200)."""
_BATCH = 4096
"""Entries checked per call of the item model (bounds what is held twice while entries are built)."""
_LONE_HIGH = re.compile(rb"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})")
_ESCAPE_SPAN = 12
"""Bytes a surrogate escape and the low half it needs take: ``\\uD83D\\uDE00``."""

_ID = itemgetter("id")
_E = TypeVar("_E", AbEntry, FeedbackEntry)


@dataclass(frozen=True)
class LogShape(Generic[_E]):
    """One store's answer: where it is, its list's key, its models, and how an item becomes a pure entry."""

    path: str
    key: str
    head: type[BaseModel]
    """The answer's model without the list (checked as the plain reading checks it)."""
    items: TypeAdapter[list[Any]]
    """The plain reading's item model, for a list of parsed entries."""
    fields: frozenset[str]
    entry: Callable[[Any], _E]
    """A checked item as the entry ``core.collect`` counts."""
    plain: Callable[[bytes], list[_E]]
    """The plain reading of a whole body (raises ``ValidationError``): the reference and the fallback."""

    @property
    def endpoint(self) -> str:
        return f"GET {self.path}"


def _ab_entry(item: AbFeedbackItem) -> AbEntry:
    return AbEntry(
        item.id,
        item.timestamp,
        item.preference,
        item.winning_prompt,
        item.prompt_mapping,  # a dict made by the check for this entry alone
        item.input_text,
        item.response_a,
        item.response_b,
    )


def _feedback_entry(item: FeedbackItem) -> FeedbackEntry:
    return FeedbackEntry(
        item.id, item.timestamp, item.feature, item.rating, item.input_text, item.response_text, item.comment
    )


AB_LOG: LogShape[AbEntry] = LogShape(
    path="/feedback/ab",
    key="entries",
    head=AbFeedbackHead,
    items=TypeAdapter(list[AbFeedbackItem]),
    fields=frozenset(AbFeedbackItem.model_fields),
    entry=_ab_entry,
    plain=lambda body: AbFeedbackList.model_validate_json(body).to_entries(),
)
FEEDBACK_LOG: LogShape[FeedbackEntry] = LogShape(
    path="/feedback",
    key="feedback",
    head=FeedbackHead,
    items=TypeAdapter(list[FeedbackItem]),
    fields=frozenset(FeedbackItem.model_fields),
    entry=_feedback_entry,
    plain=lambda body: FeedbackList.model_validate_json(body).to_entries(),
)


async def stream_log(source: AsyncIterator[bytes], shape: LogShape[_E]) -> tuple[EntryLog[_E], int] | Undecided[_E]:
    """Parse the body as ``source`` yields it; the log and the backend's ``total``, or, when the fast reading
    cannot vouch for the body, the whole body read for the plain reading to decide (:meth:`Undecided.decide`,
    slow: run it off the event loop). An error of ``source`` (too big, cut short, cancelled) is raised as it
    is. The parser is fed between awaits and never awaits itself. The log keeps the body's chunks until it is
    dropped."""
    chunks: list[bytes] = []
    skimmer = _Skimmer(shape) if ijson is not None else None
    async for chunk in source:
        chunks.append(chunk)
        if skimmer is not None:
            try:
                skimmer.feed(chunk)
            except _Unsure:
                skimmer = None  # the rest is only kept: the plain reading decides
    if skimmer is not None:
        try:
            skim = skimmer.finish()
        except _Unsure:
            skimmer = None
    if skimmer is None:
        return Undecided(chunks, shape)
    return EntryLog(skim.ids, _Builder(chunks, shape, skim.kept).build), skim.total


@dataclass(frozen=True)
class Undecided(Generic[_E]):
    """A body the fast reading could not vouch for, as read."""

    chunks: list[bytes]
    shape: LogShape[_E]

    def decide(self) -> tuple[EntryLog[_E], int]:
        """The plain reading's verdict: its entries as a log and the total, or its :class:`BackendProtocolError`."""
        entries = _plain(self.chunks, self.shape)
        return EntryLog([entry.id for entry in entries], partial(_pick, entries)), len(entries)


class _Unsure(Exception):
    """The fast reading cannot vouch for the body: the plain reading decides."""


@dataclass(frozen=True)
class _Skim:
    ids: array[int]
    total: int
    kept: dict[int, Any]
    """Parsed entries by position: the last ones and the one with the lowest id."""


class _Screen:
    """Bytes the two parsers read differently, looked for chunk by chunk: vertical tab, form feed, a high surrogate
    escape without its low half (one at the end of a chunk is decided with the next chunk's first bytes)."""

    def __init__(self) -> None:
        self._tail = b""

    def check(self, chunk: bytes) -> None:
        if b"\x0b" in chunk or b"\x0c" in chunk:
            raise _Unsure("vertical tab or form feed")
        if b"\\" in self._tail:  # an escape may have begun in the tail
            window = self._tail + chunk
        elif b"\\" in chunk:
            window = chunk
        else:  # no escape at all (the usual case: the backend writes text unescaped but for quotes and controls)
            self._tail = chunk[1 - _ESCAPE_SPAN :]
            return
        self._lone_surrogates(window, final=False)
        self._tail = window[1 - _ESCAPE_SPAN :]

    def end(self) -> None:
        if b"\\" in self._tail:
            self._lone_surrogates(self._tail, final=True)

    @staticmethod
    def _lone_surrogates(window: bytes, *, final: bool) -> None:
        """A high surrogate escape without its low half; one that may continue past ``window`` is left for the
        next window (whose first bytes are this one's last ``_ESCAPE_SPAN - 1``)."""
        for found in _LONE_HIGH.finditer(window):
            if final or found.start() + _ESCAPE_SPAN <= len(window):
                raise _Unsure("a lone surrogate escape")


class _Chunks:
    """Kept chunks as a file for ijson's reading again."""

    def __init__(self, chunks: Sequence[bytes]) -> None:
        self._chunks = iter(chunks)

    def read(self, size: int) -> bytes:
        return next(self._chunks, b"") if size else b""


class _Send:
    """Hands ijson's chaining a parser stage itself as ``send``: the C stages then call each other directly (what
    ``items_coro`` builds calls each through a Python method, twice as slow)."""

    def __init__(self, stage: Any) -> None:
        self.send = stage


class _Skimmer:
    """One parse of the body, fed chunk by chunk, keeping every id, the last entries and the one with the lowest
    id.

    The answer object is the first mapping the parser makes (``mappings`` hands it out first); the parser adds
    each entry to its list when the entry starts, so after each chunk every entry but the last one is complete
    and is taken out of the list: the list never holds more than a chunk's worth."""

    def __init__(self, shape: LogShape[Any]) -> None:
        self.shape = shape
        self.root: dict[str, Any] = {}
        self.values: list[Any] = []
        self.ids = array("q")  # ids fit: a number out of a long long's range fails the parse
        self.recent: deque[tuple[int, int, list[Any]]] = deque()  # (bytes read when taken, first position, entries)
        self.low: list[Any] = []  # [lowest id, its first position, that entry]
        self.listed: list[Any] | None = None
        self.fed = 0
        self._screen = _Screen()
        mappings = partial(next, itertools.chain([self.root], iter(dict, None)))
        items = ijson.items_basecoro(_Send(self.values.append), "", map_type=mappings)
        self._parser = ijson.basic_parse_basecoro(_Send(ijson.parse_basecoro(_Send(items))), use_float=True)

    def feed(self, chunk: bytes) -> None:
        self._screen.check(chunk)
        try:
            self._parser.send(chunk)
        except Exception as exc:  # not JSON, or a number out of a C long long or double's range
            raise _Unsure(type(exc).__name__) from None
        self.fed += len(chunk)
        self.drain(self.fed, final=False)

    def finish(self) -> _Skim:
        self._screen.end()
        try:
            self._parser.close()  # the end of the document: an incomplete one fails here
        except Exception as exc:
            raise _Unsure(type(exc).__name__) from None
        self.drain(self.fed, final=True)
        return self._result()

    def drain(self, fed: int, final: bool) -> None:
        entries = self.root.get(self.shape.key)
        if type(entries) is not list:
            return
        if self.listed is None:
            self.listed = entries
        elif entries is not self.listed:
            raise _Unsure("the list is given twice")
        count = len(entries) if final else len(entries) - 1
        if count <= 0:
            return
        batch = entries[:count]
        del entries[:count]
        try:
            batch_ids = list(map(_ID, batch))
        except (TypeError, KeyError):
            raise _Unsure("an entry is not an object with an id") from None
        if set(map(type, batch_ids)) != {int}:
            raise _Unsure("an id is not an integer")
        start = len(self.ids)
        self.ids.extend(batch_ids)
        smallest = min(batch_ids)
        if not self.low or smallest < self.low[0]:
            at = batch_ids.index(smallest)
            self.low = [smallest, start + at, batch[at]]
        recent = self.recent
        recent.append((fed, start, batch))
        while recent[0][0] < fed - KEEP_BYTES:
            recent.popleft()

    def _result(self) -> _Skim:
        root, shape, values = self.root, self.shape, self.values
        if len(values) != 1 or values[0] is not root or self.listed is None or root.get(shape.key) is not self.listed:
            raise _Unsure("not an object with one list")
        try:
            head = shape.head.model_validate(root)
        except ValidationError:
            raise _Unsure("the answer's other fields") from None
        extras = [value for key, value in root.items() if key not in shape.head.model_fields and key != shape.key]
        if _deeper_than(extras, _DEPTH):
            raise _Unsure("deep nesting")
        total = getattr(head, "total", None)
        if total != len(self.ids):
            raise _Unsure("total is not the number of entries")
        kept = {position: entry for _, start, batch in self.recent for position, entry in enumerate(batch, start)}
        if self.low:
            kept[self.low[1]] = self.low[2]
        return _Skim(self.ids, total, kept)


class _Builder(Generic[_E]):
    """Builds the entries a poll asks for: checked with the item model; the plain reading decides on a doubt."""

    def __init__(self, chunks: Sequence[bytes], shape: LogShape[_E], kept: dict[int, Any]) -> None:
        self.chunks = chunks
        self.shape: LogShape[_E] = shape
        self.kept = kept
        self._plain: list[_E] | None = None

    def build(self, positions: Sequence[int]) -> list[_E]:
        if self._plain is None:
            try:
                with _gc_paused():
                    return self._fast(positions)
            except _Unsure:
                self._plain = _plain(self.chunks, self.shape)
        return _pick(self._plain, positions)

    def _fast(self, positions: Sequence[int]) -> list[_E]:
        built: dict[int, _E] = {}
        wanted = set(positions)
        kept = [position for position in wanted if position in self.kept]
        built.update(zip(kept, self._check([self.kept[position] for position in kept]), strict=True))
        again = wanted.difference(kept)
        if again:
            last = max(again)
            taken: list[int] = []
            raws: list[Any] = []
            for position, raw in enumerate(ijson.items(_Chunks(self.chunks), f"{self.shape.key}.item", use_float=True)):
                if position in again:
                    taken.append(position)
                    raws.append(raw)
                    if len(raws) >= _BATCH:
                        built.update(zip(taken, self._check(raws), strict=True))
                        taken, raws = [], []
                if position >= last:
                    break
            built.update(zip(taken, self._check(raws), strict=True))
            if len(built) < len(wanted):  # pragma: no cover - the same bytes parse alike
                raise _Unsure("fewer entries than parsed before")
        return [built[position] for position in positions]

    def _check(self, raws: list[Any]) -> list[_E]:
        try:
            items = self.shape.items.validate_python(raws)
        except ValidationError:
            raise _Unsure("an entry fails its model") from None
        fields = self.shape.fields
        for raw in raws:
            if not raw.keys() <= fields and _deeper_than((v for k, v in raw.items() if k not in fields), _DEPTH):
                raise _Unsure("deep nesting")
        return [self.shape.entry(item) for item in items]


def _plain(chunks: Sequence[bytes], shape: LogShape[_E]) -> list[_E]:
    """The plain reading of the whole body: its entries, or its error as the plain client words it."""
    try:
        return shape.plain(b"".join(chunks))
    except ValidationError as exc:
        raise BackendProtocolError(shape.endpoint, describe_validation(exc)) from exc


def _pick(entries: Sequence[_E], positions: Sequence[int]) -> list[_E]:
    return [entries[position] for position in positions]


def _deeper_than(values: Iterable[Any], limit: int) -> bool:
    """Whether any of ``values`` nests objects or lists more than ``limit`` deep (a scalar is 0 deep)."""
    stack = [(value, 1) for value in values]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children: Iterable[Any] = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


_gc_lock = threading.Lock()
_gc_pauses = 0
_gc_resume = False


@contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while entries are parsed (the parsed objects hold no cycles, and the
    collector's passes over them were half the time); nests across threads, restores the previous state."""
    global _gc_pauses, _gc_resume  # one process-wide state, guarded by the lock
    with _gc_lock:
        if _gc_pauses == 0:
            _gc_resume = gc.isenabled()
            gc.disable()
        _gc_pauses += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pauses -= 1
            if _gc_pauses == 0 and _gc_resume:
                gc.enable()
