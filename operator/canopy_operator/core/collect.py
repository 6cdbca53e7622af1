"""Reading votes and thumbs-down feedback from the backend's in-memory stores, each exactly once.

The backend keeps A/B votes and feedback in two lists; ids are ``len(store) + 1`` and start again at 1
after every restart, and ``GET`` returns the whole list. Per store, the status keeps a cursor (highest id
read) and the fingerprint of the entry with id 1. A poll is a **restart** when id 1's fingerprint changed,
the store shrank below the cursor, or the store is empty after something was read; the store is then read
again from id 1. Each store relies only on its own evidence (so a store is never re-read by mistake), but a
restart is counted once: the store that sees it first marks the other's fingerprint (prefix ``~``) as
"restart already counted". Within an epoch only ids above the cursor are new, so replays and polls at any
split points count each vote once.

Votes belong to prompt texts, not to the key names ``prompt``/``prompt_b``: a vote's key is mapped through
the prompts live in its epoch (recorded when the epoch's first vote is read; the backend reads its config
only at start-up) to a text hash, then to the test's champion or challenger.

A store may be handed over as an :class:`EntryLog`: every id known, each entry built only when asked for.
A poll then builds the entry with the lowest id (its fingerprint) and the entries above the read position,
nothing else; a large store with little new costs little.

Everything here is pure: inputs are never mutated, new status models are returned.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import hashlib
import itertools
import json
import operator
from collections.abc import Callable, Iterator, Mapping, Sequence, Set
from dataclasses import dataclass
from datetime import datetime
from json.encoder import encode_basestring as _json_string  # json.dumps's string encoder with ensure_ascii=False
from typing import Generic, Literal, TypeVar, overload

from canopy_operator.api.status import Collection, EpochPrompts, Negatives, VoteCounts

_KEY_BYTES = 6
"""Bytes of sha256 kept per duplicate-cap key (48 bits: collisions are negligible for 1e5 votes)."""

MAX_CAP_KEYS = 12_000
"""Bound on the duplicate-cap record (about 110 KB in status); past it the keys seen least are forgotten."""
_COUNTED = "~"
"""Prefix of a store fingerprint whose restart the other store has already counted."""

Outcome = Literal["champion", "challenger", "tie"]


def text_hash(text: str) -> str:
    """sha256 of the UTF-8 text, hex, first 16 characters: the hash used for prompt texts everywhere."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class AbEntry:
    """One entry of ``GET /feedback/ab``."""

    id: int
    timestamp: str
    preference: str
    winning_prompt: str | None
    prompt_mapping: Mapping[str, str]
    input_text: str
    response_a: str
    response_b: str


@dataclass(frozen=True)
class FeedbackEntry:
    """One entry of ``GET /feedback``."""

    id: int
    timestamp: str
    feature: str
    rating: str
    input_text: str
    response_text: str
    comment: str | None


@dataclass(frozen=True)
class AbIngestResult:
    """The new read position and counts after one poll of the A/B store."""

    collection: Collection
    votes: VoteCounts
    new_entries: int
    """Entries read for the first time (counted, tied, unattributed or dropped)."""
    restart_detected: bool


@dataclass(frozen=True)
class FeedbackIngestResult:
    """The new read position and the thumbs-down entries seen for the first time."""

    collection: Collection
    new_negatives: tuple[FeedbackEntry, ...]
    new_fingerprints: tuple[str, ...]
    """``feedback_fingerprint`` of each new negative, in the same order: keep them with the dataset."""
    new_entries: int
    restart_detected: bool


_E = TypeVar("_E", AbEntry, FeedbackEntry)


class EntryLog(Sequence[_E]):
    """A store's entries in the order listed, built on demand: ``ids`` are every entry's id, ``build`` makes the
    entries at the positions it is given (in that order) and may raise, e.g. when an entry it builds is not
    valid; what it built is kept. Reading the log as a plain sequence builds everything."""

    def __init__(self, ids: Sequence[int], build: Callable[[Sequence[int]], Sequence[_E]]) -> None:
        self.ids = ids
        self._build: Callable[[Sequence[int]], Sequence[_E]] = build
        self._built: dict[int, _E] = {}

    def take(self, positions: Sequence[int]) -> list[_E]:
        """The entries at ``positions`` (each built at most once)."""
        missing = [p for p in dict.fromkeys(positions) if p not in self._built]
        if missing:
            made = self._build(missing)
            if len(made) != len(missing):
                raise ValueError(f"built {len(made)} entries for {len(missing)} positions")
            self._built.update(zip(missing, made, strict=True))
        return [self._built[p] for p in positions]

    def __len__(self) -> int:
        return len(self.ids)

    @overload
    def __getitem__(self, index: int) -> _E: ...

    @overload
    def __getitem__(self, index: slice) -> list[_E]: ...

    def __getitem__(self, index: int | slice) -> _E | list[_E]:
        if isinstance(index, slice):
            return self.take(range(len(self.ids))[index])
        return self.take([range(len(self.ids))[index]])[0]

    def __iter__(self) -> Iterator[_E]:
        return iter(self.take(range(len(self.ids))))


