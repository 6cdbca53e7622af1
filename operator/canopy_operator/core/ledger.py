"""The negative-feedback ledger: every thumbs-down entry the operator has read, kept in a Secret it owns.

The backend forgets its feedback on every restart; the ledger does not. Entries are deduplicated by
``feedback_fingerprint`` (content, not id, so a re-read after a restart or a crash adds nothing). The
handler writes the ledger *before* the status read position moves past the entries it holds.

Size cap: the ledger's JSON is kept under :data:`MAX_LEDGER_BYTES` (a Secret holds at most 1 MiB, and the
dataset Secret built from it must fit too). Beyond it the **oldest** entries are dropped (counted in
``trimmed``); the fingerprints of the last :data:`MAX_FORGOTTEN` dropped entries are kept, so a re-read
of an entry just trimmed is still recognised. An entry larger than the whole cap is dropped at once.

Pure: no Kubernetes client, no clock.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

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
MAX_LEDGER_BYTES = 512 * 1024
"""Cap on the ledger's JSON (entries); the oldest entries are trimmed beyond it."""
MAX_FORGOTTEN = 4096
"""Fingerprints of trimmed entries kept for deduplication (about 80 KB)."""
_VERSION = 1


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

    def size(self) -> int:
        """Bytes this entry takes in the encoded ledger (with its separator)."""
        return len(_dumps(self.to_json()).encode("utf-8")) + 1


@dataclass(frozen=True)
class Ledger:
    """Kept entries, oldest first, and the counters that survive trimming."""

    entries: tuple[LedgerEntry, ...] = ()
    seen: int = 0
    """Distinct entries ever added (kept or trimmed)."""
    trimmed: int = 0
    """Entries dropped to stay under the cap."""
    forgotten: tuple[str, ...] = ()
    """Fingerprints of the most recently trimmed entries, oldest first (bounded)."""

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
) -> Ledger:
    """The ledger with the entries (and their ``feedback_fingerprint``s) not kept yet, trimmed to the cap."""
    if len(entries) != len(fingerprints):
        raise ValueError("entries and fingerprints must pair up")
    known = set(ledger.fingerprints())
    kept = list(ledger.entries)
    added = 0
    for entry, fingerprint in zip(entries, fingerprints, strict=True):
        if fingerprint in known or entry.rating != "thumbs_down":
            continue
        known.add(fingerprint)
        kept.append(LedgerEntry(fingerprint, entry.timestamp, entry.input_text, entry.comment))
        added += 1
    grown = replace(ledger, entries=tuple(kept), seen=ledger.seen + added)
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
    dropped = [entry.fingerprint for entry in ledger.entries[:drop]]
    return replace(
        ledger,
        entries=ledger.entries[drop:],
        trimmed=ledger.trimmed + drop,
        forgotten=(*ledger.forgotten, *dropped)[-MAX_FORGOTTEN:],
    )


def encode_ledger(ledger: Ledger) -> str:
    """The ledger as the Secret's ``ledger.json`` (one entry per line, diff-friendly)."""
    head = {"version": _VERSION, "seen": ledger.seen, "trimmed": ledger.trimmed, "forgotten": list(ledger.forgotten)}
    lines = [_dumps(head), *(_dumps(entry.to_json()) for entry in ledger.entries)]
    return "\n".join(lines) + "\n"


def decode_ledger(text: str) -> Ledger:
    """Inverse of :func:`encode_ledger`; ``ValueError`` on anything else (never guess: entries would be lost)."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise ValueError("ledger is empty")
    try:
        head = json.loads(lines[0])
        raw_entries = [json.loads(line) for line in lines[1:]]
    except ValueError as exc:
        raise ValueError(f"ledger is not JSON lines: {exc}") from exc
    if not isinstance(head, dict) or head.get("version") != _VERSION:
        raise ValueError(f"ledger header must be an object with version {_VERSION}")
    seen, trimmed, forgotten = head.get("seen"), head.get("trimmed"), head.get("forgotten")
    if not (isinstance(seen, int) and isinstance(trimmed, int) and isinstance(forgotten, list)):
        raise ValueError("ledger header needs counts seen, trimmed and a forgotten list")
    if not (_count(seen) and _count(trimmed)):
        raise ValueError("ledger counts must be integers >= 0")
    entries = tuple(_entry(raw, index) for index, raw in enumerate(raw_entries))
    return Ledger(entries=entries, seen=seen, trimmed=trimmed, forgotten=tuple(str(f) for f in forgotten))


def _count(value: object) -> bool:
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
    """The evaluation dataset of the kept entries, byte-for-byte the backend's ``/feedback/export``."""
    return render_export(ledger.prompts())


def ledger_secret_name(experiment_name: str) -> str:
    """``<experiment>-negatives`` (long names are cut and get a hash suffix, within 253 characters)."""
    name = f"{experiment_name}-negatives"
    if len(name) <= 253:
        return name
    return f"{experiment_label_value(experiment_name)}-negatives"


def render_ledger_secret(
    namespace: str, experiment_name: str, experiment_uid: str, ledger: Ledger, resource_version: str | None = None
) -> dict[str, Any]:
    """The ledger Secret, labelled and owned (controller) by the experiment."""
    metadata: dict[str, Any] = {
        "name": ledger_secret_name(experiment_name),
        "namespace": namespace,
        "labels": {
            LABEL_MANAGED_BY: MANAGED_BY,
            LABEL_COMPONENT: COMPONENT_LEDGER,
            LABEL_EXPERIMENT: experiment_label_value(experiment_name),
        },
        "ownerReferences": [owner_reference(experiment_name, experiment_uid)],
    }
    if resource_version:
        metadata["resourceVersion"] = resource_version
    data = base64.b64encode(encode_ledger(ledger).encode("utf-8")).decode("ascii")
    return {"apiVersion": "v1", "kind": "Secret", "metadata": metadata, "type": "Opaque", "data": {LEDGER_KEY: data}}


def _dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
