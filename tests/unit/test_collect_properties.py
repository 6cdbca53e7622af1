"""Properties of vote collection over arbitrary sequences of votes, polls and restarts."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from hypothesis import given, settings
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
ratings = st.sampled_from(["thumbs_down", "thumbs_up"])
polls = st.sampled_from([(), ("ab",), ("feedback",), ("ab", "feedback"), ("feedback", "ab")])
# One step: new votes and feedback arrive, the operator polls (in some order), then maybe restarts happen.
steps = st.tuples(
    st.lists(st.tuples(sides, st.booleans()), max_size=6),
    st.lists(ratings, max_size=3),
    polls,
    st.booleans(),
    st.booleans(),
)
scenarios = st.lists(steps, max_size=12)
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

    def new_epoch(self) -> None:
        self.ab_epochs.append([])
        self.ab_seen.append(0)
        self.feedback_epochs.append([])
        self.feedback_seen.append(0)

    def expected_votes(self) -> Counter[str]:
        seen = [e for entries, n in zip(self.ab_epochs, self.ab_seen, strict=True) for e in entries[:n]]
        outcomes = [attribute(e, TEST_PROMPTS, CHAMPION_HASH, CHALLENGER_HASH) for e in seen]
        return Counter(str(outcome) for outcome, _ in outcomes) + Counter("left" for _, left in outcomes if left)

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


@settings(max_examples=400, deadline=None)  # more examples: restarts between polls are rare
@given(scenarios)
def test_every_seen_vote_counted_once_when_backend_and_operator_restart(
    scenario: list[tuple[list[tuple[str, bool]], list[str], tuple[str, ...], bool, bool]],
) -> None:
    backend, observer = FakeBackend(), Observer()
    collection, votes, known = Collection(), VoteCounts(), set[str]()
    for new_votes, new_feedback, poll_order, backend_restart, operator_restart in scenario:
        observer.ab_epochs[-1] += [backend.vote_for(side, challenger_on_a=on_a) for side, on_a in new_votes]
        observer.feedback_epochs[-1] += [backend.thumbs(rating) for rating in new_feedback]
        for store in poll_order:
            if store == "ab":
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
        if backend_restart:
            backend.restart()
            observer.new_epoch()
        if operator_restart:
            collection, votes = roundtrip(collection), roundtrip(votes)
    assert _as_counter(votes) == +observer.expected_votes()
    assert (votes.unattributed, votes.duplicates_dropped) == (0, 0)
    assert len(known) == observer.expected_negatives()
    assert collection.restarts_detected <= len(observer.ab_epochs) - 1


pool_votes = st.lists(
    st.tuples(sides, st.booleans(), st.sampled_from(["doc 1", "doc 2"]), st.sampled_from(["x", "y", "z"])),
    max_size=40,
)


@settings(deadline=None)  # timing varies on the shared CI machine
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


@settings(deadline=None)  # timing varies on the shared CI machine
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
