"""Votes and thumbs-down feedback are read from the backend exactly once and attributed to prompt texts."""

from __future__ import annotations

import hashlib

from canopy_operator.api.status import Collection, EpochPrompts, Negatives, VoteCounts
from canopy_operator.core.collect import (
    FeedbackEntry,
    add_negatives,
    decode_vote_fingerprints,
    encode_vote_fingerprints,
    ingest_feedback,
    reset_for_new_test,
    text_hash,
)
from tests.support.collect import (
    CHALLENGER_HASH,
    CHAMPION_HASH,
    NOW,
    TEST_PROMPTS,
    FakeBackend,
    poll_ab,
    roundtrip,
)


def _poll_feedback(backend: FakeBackend, collection: Collection, known: set[str]) -> tuple[Collection, int]:
    result = ingest_feedback(collection, list(backend.feedback), len(backend.feedback), known, now=NOW)
    known.update(result.new_fingerprints)
    return result.collection, len(result.new_negatives)


def test_text_hash_is_sha256_prefix_when_any_text() -> None:
    assert (
        text_hash("Provide a brief, concise summary:\n")
        == hashlib.sha256(b"Provide a brief, concise summary:\n").hexdigest()[:16]
    )
    assert len(text_hash("")) == 16


def test_votes_counted_for_the_side_users_chose_when_layout_shuffled() -> None:
    backend = FakeBackend()
    backend.vote_for("challenger", challenger_on_a=True)
    backend.vote_for("challenger", challenger_on_a=False)
    backend.vote_for("champion", challenger_on_a=True)
    backend.vote_for("tie", challenger_on_a=False)
    result = poll_ab(backend, Collection(), VoteCounts())
    assert result.votes == VoteCounts(challenger_wins=2, champion_wins=1, ties=1, left_challenger=2)
    assert result.new_entries == 4
    assert result.collection.ab_cursor == 4


def test_votes_follow_prompt_texts_when_keys_mean_other_texts() -> None:
    backend = FakeBackend()
    backend.vote("a", challenger_on_a=False)  # the user picked key "prompt"
    swapped = EpochPrompts(prompt=CHALLENGER_HASH, prompt_b=CHAMPION_HASH)
    result = poll_ab(backend, Collection(), VoteCounts(), prompts=swapped)
    assert (result.votes.challenger_wins, result.votes.champion_wins) == (1, 0)
    assert result.votes.left_challenger == 1


def test_votes_unattributed_when_epoch_served_other_prompts() -> None:
    backend = FakeBackend()
    backend.vote("a")
    backend.vote("tie")
    other = EpochPrompts(prompt=CHAMPION_HASH, prompt_b=text_hash("an older challenger"))
    result = poll_ab(backend, Collection(), VoteCounts(), prompts=other)
    assert result.votes == VoteCounts(unattributed=2)


def test_votes_unattributed_when_no_challenger_served() -> None:
    backend = FakeBackend()
    backend.vote("b")
    result = poll_ab(backend, Collection(), VoteCounts(), prompts=EpochPrompts(prompt=CHAMPION_HASH))
    assert result.votes == VoteCounts(unattributed=1)


def test_duplicate_votes_dropped_over_cap_when_answers_shown_swapped() -> None:
    backend = FakeBackend()
    for i in range(5):
        answers = ("short", "long") if i % 2 else ("long", "short")
        backend.vote("a", input_text="same article", answers=answers)
    backend.vote("a", input_text="another article", answers=("short", "long"))
    result = poll_ab(backend, Collection(), VoteCounts(), cap=3)
    assert (result.votes.challenger_wins, result.votes.duplicates_dropped) == (4, 2)


def test_duplicate_cap_survives_operator_restart_when_status_read_back() -> None:
    backend = FakeBackend()
    for _ in range(3):
        backend.vote("a", input_text="same", answers=("x", "y"))
    first = poll_ab(backend, Collection(), VoteCounts(), cap=3)
    backend.vote("b", input_text="same", answers=("y", "x"))
    second = poll_ab(backend, roundtrip(first.collection), roundtrip(first.votes), cap=3)
    assert second.votes.duplicates_dropped == 1
    assert second.votes.challenger_wins + second.votes.champion_wins == 3


