"""The negative-feedback ledger: every thumbs-down entry the operator has read, kept in Secrets it owns.

The backend forgets its feedback on every restart; the ledger does not. Entries are deduplicated by
``feedback_fingerprint`` (content, not id, so a re-read after a restart or a crash adds nothing). The
handler writes the ledger *before* the status read position moves past the entries it holds.

Layout (version 2). One Secret cannot hold more than 1 MiB, so the ledger is a **manifest** and **shards**:

- the manifest is the Secret ``<experiment>-negatives`` (key ``ledger.json``): a header line with the counters,
  the forgotten fingerprints and the shards in order (sequence number, position of their first entry, entry
  count and the sha256 of their text), then the newest entries (the *tail*, at most :data:`SHARD_BYTES`);
- a shard is an immutable Secret ``<experiment>-negatives-<seq>`` holding at most :data:`SHARD_BYTES` of older
  entries. Sequence numbers come from the manifest (``next``) and are never reused.

A write (:func:`plan_write`) seals the tail into new shards once it outgrows :data:`SHARD_BYTES`, creates them,
*then* replaces the manifest with a resourceVersion precondition: the manifest is the commit point, so a reader
never follows it to a missing or half-written shard, and each shard's hash is checked when it is read. A crash
between the two leaves at most an unnamed shard at the manifest's ``next`` sequence number, which the next
write that seals one reuses (same content) or deletes and writes again, by name. Shards the manifest stops
naming (trimmed) are listed in it as ``retired`` and deleted by name after it is written, and again by the
next write if that did not happen. No Secret is ever listed.

Positions: every kept entry has a position in the history of kept entries; :attr:`Ledger.start` is the position
of ``entries[0]`` (it grows as the oldest are trimmed), which is how a write knows which shards still hold kept
entries. A ledger written by an older operator (version 1, one Secret, no shards) is read as a manifest whose
entries are all in the tail, and written as version 2 by the next write.

Size cap: the kept entries are held under :data:`MAX_LEDGER_BYTES` (:data:`MAX_SHARDS` shards' worth). Beyond
it the **oldest** entries are dropped (counted in ``trimmed``); the fingerprints of the last :data:`MAX_FORGOTTEN`
dropped entries are kept, so a re-read of an entry just trimmed is still recognised. An entry larger than
:data:`MAX_ENTRY_BYTES` is dropped at once (counted in ``trimmed``, remembered among the forgotten).

Pure: no Kubernetes client, no clock.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any, TypeGuard

from canopy_operator.core.collect import FeedbackEntry
from canopy_operator.core.evaluation.jobs import (
    LABEL_COMPONENT,
    LABEL_EXPERIMENT,
    LABEL_MANAGED_BY,
    MANAGED_BY,
    experiment_label_value,
    owner_reference,
)
from canopy_operator.core.export import render_export

LEDGER_KEY = "ledger.json"
COMPONENT_LEDGER = "feedback-ledger"
ANNOTATION_LEDGER = "canopy.genaiops.io/ledger"
"""On a shard: the manifest Secret that names it (for people; the operator follows the manifest only)."""
SHARD_BYTES = 512 * 1024
"""Entries' JSON per shard, and most of the manifest's tail (a Secret holds at most 1 MiB)."""
MAX_SHARDS = 64
MAX_LEDGER_BYTES = MAX_SHARDS * SHARD_BYTES
"""Cap on the kept entries' JSON (32 MiB); the oldest entries are trimmed beyond it."""
MAX_MANIFEST_SHARDS = 4 * MAX_SHARDS
"""The most shards (named or retired) a manifest is believed about: the cap needs at most about 90."""
MAX_ENTRY_BYTES = 128 * 1024
"""An entry larger than this is not kept (a shard must hold it, and its dataset part must fit a Secret)."""
MAX_FORGOTTEN = 4096
"""Fingerprints of trimmed entries kept for deduplication (about 80 KB)."""
_VERSION = 2
_LEGACY_VERSION = 1


