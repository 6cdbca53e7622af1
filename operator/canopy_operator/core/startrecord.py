"""The start record: a new experiment's original config, written in the same ConfigMap write as its first test.

An experiment's first config write would otherwise need a status write before it (the intent: the original
config must be known before the write replaces it, or a crash in between loses it). ConfigMap delivery can carry
it in the write itself, as an annotation of the ConfigMap, so the two land together or not at all and the start
costs one status write, not two (issue #20). The record names the experiment by uid; a pass that finds no
original in status (its first pass, or the next one after the operator died with the status not yet written) and
a record of its own experiment takes the original from it, not from keys its own write already changed. The next
config write the operator makes to that ConfigMap drops the record.

The annotation is the tenant's to edit, like the ConfigMap itself: a record is read within a size bound and
strictly, and one that names this experiment but cannot be read is refused with a reason (never guessed at).
What it can hold is what the tenant may write into the ConfigMap anyway.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from canopy_operator.api.base import GROUP
from canopy_operator.api.status import OriginalConfig

ANNOTATION = f"{GROUP}/start-record"
MAX_RECORD_CHARS = 64 * 1024
"""A record longer than this is not written (the intent goes to status first, as for every later write) and not
read. Records are ASCII (``ensure_ascii``), so characters are bytes."""
MAX_ANNOTATION_BYTES = 200 * 1024
"""A record is written only if the ConfigMap's annotations with it stay within this (the API server refuses
more than 256 KiB of them; ``kubectl apply`` keeps a copy of the whole values text in one)."""
VERSION = 1
ORIGINAL_KEYS = frozenset({"prompt", "promptB", "feedbackEnabled", "abTestingEnabled"})


class StartRecordInvalid(ValueError):
    """The ConfigMap carries a record of this experiment that cannot be read."""


def encode(uid: str, original: OriginalConfig) -> str | None:
    """The record of ``original`` for the experiment ``uid``; None when it would exceed ``MAX_RECORD_CHARS``."""
    body = {"v": VERSION, "experiment": uid, "original": original.model_dump(mode="json", by_alias=True)}
    text = json.dumps(body, separators=(",", ":"), sort_keys=True)
    return text if len(text) <= MAX_RECORD_CHARS else None


def decode(text: str | None, uid: str) -> OriginalConfig | None:
    """The original config ``text`` records for the experiment ``uid``; None when there is no record or it is
    another experiment's. Raises :class:`StartRecordInvalid` (naming what is wrong) for one that names no
    experiment readably, or names this one and is malformed."""
    if text is None:
        return None
    if len(text) > MAX_RECORD_CHARS:
        raise StartRecordInvalid(f"longer than {MAX_RECORD_CHARS} characters")
    try:
        body: Any = json.loads(text)
    except (ValueError, RecursionError):
        raise StartRecordInvalid("not JSON") from None
    if not isinstance(body, dict) or not isinstance(body.get("experiment"), str):
        raise StartRecordInvalid("not an object naming its experiment")
    if body["experiment"] != uid:
        return None  # another experiment's (one deleted with onDelete: Keep leaves its record behind)
    if body.get("v") != VERSION or set(body) != {"v", "experiment", "original"}:
        raise StartRecordInvalid(f"expected exactly v={VERSION}, experiment and original")
    original = body["original"]
    if not isinstance(original, dict) or not set(original) <= ORIGINAL_KEYS:
        raise StartRecordInvalid("original: expected at most " + ", ".join(sorted(ORIGINAL_KEYS)))
    try:
        return OriginalConfig.model_validate(original, strict=True)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise StartRecordInvalid(f"original.{where}: {first['msg']}") from None