def test_duplicate_record_stays_small_when_five_thousand_distinct_votes() -> None:
    backend = FakeBackend()
    for _ in range(5000):
        backend.vote("a")
    result = poll_ab(backend, Collection(), VoteCounts())
    assert result.votes.challenger_wins == 5000
    assert len(result.collection.vote_fingerprints) < 60_000
    assert len(decode_vote_fingerprints(result.collection.vote_fingerprints)) == 5000


def test_duplicate_record_keeps_busiest_keys_when_over_limit() -> None:
    counts = {bytes([i]) * 6: 1 for i in range(20)} | {b"zzzzzz": 3}
    kept = decode_vote_fingerprints(encode_vote_fingerprints(counts, limit=5))
    assert len(kept) == 5
    assert kept[b"zzzzzz"] == 3


def test_duplicate_record_reads_empty_when_garbled() -> None:
    assert decode_vote_fingerprints("not base64!") == {}
    assert decode_vote_fingerprints("AAAA") == {}


def test_replayed_poll_changes_nothing_when_no_new_votes() -> None:
    backend = FakeBackend()
    for side in ("challenger", "champion", "tie"):
        backend.vote_for(side)
    first = poll_ab(backend, Collection(), VoteCounts())
    again = poll_ab(backend, first.collection, first.votes)
    assert (again.collection, again.votes, again.new_entries) == (first.collection, first.votes, 0)


def test_inputs_untouched_when_ingesting() -> None:
    backend = FakeBackend()
    backend.vote("a")
    collection, votes = Collection(), VoteCounts()
    poll_ab(backend, collection, votes)
    assert (collection, votes) == (Collection(), VoteCounts())


def test_restart_detected_when_store_empty_after_reading() -> None:
    backend = FakeBackend()
    backend.vote("a")
    first = poll_ab(backend, Collection(), VoteCounts())
    backend.restart()
    second = poll_ab(backend, first.collection, first.votes)
    assert second.restart_detected
    assert (second.collection.ab_cursor, second.collection.restarts_detected) == (0, 1)
    backend.vote("a")
    third = poll_ab(backend, second.collection, second.votes)
    assert (third.restart_detected, third.votes.challenger_wins) == (False, 2)


def test_restart_detected_when_store_shorter_than_cursor() -> None:
    backend = FakeBackend()
    for _ in range(4):
        backend.vote("a")
    first = poll_ab(backend, Collection(), VoteCounts())
    backend.restart()
    backend.vote("b")
    second = poll_ab(backend, first.collection, first.votes)
    assert second.restart_detected
    assert (second.votes.challenger_wins, second.votes.champion_wins) == (4, 1)


def test_restart_detected_when_new_store_outgrew_cursor() -> None:
    backend = FakeBackend()
    backend.vote("a")
    backend.vote("a")
    first = poll_ab(backend, Collection(), VoteCounts())
    backend.restart()
    for _ in range(5):
        backend.vote("b")
    second = poll_ab(backend, first.collection, first.votes)
    assert second.restart_detected
    assert (second.votes.challenger_wins, second.votes.champion_wins) == (2, 5)
    assert second.collection.epoch == 2


def test_restart_counted_once_when_both_stores_see_it() -> None:
    backend = FakeBackend()
    backend.vote("a")
    backend.thumbs("thumbs_down")
    known: set[str] = set()
    collection = poll_ab(backend, Collection(), VoteCounts()).collection
    collection, _ = _poll_feedback(backend, collection, known)
    backend.restart()
    backend.vote("a")
    backend.thumbs("thumbs_down")
    collection, new = _poll_feedback(backend, collection, known)
    result = poll_ab(backend, collection, VoteCounts(challenger_wins=1))
    assert (new, result.votes.challenger_wins) == (1, 2)
    assert (result.collection.restarts_detected, result.collection.epoch) == (1, 2)


def test_votes_not_reread_when_other_store_reports_restart_late() -> None:
    backend = FakeBackend()
    backend.thumbs("thumbs_down")
    known: set[str] = set()
    collection, _ = _poll_feedback(backend, Collection(), known)
    backend.restart()
    backend.vote("a")
    first = poll_ab(backend, collection, VoteCounts())  # nothing was read from this store before
    collection, _ = _poll_feedback(backend, first.collection, known)
    second = poll_ab(backend, collection, first.votes)
    assert (first.votes.challenger_wins, second.votes.challenger_wins) == (1, 1)
    assert second.collection.restarts_detected == 1