@dataclass(frozen=True)
class LedgerEntry:
    """One kept thumbs-down entry (the answer text is not kept: the dataset does not use it)."""

    fingerprint: str
    timestamp: str
    input_text: str
    comment: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"fingerprint": self.fingerprint, "timestamp": self.timestamp, "input": self.input_text}
        if self.comment is not None:
            out["comment"] = self.comment
        return out

    def line(self) -> str:
        """The entry as one line of ``ledger.json`` (without the line break)."""
        return self._line

    def size(self) -> int:
        """Bytes this entry takes in the encoded ledger (with its separator)."""
        return self._size

    @cached_property
    def _line(self) -> str:
        return _dumps(self.to_json())

    @cached_property
    def _size(self) -> int:
        return len(self._line.encode("utf-8")) + 1


@dataclass(frozen=True)
class Ledger:
    """Kept entries, oldest first, and the counters that survive trimming."""

    entries: tuple[LedgerEntry, ...] = ()
    seen: int = 0
    """Distinct entries ever added (kept or trimmed)."""
    trimmed: int = 0
    """Entries dropped to stay under the cap (or too large to keep)."""
    forgotten: tuple[str, ...] = ()
    """Fingerprints of the most recently trimmed entries, oldest first (bounded)."""
    start: int = 0
    """Position of ``entries[0]`` among all entries ever kept (the oldest trimmed ones came before it)."""

    def fingerprints(self) -> frozenset[str]:
        """Every fingerprint a new entry must not repeat."""
        return frozenset(entry.fingerprint for entry in self.entries) | frozenset(self.forgotten)

    def prompts(self) -> list[str]:
        """The kept entries' input texts, oldest first: the dataset's test prompts."""
        return [entry.input_text for entry in self.entries]


def add_entries(
    ledger: Ledger,
    entries: Sequence[FeedbackEntry],
    fingerprints: Sequence[str],
    max_bytes: int = MAX_LEDGER_BYTES,
    max_entry_bytes: int = MAX_ENTRY_BYTES,
) -> Ledger:
    """The ledger with the entries (and their ``feedback_fingerprint``s) not kept yet, trimmed to the cap."""
    if len(entries) != len(fingerprints):
        raise ValueError("entries and fingerprints must pair up")
    known = set(ledger.fingerprints())
    kept = list(ledger.entries)
    added = 0
    too_large: list[str] = []
    entry_cap = min(max_bytes, max_entry_bytes)
    for entry, fingerprint in zip(entries, fingerprints, strict=True):
        if fingerprint in known or entry.rating != "thumbs_down":
            continue
        known.add(fingerprint)
        added += 1
        item = LedgerEntry(fingerprint, entry.timestamp, entry.input_text, entry.comment)
        if item.size() > entry_cap:
            too_large.append(fingerprint)
        else:
            kept.append(item)
    grown = replace(ledger, entries=tuple(kept), seen=ledger.seen + added)
    if too_large:
        forgotten = (*ledger.forgotten, *too_large)[-MAX_FORGOTTEN:]
        grown = replace(grown, trimmed=grown.trimmed + len(too_large), forgotten=forgotten)
    return _trim(grown, max_bytes)


def _trim(ledger: Ledger, max_bytes: int) -> Ledger:
    sizes = [entry.size() for entry in ledger.entries]
    total = sum(sizes)
    drop = 0
    while total > max_bytes and drop < len(sizes):
        total -= sizes[drop]
        drop += 1
    if drop == 0:
        return ledger
    dropped = [entry.fingerprint for entry in ledger.entries[max(0, drop - MAX_FORGOTTEN) : drop]]
    return replace(
        ledger,
        entries=ledger.entries[drop:],
        trimmed=ledger.trimmed + drop,
        start=ledger.start + drop,
        forgotten=(*ledger.forgotten, *dropped)[-MAX_FORGOTTEN:],
    )


# -- the layout: shards and the manifest --------------------------------------------------------------------


