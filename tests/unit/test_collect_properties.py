"""Properties of vote collection over arbitrary sequences of votes, polls and restarts."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from hypothesis import given
from hypothesis import strategies as st

from canopy_operator.api.status import Collection, VoteCounts
from canopy_operator.core.collect import AbEntry, FeedbackEntry, attribute, ingest_feedback
from tests.support.collect import (
    CHALLENGER_HASH,
    CHAMPION_HASH,
    NOW,
    TEST_PROMPTS,
    FakeBackend,
    poll_ab,
    roundtrip,
)

sides = st.sampled_from(["challenger", "champion", "tie"])
vote_op = st.tuples(st.just("vote"), sides, st.booleans())
thumb_op = st.tuples(st.just("thumb"), st.sampled_from(["thumbs_down", "thumbs_up"]), st.just(False))
other_op = st.tuples(
    st.sampled_from(["poll_ab", "poll_feedback", "restart", "operator_restart"]), st.just(""), st.just(False)
)
scenarios = st.lists(st.one_of(vote_op, vote_op, thumb_op, other_op), max_size=60)
COUNTED = (
    "challenger_wins",
    "champion_wins",
    "ties",
    "unattributed",
    "duplicates_dropped",
    "left_challenger",
)


@dataclass
class Observer:
    """What the operator could possibly have seen: each epoch's store up to its longest poll."""

    ab_epochs: list[list[AbEntry]] = field(default_factory=lambda: [[]])
    ab_seen: list[int] = field(default_factory=lambda: [0])
    feedback_epochs: list[list[FeedbackEntry]] = field(default_factory=lambda: [[]])
    feedback_seen: list[int] = field(default_factory=lambda: [0])

    def expected_votes(self) -> Counter[str]:
        seen = [e for entries, n in zip(self.ab_epochs, self.ab_seen, strict=True) for e in entries[:n]]
        outcomes = [attribute(e, TEST_PROMPTS, CHAMPION_HASH, CHALLENGER_HASH) for e in seen]
        return Counter(str(outcome) for outcome, _ in outcomes) + Counter(
            "left" for _, left in outcomes if left
        )

    def expected_negatives(self) -> int:
        pairs = zip(self.feedback_epochs, self.feedback_seen, strict=True)
        return sum(e.rating == "thumbs_down" for entries, n in pairs for e in entries[:n])


def _as_counter(votes: VoteCounts) -> Counter[str]:
    return Counter(
        {
            "challenger": votes.challenger_wins,
            "champion": votes.champion_wins,
            "tie": votes.ties,
            "left": votes.left_challenger,
        }
    )


@given(scenarios)
def test_every_seen_vote_counted_once_when_backend_and_operator_restart(
    ops: list[tuple[str, str, bool]],
) -> None:
    backend, observer = FakeBackend(), Observer()
    collection, votes, known = Collection(), VoteCounts(), set[str]()
    for op, arg, flag in ops:
        if op == "vote":
            observer.ab_epochs[-1].append(backend.vote_for(arg, challenger_on_a=flag))
        elif op == "thumb":
            observer.feedback_epochs[-1].append(backend.thumbs(arg))
        elif op == "restart":
            backend.restart()
            observer.ab_epochs.append([])
            observer.ab_seen.append(0)
            observer.feedback_epochs.append([])
            observer.feedback_seen.append(0)
        elif op == "operator_restart":
            collection, votes = roundtrip(collection), roundtrip(votes)
        elif op == "poll_ab":
            result = poll_ab(backend, collection, votes)
            for name in COUNTED:
                assert getattr(result.votes, name) >= getattr(votes, name)
            collection, votes = result.collection, result.votes
            observer.ab_seen[-1] = len(backend.ab)
        else:
            fb = ingest_feedback(collection, list(backend.feedback), len(backend.feedback), known, now=NOW)
            known.update(fb.new_fingerprints)
            collection = fb.collection
            observer.feedback_seen[-1] = len(backend.feedback)
    assert _as_counter(votes) == +observer.expected_votes()
    assert (votes.unattributed, votes.duplicates_dropped) == (0, 0)
    assert len(known) == observer.expected_negatives()
    assert collection.restarts_detected <= len(observer.ab_epochs) - 1


pool_votes = st.lists(
    st.tuples(sides, st.booleans(), st.sampled_from(["doc 1", "doc 2"]), st.sampled_from(["x", "y", "z"])),
    max_size=40,
)


@given(pool_votes, st.lists(st.integers(min_value=0, max_value=40), max_size=6), st.integers(1, 3))
def test_totals_same_when_polled_at_any_split_points(
    stream: list[tuple[str, bool, str, str]], splits: list[int], cap: int
) -> None:
    backend = FakeBackend()
    for side, on_a, text, answer in stream:
        entry = backend.vote_for(side, challenger_on_a=on_a, input_text=text)
        backend.ab[-1] = AbEntry(**{**entry.__dict__, "response_a": answer, "response_b": "same"})
    everything = list(backend.ab)
    once = poll_ab(backend, Collection(), VoteCounts(), cap=cap)
    collection, votes = Collection(), VoteCounts()
    for split in [*sorted(splits), len(everything)]:
        backend.ab = everything[:split]
        result = poll_ab(backend, roundtrip(collection), roundtrip(votes), cap=cap)
        collection, votes = result.collection, result.votes
    assert votes == once.votes
    assert (collection.ab_cursor, collection.vote_fingerprints) == (
        once.collection.ab_cursor,
        once.collection.vote_fingerprints,
    )
    assert sum(getattr(votes, n) for n in COUNTED[:5]) == len(everything)


@given(pool_votes, st.integers(1, 3))
def test_replayed_poll_changes_nothing_when_same_entries_again(
    stream: list[tuple[str, bool, str, str]], cap: int
) -> None:
    backend = FakeBackend()
    for side, on_a, text, _ in stream:
        backend.vote_for(side, challenger_on_a=on_a, input_text=text)
    first = poll_ab(backend, Collection(), VoteCounts(), cap=cap)
    again = poll_ab(backend, first.collection, first.votes, cap=cap)
    assert (again.collection, again.votes, again.new_entries) == (first.collection, first.votes, 0)