def ab_entry_fingerprint(entry: AbEntry) -> str:
    """Identity of an A/B entry's content (the id is left out: it is reused after a restart)."""
    mapping = sorted(entry.prompt_mapping.items())
    return _hash_json(
        [entry.timestamp, entry.preference, mapping, entry.input_text, entry.response_a, entry.response_b]
    )


def feedback_fingerprint(entry: FeedbackEntry) -> str:
    """Identity of a feedback entry's content, stable across restarts (the id is left out)."""
    return _hash_json(
        [entry.timestamp, entry.feature, entry.rating, entry.input_text, entry.response_text, entry.comment]
    )


def reset_for_new_test(collection: Collection) -> Collection:
    """The read position for a new test: same cursors, an empty duplicate-cap record."""
    return collection.model_copy(update={"vote_fingerprints": ""})


def add_negatives(negatives: Negatives, count: int) -> Negatives:
    """Negatives after keeping ``count`` more distinct thumbs-down entries."""
    return negatives.model_copy(
        update={
            "total": negatives.total + count,
            "since_last_evaluation": negatives.since_last_evaluation + count,
        }
    )


def ingest_ab(
    collection: Collection,
    votes: VoteCounts,
    entries: Sequence[AbEntry],
    total: int,
    epoch_prompts: EpochPrompts,
    champion_hash: str,
    challenger_hash: str,
    duplicate_cap: int,
    *,
    now: datetime,
) -> AbIngestResult:
    """Count the A/B votes not read before.

    ``epoch_prompts`` are the prompt hashes of the process serving now; they are adopted when a new epoch
    starts (or no vote of the current one was read yet), otherwise those recorded for the epoch are kept.
    """
    read = _read_store(collection.ab_fingerprint, collection.ab_cursor, entries, total, ab_entry_fingerprint)
    fresh_epoch = read.restarted or not collection.ab_fingerprint.lstrip(_COUNTED)
    prompts = epoch_prompts if fresh_epoch else collection.epoch_prompts
    caps = decode_vote_fingerprints(collection.vote_fingerprints)
    counts = votes.model_dump()
    for entry in read.fresh:
        outcome, left_challenger = attribute(entry, prompts, champion_hash, challenger_hash)
        if outcome is None:
            counts["unattributed"] += 1
            continue
        key = _duplicate_key(entry)
        if caps.get(key, 0) >= duplicate_cap:
            counts["duplicates_dropped"] += 1
            continue
        caps[key] = caps.get(key, 0) + 1
        counts[{"challenger": "challenger_wins", "champion": "champion_wins", "tie": "ties"}[outcome]] += 1
        counts["left_challenger"] += int(left_challenger)
    update: dict[str, object] = {
        "ab_cursor": read.cursor,
        "ab_fingerprint": read.fingerprint,
        "epoch_prompts": prompts,
        "vote_fingerprints": encode_vote_fingerprints(caps),
    }
    if read.fresh or read.restarted:
        update["last_poll_time"] = now
    if read.counted:
        update["feedback_fingerprint"] = _mark_restart(collection.feedback_fingerprint)
    return AbIngestResult(
        collection=_next_epoch(collection, read.counted).model_copy(update=update),
        votes=VoteCounts.model_validate(counts),
        new_entries=len(read.fresh),
        restart_detected=read.counted,
    )


def ingest_feedback(
    collection: Collection,
    entries: Sequence[FeedbackEntry],
    total: int,
    known_fingerprints: Set[str],
    *,
    now: datetime,
    feature: str | None = None,
) -> FeedbackIngestResult:
    """The thumbs-down entries not kept before (by ``feedback_fingerprint``) and the new read position.

    With ``feature``, only that feature's feedback counts: thumbs-down on another feature of the same
    backend (another team's, or another use of the app) never reaches this experiment's ledger."""
    read = _read_store(
        collection.feedback_fingerprint, collection.feedback_cursor, entries, total, feedback_fingerprint
    )
    seen = set(known_fingerprints)
    negatives: list[FeedbackEntry] = []
    fingerprints: list[str] = []
    for entry in read.fresh:
        fingerprint = feedback_fingerprint(entry)
        if entry.rating != "thumbs_down" or fingerprint in seen:
            continue
        if feature is not None and entry.feature != feature:
            continue
        seen.add(fingerprint)
        negatives.append(entry)
        fingerprints.append(fingerprint)
    update: dict[str, object] = {
        "feedback_cursor": read.cursor,
        "feedback_fingerprint": read.fingerprint,
    }
    if read.fresh or read.restarted:
        update["last_poll_time"] = now
    if read.counted:
        update["ab_fingerprint"] = _mark_restart(collection.ab_fingerprint)
    return FeedbackIngestResult(
        collection=_next_epoch(collection, read.counted).model_copy(update=update),
        new_negatives=tuple(negatives),
        new_fingerprints=tuple(fingerprints),
        new_entries=len(read.fresh),
        restart_detected=read.counted,
    )