@dataclass(frozen=True)
class ShardRef:
    """One shard as the manifest names it."""

    seq: int
    """Its sequence number: the Secret is ``<experiment>-negatives-<seq>`` (:func:`shard_secret_name`)."""
    first: int
    """Position of its first entry."""
    count: int
    sha256: str
    """Of its ``ledger.json`` text."""

    @property
    def end(self) -> int:
        """Position after its last entry."""
        return self.first + self.count

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "first": self.first, "count": self.count, "sha256": self.sha256}


@dataclass(frozen=True)
class Layout:
    """Where the entries are: the shards in order (the tail, in the manifest, follows the last)."""

    shards: tuple[ShardRef, ...] = ()
    next_seq: int = 0
    """Sequence number of the next shard sealed."""
    retired: tuple[int, ...] = ()
    """Shards no longer named (trimmed) that may still exist: deleted by name."""


@dataclass(frozen=True)
class Manifest:
    """The manifest Secret's content, before its shards are read."""

    seen: int
    trimmed: int
    start: int
    forgotten: tuple[str, ...]
    layout: Layout
    tail: tuple[LedgerEntry, ...]
    version: int = _VERSION
    """1: an older operator's single-Secret ledger (rewritten as version 2 by the next write)."""


@dataclass(frozen=True)
class ShardDoc:
    """A shard to create: its reference in the manifest and its ``ledger.json`` text."""

    ref: ShardRef
    text: str = field(repr=False)


@dataclass(frozen=True)
class WritePlan:
    """One write of the ledger, in order: delete ``remove_first``, create ``create``, write ``manifest`` (the
    commit), delete ``remove_after``."""

    remove_first: tuple[int, ...]
    """Shards an earlier write retired (not named by the manifest now, so deleting them first is safe)."""
    create: tuple[ShardDoc, ...]
    manifest: str = field(repr=False)
    layout: Layout
    """The layout the manifest describes."""
    remove_after: tuple[int, ...]
    """Shards this write retires (the new manifest lists them, so a crash before the delete is caught up)."""


def plan_write(stored: Layout, before: Ledger, after: Ledger, shard_bytes: int = SHARD_BYTES) -> WritePlan:
    """How to replace the ledger ``before`` (read with the layout ``stored``) by ``after``.

    The shards still holding kept entries are kept as they are (they are immutable) when ``after`` holds the
    same entries at their positions, as :func:`add_entries` leaves them; shards wholly trimmed are retired.
    Once the entries after the last shard take more than ``shard_bytes``, full shards are sealed from the
    oldest of them, numbered from ``stored.next_seq``; the rest stays in the manifest. A ledger that does not
    extend ``before`` is written whole into new shards (correct, only larger)."""
    kept = _kept_shards(stored, before, after)
    retired = tuple(ref.seq for ref in stored.shards if ref not in kept)
    tail_first = kept[-1].end if kept else after.start
    tail = after.entries[tail_first - after.start :]
    sizes = [entry.size() for entry in tail]
    remaining = sum(sizes)
    sealed: list[ShardDoc] = []
    seq, position, index = stored.next_seq, tail_first, 0
    while remaining > shard_bytes:
        end, size = index, 0
        while end < len(tail) and (end == index or size + sizes[end] <= shard_bytes):
            size += sizes[end]
            end += 1
        text = encode_shard(seq, position, tail[index:end])
        sealed.append(ShardDoc(ShardRef(seq, position, end - index, _sha256(text)), text))
        seq, position, remaining, index = seq + 1, position + end - index, remaining - size, end
    layout = Layout(shards=(*kept, *(doc.ref for doc in sealed)), next_seq=seq, retired=retired)
    return WritePlan(
        remove_first=stored.retired,
        create=tuple(sealed),
        manifest=encode_manifest(after, layout, tail[index:]),
        layout=layout,
        remove_after=retired,
    )


