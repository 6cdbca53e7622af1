"""The negative-feedback ledger: dedupe by fingerprint, the size cap, the Secret and the dataset it makes.

The sharded layout (shards, manifest, crashes between writes) is tested in ``test_ledger_shards.py``."""

from __future__ import annotations

import base64
import json

import pytest

from canopy_operator.core.collect import FeedbackEntry, feedback_fingerprint
from canopy_operator.core.export import parse_export, render_export
from canopy_operator.core.ledger import (
    LEDGER_KEY,
    MAX_FORGOTTEN,
    Ledger,
    add_entries,
    dataset_yaml,
    decode_ledger,
    decode_manifest,
    encode_ledger,
    ledger_secret_name,
    render_ledger_secret,
)

UID = "1b6c4f4e-0000-4000-8000-000000000001"


def _entry(i: int, text: str | None = None, rating: str = "thumbs_down") -> FeedbackEntry:
    return FeedbackEntry(
        id=i,
        timestamp=f"2026-11-22T10:00:00.{i:06d}+00:00",
        feature="summarize",
        rating=rating,
        input_text=text if text is not None else f"article {i}",
        response_text=f"summary {i}",
        comment="too long" if i % 2 else None,
    )


def _add(ledger: Ledger, entries: list[FeedbackEntry], max_bytes: int = 512 * 1024) -> Ledger:
    return add_entries(ledger, entries, [feedback_fingerprint(e) for e in entries], max_bytes)


def test_entries_are_kept_once_by_content_whatever_their_id() -> None:
    first = _add(Ledger(), [_entry(1), _entry(2)])
    again = _add(first, [_entry(1), _entry(2), _entry(3)])
    assert again.prompts() == ["article 1", "article 2", "article 3"]
    assert again.seen == 3


def test_thumbs_up_entries_are_not_kept() -> None:
    assert _add(Ledger(), [_entry(1, rating="thumbs_up")]).entries == ()


def test_over_the_cap_the_oldest_entries_are_trimmed_and_still_recognised() -> None:
    entries = [_entry(i, "x" * 1000) for i in range(1, 11)]
    ledger = _add(Ledger(), entries, max_bytes=5000)
    assert len(ledger.entries) == 4
    assert ledger.trimmed == 6
    assert ledger.start == 6  # the position of the oldest kept entry: which shards still hold kept entries
    assert ledger.seen == 10
    assert ledger.prompts() == ["x" * 1000] * 4
    assert len(encode_ledger(ledger).encode()) < 5000 + 2000  # entries under the cap, plus the header
    assert _add(ledger, entries[:3], max_bytes=5000) == ledger  # trimmed entries read again add nothing


def test_forgotten_fingerprints_are_bounded() -> None:
    ledger = _add(Ledger(), [_entry(i, "y" * 100) for i in range(1, MAX_FORGOTTEN + 50)], max_bytes=200)
    assert len(ledger.forgotten) == MAX_FORGOTTEN


def test_an_entry_larger_than_the_whole_cap_is_dropped() -> None:
    ledger = _add(Ledger(), [_entry(1, "z" * 10_000)], max_bytes=1000)
    assert ledger.entries == ()
    assert (ledger.seen, ledger.trimmed) == (1, 1)


def test_an_entry_too_large_to_keep_does_not_push_older_entries_out() -> None:
    ledger = _add(Ledger(), [_entry(1), _entry(2, "z" * 10_000), _entry(3)], max_bytes=5000)
    assert ledger.prompts() == ["article 1", "article 3"]
    assert (ledger.seen, ledger.trimmed, ledger.start) == (3, 1, 0)
    assert _add(ledger, [_entry(2, "z" * 10_000)], max_bytes=5000) == ledger  # still recognised


def test_encoding_round_trips_unicode_and_comments() -> None:
    ledger = _add(Ledger(), [_entry(1, "Ünïcode\nline two"), _entry(2, 'quotes " and \\')])
    assert decode_ledger(encode_ledger(ledger)) == ledger


def test_encoding_round_trips_the_counters_and_the_position_after_trimming() -> None:
    ledger = _add(Ledger(), [_entry(i, "x" * 1000) for i in range(1, 11)], max_bytes=5000)
    assert decode_ledger(encode_ledger(ledger)) == ledger
    head = json.loads(encode_ledger(ledger).splitlines()[0])
    assert head == {
        "version": 2,
        "seen": 10,
        "trimmed": 6,
        "start": 6,
        "forgotten": list(ledger.forgotten),
        "next": 0,
        "shards": [],
        "retired": [],
    }


def test_a_ledger_written_by_an_older_operator_still_reads() -> None:
    """Version 1: one Secret, a header without shards; read as is, written as version 2 by the next write."""
    old = (
        '{"version":1,"seen":3,"trimmed":1,"forgotten":["f0"]}\n'
        '{"fingerprint":"f1","timestamp":"t1","input":"rivers","comment":"too long"}\n'
        '{"fingerprint":"f2","timestamp":"t2","input":"glaciers"}\n'
    )
    ledger = decode_ledger(old)
    assert ledger.prompts() == ["rivers", "glaciers"]
    assert (ledger.seen, ledger.trimmed, ledger.forgotten, ledger.start) == (3, 1, ("f0",), 0)
    assert ledger.entries[0].comment == "too long"
    assert decode_manifest(old).version == 1
    assert json.loads(encode_ledger(ledger).splitlines()[0])["version"] == 2


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not json",
        '{"version": 2, "seen": 0, "trimmed": 0, "forgotten": []}\n',  # a manifest without its shards list
        '{"version": 3, "seen": 0, "trimmed": 0, "forgotten": []}\n',
        '{"version": 1}\n',
        '{"version":2,"seen":0,"trimmed":0,"start":0,"forgotten":[],"next":0,"shards":[],"retired":[]}\n[]\n',
        # a manifest naming a shard that is not there
        '{"version":2,"seen":1,"trimmed":0,"start":0,"forgotten":[],"next":1,'
        '"shards":[{"seq":0,"first":0,"count":1,"sha256":"' + "0" * 64 + '"}],"retired":[]}\n',
    ],
)
def test_unreadable_ledgers_are_refused_rather_than_guessed(text: str) -> None:
    with pytest.raises(ValueError, match="ledger"):
        decode_ledger(text)


def test_dataset_is_the_backend_export_of_the_kept_entries() -> None:
    ledger = _add(Ledger(), [_entry(1, "rivers"), _entry(2, "glaciers")])
    assert dataset_yaml(ledger) == render_export(["rivers", "glaciers"])
    assert parse_export(dataset_yaml(ledger)) == ["rivers", "glaciers"]


def test_ledger_secret_is_labelled_owned_and_holds_the_ledger() -> None:
    ledger = _add(Ledger(), [_entry(1)])
    secret = render_ledger_secret("user1-test", "summary-tone", UID, ledger, resource_version="42")
    meta = secret["metadata"]
    assert meta["name"] == "summary-tone-negatives"
    assert meta["resourceVersion"] == "42"
    assert meta["labels"]["app.kubernetes.io/component"] == "feedback-ledger"
    assert meta["ownerReferences"][0]["uid"] == UID
    assert meta["ownerReferences"][0]["controller"] is True
    assert meta["ownerReferences"][0]["blockOwnerDeletion"] is True
    assert decode_ledger(base64.b64decode(secret["data"][LEDGER_KEY]).decode()) == ledger


def test_long_experiment_names_give_a_valid_secret_name() -> None:
    name = ledger_secret_name("a" * 250)
    assert len(name) <= 253
    assert name.endswith("-negatives")