def attribute(
    entry: AbEntry, prompts: EpochPrompts, champion_hash: str, challenger_hash: str
) -> tuple[Outcome | None, bool]:
    """Which side a vote went to (None: not a vote between this test's prompts) and whether the
    challenger was shown on side a."""
    by_key = {"prompt": prompts.prompt, "prompt_b": prompts.prompt_b}
    by_hash = {champion_hash: "champion", challenger_hash: "challenger"}
    sides: dict[str, str] = {}
    for position in ("a", "b"):
        text = by_key.get(entry.prompt_mapping.get(position, ""))
        side = by_hash.get(text) if text is not None else None
        if side is None:
            return None, False
        sides[position] = side
    if sides["a"] == sides["b"]:
        return None, False
    left_challenger = sides["a"] == "challenger"
    if entry.preference == "tie":
        return "tie", left_challenger
    if entry.preference not in sides or entry.winning_prompt != entry.prompt_mapping[entry.preference]:
        return None, False
    return ("challenger" if sides[entry.preference] == "challenger" else "champion"), left_challenger


def encode_vote_fingerprints(counts: Mapping[bytes, int], limit: int = MAX_CAP_KEYS) -> str:
    """Duplicate-cap record as base64 of sorted (6-byte key, LEB128 count) records.

    Beyond ``limit`` keys, those with the lowest counts are left out (ties by key), so a very long test keeps
    a bounded status at the price of a forgotten single vote being countable again.
    """
    kept = counts if len(counts) <= limit else dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:limit])
    out = bytearray()
    for key in sorted(kept):
        out += key
        out += _varint(kept[key])
    return base64.b64encode(bytes(out)).decode("ascii")


def decode_vote_fingerprints(text: str) -> dict[bytes, int]:
    """Inverse of ``encode_vote_fingerprints``; an unreadable record reads as empty (the cap forgets)."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        return {}
    counts: dict[bytes, int] = {}
    pos = 0
    while pos < len(raw):
        key = raw[pos : pos + _KEY_BYTES]
        pos += _KEY_BYTES
        count, shift = 0, 0
        while pos < len(raw):
            byte = raw[pos]
            pos += 1
            count |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        else:
            return {}
        if len(key) < _KEY_BYTES:
            return {}
        counts[key] = count
    return counts


@dataclass(frozen=True)
class _Read(Generic[_E]):
    restarted: bool
    counted: bool
    """A restart not yet counted by the other store."""
    fresh: tuple[_E, ...]
    fingerprint: str
    cursor: int


def _read_store(
    stored_fingerprint: str, cursor: int, entries: Sequence[_E], total: int, fingerprint: Callable[[_E], str]
) -> _Read[_E]:
    already_counted = stored_fingerprint.startswith(_COUNTED)
    stored = stored_fingerprint.lstrip(_COUNTED)
    ids = entries.ids if isinstance(entries, EntryLog) else [entry.id for entry in entries]
    if not ids:
        restarted = cursor > 0 or bool(stored)
        return _Read(restarted, restarted and not already_counted, (), "", 0)
    if all(map(operator.lt, ids, itertools.islice(ids, 1, None))):  # ids ascending: how the backend lists them
        low_position, top = 0, ids[-1]

        def above(base: int) -> Sequence[int]:
            return range(bisect.bisect_right(ids, base), len(ids))

    else:
        at: dict[int, int] = {}  # id -> position of its first entry (a repeated id is read once)
        for position, entry_id in enumerate(ids):
            at.setdefault(entry_id, position)
        low_position, top = at[min(at)], max(at)

        def above(base: int) -> Sequence[int]:
            return [at[i] for i in sorted(i for i in at if i > base)]

    first = fingerprint(_take(entries, [low_position])[0])
    restarted = (bool(stored) and first != stored) or min(top, total) < cursor
    base = 0 if restarted else cursor
    fresh = tuple(_take(entries, above(base)))
    return _Read(restarted, restarted and not already_counted, fresh, first, max(base, top))


def _take(entries: Sequence[_E], positions: Sequence[int]) -> list[_E]:
    if isinstance(entries, EntryLog):
        return entries.take(positions)
    return [entries[p] for p in positions]


def _mark_restart(fingerprint: str) -> str:
    return _COUNTED + fingerprint if fingerprint and not fingerprint.startswith(_COUNTED) else fingerprint


def _next_epoch(collection: Collection, restarted: bool) -> Collection:
    if restarted:
        return collection.model_copy(
            update={"epoch": collection.epoch + 1, "restarts_detected": collection.restarts_detected + 1}
        )
    return collection.model_copy(update={"epoch": max(collection.epoch, 1)})


def _duplicate_key(entry: AbEntry) -> bytes:
    """sha256 of ``json.dumps([input_text, sorted([response_a, response_b])], ensure_ascii=False)``, written out
    (the same bytes, a third faster than ``json.dumps``: this runs once per new vote)."""
    low, high = sorted([entry.response_a, entry.response_b])
    text = _json_string(entry.input_text)
    payload = f"[{text}, [{_json_string(low)}, {_json_string(high)}]]".encode()
    return hashlib.sha256(payload).digest()[:_KEY_BYTES]


def _hash_json(value: object) -> str:
    return text_hash(json.dumps(value, ensure_ascii=False, separators=(",", ":")))


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)