def _kept_shards(stored: Layout, before: Ledger, after: Ledger) -> tuple[ShardRef, ...]:
    if after.start < before.start:
        return ()
    kept: list[ShardRef] = []
    for ref in stored.shards:
        if ref.end <= after.start:
            continue  # every entry of it was trimmed
        low = max(ref.first, after.start)
        now = after.entries[low - after.start : ref.end - after.start]
        then = before.entries[low - before.start : ref.end - before.start]
        if len(now) != ref.end - low or now != then:
            return ()
        kept.append(ref)
    return tuple(kept)


def encode_shard(seq: int, first: int, entries: Sequence[LedgerEntry]) -> str:
    """A shard's ``ledger.json``: a header line (its number and first position), then one entry per line."""
    head = _dumps({"version": _VERSION, "shard": seq, "first": first})
    return "\n".join([head, *(entry.line() for entry in entries)]) + "\n"


def encode_manifest(ledger: Ledger, layout: Layout, tail: Sequence[LedgerEntry]) -> str:
    """The manifest's ``ledger.json``: the header (counters, forgotten fingerprints, shards), then the tail."""
    head = {
        "version": _VERSION,
        "seen": ledger.seen,
        "trimmed": ledger.trimmed,
        "start": ledger.start,
        "forgotten": list(ledger.forgotten),
        "next": layout.next_seq,
        "shards": [ref.to_json() for ref in layout.shards],
        "retired": list(layout.retired),
    }
    return "\n".join([_dumps(head), *(entry.line() for entry in tail)]) + "\n"


def encode_ledger(ledger: Ledger) -> str:
    """The whole ledger as one manifest without shards (what a ledger under :data:`SHARD_BYTES` is)."""
    return encode_manifest(ledger, Layout(), ledger.entries)


def decode_manifest(text: str) -> Manifest:
    """A manifest (version 2) or an older operator's single-Secret ledger (version 1); ``ValueError`` on anything
    else (never guess: entries would be lost)."""
    head, entries = _lines(text, "ledger")
    version = head.get("version")
    if version not in (_VERSION, _LEGACY_VERSION):
        raise ValueError(f"ledger header must be an object with version {_VERSION} (or {_LEGACY_VERSION})")
    seen, trimmed, forgotten = head.get("seen"), head.get("trimmed"), head.get("forgotten")
    if not (isinstance(seen, int) and isinstance(trimmed, int) and isinstance(forgotten, list)):
        raise ValueError("ledger header needs counts seen, trimmed and a forgotten list")
    if not (_count(seen) and _count(trimmed)):
        raise ValueError("ledger counts must be integers >= 0")
    forgotten_ = tuple(str(f) for f in forgotten)
    if version == _LEGACY_VERSION:
        return Manifest(seen, trimmed, 0, forgotten_, Layout(), entries, version=_LEGACY_VERSION)
    start, next_seq, shards, retired = (head.get(k) for k in ("start", "next", "shards", "retired"))
    if not (_count(start) and _count(next_seq) and isinstance(shards, list) and isinstance(retired, list)):
        raise ValueError("ledger header needs a start, a next shard number, a shards list and a retired list")
    if len(shards) > MAX_MANIFEST_SHARDS or len(retired) > MAX_MANIFEST_SHARDS:
        raise ValueError(f"ledger names more than {MAX_MANIFEST_SHARDS} shards")
    refs = tuple(_shard_ref(raw, index) for index, raw in enumerate(shards))
    if not all(_count(seq) for seq in retired):
        raise ValueError("ledger retired shards must be numbers")
    layout = Layout(shards=refs, next_seq=next_seq, retired=tuple(int(s) for s in retired))
    _check_layout(layout, start)
    return Manifest(seen, trimmed, start, forgotten_, layout, entries)


def _check_layout(layout: Layout, start: int) -> None:
    seqs = [ref.seq for ref in layout.shards]
    if len(set(seqs)) != len(seqs) or any(seq >= layout.next_seq for seq in (*seqs, *layout.retired)):
        raise ValueError("ledger shard numbers must be distinct and below next")
    if set(seqs) & set(layout.retired):
        raise ValueError("ledger shard numbers must not be both named and retired")
    for before, after in zip(layout.shards, layout.shards[1:], strict=False):
        if after.first != before.end:
            raise ValueError("ledger shards must follow each other without gaps")
    if layout.shards and not layout.shards[0].first <= start < layout.shards[0].end:
        raise ValueError("ledger start must fall inside its first shard")