def test_epoch_prompts_kept_within_epoch_when_caller_reports_new_config() -> None:
    backend = FakeBackend()
    backend.vote("a")
    first = poll_ab(backend, Collection(), VoteCounts())
    backend.vote("a")  # the running process still serves the test's prompts
    newer = EpochPrompts(prompt=CHAMPION_HASH, prompt_b=text_hash("next challenger"))
    second = poll_ab(backend, first.collection, first.votes, prompts=newer)
    assert second.votes.challenger_wins == 2
    assert second.collection.epoch_prompts == TEST_PROMPTS


def test_epoch_prompts_adopted_when_backend_restarted() -> None:
    backend = FakeBackend()
    backend.vote("a")
    first = poll_ab(backend, Collection(), VoteCounts())
    backend.restart()
    backend.vote("a")
    newer = EpochPrompts(prompt=CHAMPION_HASH, prompt_b=text_hash("next challenger"))
    second = poll_ab(backend, first.collection, first.votes, prompts=newer)
    assert (second.votes.challenger_wins, second.votes.unattributed) == (1, 1)
    assert second.collection.epoch_prompts == newer


def test_new_test_starts_with_empty_cap_record_and_same_cursor() -> None:
    backend = FakeBackend()
    backend.vote("a", input_text="same", answers=("x", "y"))
    first = poll_ab(backend, Collection(), VoteCounts(), cap=1)
    fresh = reset_for_new_test(first.collection)
    backend.vote("a", input_text="same", answers=("x", "y"))
    second = poll_ab(backend, fresh, VoteCounts(), cap=1)
    assert (fresh.ab_cursor, second.votes.challenger_wins, second.votes.duplicates_dropped) == (1, 1, 0)


def test_only_thumbs_down_kept_when_feedback_mixed() -> None:
    backend = FakeBackend()
    down = backend.thumbs("thumbs_down")
    backend.thumbs("thumbs_up")
    result = ingest_feedback(Collection(), list(backend.feedback), 2, set(), now=NOW)
    assert result.new_negatives == (down,)
    assert len(result.new_fingerprints) == 1
    assert (result.collection.feedback_cursor, result.new_entries) == (2, 2)


def test_negative_not_new_when_already_kept() -> None:
    entry = FeedbackEntry(1, "2026-11-22T10:00:00.000001+00:00", "summarize", "thumbs_down", "t", "r", None)
    first = ingest_feedback(Collection(), [entry], 1, set(), now=NOW)
    again = ingest_feedback(Collection(), [entry], 1, set(first.new_fingerprints), now=NOW)
    assert (len(first.new_negatives), again.new_negatives) == (1, ())


def test_negatives_after_restart_kept_when_ids_reused() -> None:
    backend = FakeBackend()
    backend.thumbs("thumbs_down")
    known: set[str] = set()
    collection, first = _poll_feedback(backend, Collection(), known)
    backend.restart()
    backend.thumbs("thumbs_down")
    collection, second = _poll_feedback(backend, collection, known)
    assert (first, second, len(known), collection.restarts_detected) == (1, 1, 2, 1)


def test_negatives_counted_for_next_evaluation_when_added() -> None:
    assert add_negatives(Negatives(total=4, since_last_evaluation=1), 3) == Negatives(total=7, since_last_evaluation=4)


def test_thumbs_down_on_another_feature_never_reaches_the_ledger() -> None:
    ours = FeedbackEntry(1, "2026-11-22T10:00:00.000001+00:00", "summarize", "thumbs_down", "ours", "r", None)
    theirs = FeedbackEntry(2, "2026-11-22T10:00:01.000001+00:00", "student-assistant", "thumbs_down", "x", "r", None)
    result = ingest_feedback(Collection(), [ours, theirs], 2, set(), now=NOW, feature="summarize")
    assert result.new_negatives == (ours,)
    assert result.collection.feedback_cursor == 2  # read past it all the same: it is never counted later either