def _shard_ref(raw: object, index: int) -> ShardRef:
    if not isinstance(raw, dict):
        raise ValueError(f"ledger shards[{index}] is not an object")
    seq, first, count, sha = (raw.get(k) for k in ("seq", "first", "count", "sha256"))
    if not (_count(seq) and _count(first) and _count(count) and isinstance(sha, str)):
        raise ValueError(f"ledger shards[{index}] needs numbers seq, first, count and a sha256")
    if count == 0 or len(sha) != 64:
        raise ValueError(f"ledger shards[{index}] must hold entries and a 64-digit sha256")
    return ShardRef(seq, first, count, sha)


def decode_shard(text: str, ref: ShardRef) -> tuple[LedgerEntry, ...]:
    """A shard's entries, checked against the manifest's reference (hash first: nothing else is trusted)."""
    if _sha256(text) != ref.sha256:
        raise ValueError(f"ledger shard {ref.seq} does not match the manifest's sha256")
    head, entries = _lines(text, f"ledger shard {ref.seq}")
    if (head.get("version"), head.get("shard"), head.get("first")) != (_VERSION, ref.seq, ref.first):
        raise ValueError(f"ledger shard {ref.seq} header does not match the manifest")
    if len(entries) != ref.count:
        raise ValueError(f"ledger shard {ref.seq} holds {len(entries)} entries, the manifest says {ref.count}")
    return entries


def assemble(manifest: Manifest, shards: Mapping[int, Sequence[LedgerEntry]]) -> Ledger:
    """The ledger of a manifest and its shards' entries (by sequence number, from :func:`decode_shard`)."""
    entries: list[LedgerEntry] = []
    for ref in manifest.layout.shards:
        if ref.seq not in shards:
            raise ValueError(f"ledger shard {ref.seq} is missing")
        entries.extend(shards[ref.seq])
    entries.extend(manifest.tail)
    skip = manifest.start - manifest.layout.shards[0].first if manifest.layout.shards else 0
    return Ledger(
        entries=tuple(entries[skip:]),
        seen=manifest.seen,
        trimmed=manifest.trimmed,
        forgotten=manifest.forgotten,
        start=manifest.start,
    )


def decode_ledger(text: str, shards: Mapping[int, str] | None = None) -> Ledger:
    """The ledger of a manifest's text and its shards' texts (by sequence number); ``ValueError`` on anything
    that is not exactly that (a missing shard, a hash that does not match)."""
    manifest = decode_manifest(text)
    texts = shards or {}
    read: dict[int, tuple[LedgerEntry, ...]] = {}
    for ref in manifest.layout.shards:
        if ref.seq not in texts:
            raise ValueError(f"ledger shard {ref.seq} is missing")
        read[ref.seq] = decode_shard(texts[ref.seq], ref)
    return assemble(manifest, read)


def _lines(text: str, what: str) -> tuple[dict[str, Any], tuple[LedgerEntry, ...]]:
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"{what} is empty")
    try:
        head = json.loads(lines[0])
        raw_entries = [json.loads(line) for line in lines[1:]]
    except ValueError as exc:
        raise ValueError(f"{what} is not JSON lines: {exc}") from exc
    if not isinstance(head, dict):
        raise ValueError(f"{what} header must be an object with version {_VERSION}")
    return head, tuple(_entry(raw, index) for index, raw in enumerate(raw_entries))


def _count(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _entry(raw: object, index: int) -> LedgerEntry:
    if not isinstance(raw, dict):
        raise ValueError(f"ledger entry {index} is not an object")
    fingerprint, timestamp, text, comment = (raw.get(k) for k in ("fingerprint", "timestamp", "input", "comment"))
    if not (isinstance(fingerprint, str) and isinstance(timestamp, str) and isinstance(text, str)):
        raise ValueError(f"ledger entry {index} needs string fingerprint, timestamp and input")
    if comment is not None and not isinstance(comment, str):
        raise ValueError(f"ledger entry {index} has a non-string comment")
    return LedgerEntry(fingerprint, timestamp, text, comment)


def dataset_yaml(ledger: Ledger) -> str:
    """The evaluation dataset of the kept entries as one document, byte-for-byte the backend's
    ``/feedback/export`` (the dataset Secrets hold it in parts: ``core.evaluation.jobs.split_dataset``)."""
    return render_export(ledger.prompts())


# -- the Secrets ----------------------------------------------------------------------------------------------


def ledger_secret_name(experiment_name: str) -> str:
    """``<experiment>-negatives`` (long names are cut and get a hash suffix, within 253 characters)."""
    name = f"{experiment_name}-negatives"
    if len(name) <= 253:
        return name
    return f"{experiment_label_value(experiment_name)}-negatives"


def shard_secret_name(experiment_name: str, seq: int) -> str:
    """``<experiment>-negatives-<seq>`` (long names as in :func:`ledger_secret_name`), within 253 characters."""
    name = f"{experiment_name}-negatives-{seq}"
    if len(name) <= 253:
        return name
    return f"{experiment_label_value(experiment_name)}-negatives-{seq}"


def _metadata(namespace: str, experiment_name: str, experiment_uid: str, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": namespace,
        "labels": {
            LABEL_MANAGED_BY: MANAGED_BY,
            LABEL_COMPONENT: COMPONENT_LEDGER,
            LABEL_EXPERIMENT: experiment_label_value(experiment_name),
        },
        "ownerReferences": [owner_reference(experiment_name, experiment_uid)],
    }


def _data(text: str) -> dict[str, str]:
    return {LEDGER_KEY: base64.b64encode(text.encode("utf-8")).decode("ascii")}


def render_manifest_secret(
    namespace: str, experiment_name: str, experiment_uid: str, text: str, resource_version: str | None = None
) -> dict[str, Any]:
    """The manifest Secret holding ``text`` (:attr:`WritePlan.manifest`), labelled and owned (controller) by the
    experiment; with ``resource_version``, a write that fails if anybody wrote it since."""
    metadata = _metadata(namespace, experiment_name, experiment_uid, ledger_secret_name(experiment_name))
    if resource_version:
        metadata["resourceVersion"] = resource_version
    return {"apiVersion": "v1", "kind": "Secret", "metadata": metadata, "type": "Opaque", "data": _data(text)}


def render_ledger_secret(
    namespace: str, experiment_name: str, experiment_uid: str, ledger: Ledger, resource_version: str | None = None
) -> dict[str, Any]:
    """The ledger as one manifest Secret without shards (:func:`encode_ledger`)."""
    return render_manifest_secret(namespace, experiment_name, experiment_uid, encode_ledger(ledger), resource_version)


def render_shard_secret(namespace: str, experiment_name: str, experiment_uid: str, doc: ShardDoc) -> dict[str, Any]:
    """An immutable shard Secret, labelled like the ledger and owned by the experiment."""
    metadata = _metadata(namespace, experiment_name, experiment_uid, shard_secret_name(experiment_name, doc.ref.seq))
    metadata["annotations"] = {ANNOTATION_LEDGER: ledger_secret_name(experiment_name)}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata,
        "type": "Opaque",
        "immutable": True,
        "data": _data(doc.text),
    }


def is_ledger_shard(labels: Mapping[str, str], experiment_name: str) -> bool:
    """Whether a Secret's labels are a ledger shard's of this experiment (one in the way is never deleted)."""
    return (
        labels.get(LABEL_MANAGED_BY) == MANAGED_BY
        and labels.get(LABEL_COMPONENT) == COMPONENT_LEDGER
        and labels.get(LABEL_EXPERIMENT) == experiment_label_value(experiment_name)
    )


def text_sha256(text: str) -> str:
    """The sha256 a :class:`ShardRef` records for a shard's text."""
    return _sha256(text)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
