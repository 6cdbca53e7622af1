"""Counting votes kept as MLflow assessments and Phoenix annotations (the pure half of those vote sources)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from canopy_operator.core.readings import VoteTally
from canopy_operator.core.tallies import (
    Arm,
    MlflowAssessment,
    MlflowTrace,
    SpanAnnotation,
    arm_of,
    count_mlflow_votes,
    count_phoenix_votes,
    is_negative,
    thumbs_down,
)

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def preference(
    value: bool, arm: str, *, source: str = "canopy_user", kind: str = "HUMAN", at: int = 0
) -> MlflowAssessment:
    """What the Generation 2 backend logs for one side of an A/B vote."""
    text = "User preferred this response" if value else "User preferred the alternative response"
    return MlflowAssessment(
        "ab_preference", value, f"{text} (mapped to {arm})", kind, source, created_at=T0 + timedelta(seconds=at)
    )


def vote(n: int, winner: str) -> list[MlflowTrace]:
    """One A/B vote: the winner's trace gets True, the loser's False (both name the arm of their own answer)."""
    loser = "champion" if winner == "challenger" else "challenger"
    return [
        MlflowTrace(f"tr-{n}-a", 1, [preference(True, winner)]),
        MlflowTrace(f"tr-{n}-b", 1, [preference(False, loser)]),
    ]


def test_rationale_names_the_arm() -> None:
    assert arm_of("User preferred this response (mapped to challenger)") == "challenger"
    assert arm_of("User preferred the alternative response (mapped to champion)") == "champion"
    assert arm_of("User preferred this response (mapped to unknown)") is None
    assert arm_of("(mapped to challenger) and then some") is None
    assert arm_of(None) is None


def test_each_vote_counts_once_for_its_arm() -> None:
    traces = [t for n in range(25) for t in vote(n, "challenger")] + [
        t for n in range(5) for t in vote(100 + n, "champion")
    ]
    count = count_mlflow_votes(traces)
    assert count.tally == VoteTally(challenger_wins=25, champion_wins=5)
    assert (count.unmapped, count.not_human) == (0, 0)


def test_only_human_valid_votes_with_a_known_arm_count_and_the_latest_wins() -> None:
    traces = [
        MlflowTrace("judge", 1, [preference(True, "challenger", source="llm-judge", kind="LLM_JUDGE")]),
        MlflowTrace("script", 1, [preference(True, "challenger", kind="CODE")]),
        MlflowTrace("unknown", 1, [preference(True, "unknown")]),
        MlflowTrace(
            "overridden",
            1,
            [
                MlflowAssessment(
                    "ab_preference",
                    True,
                    "User preferred this response (mapped to champion)",
                    "HUMAN",
                    "canopy_user",
                    valid=False,
                )
            ],
        ),
        MlflowTrace("changed-mind", 1, [preference(True, "champion", at=0), preference(False, "champion", at=5)]),
        MlflowTrace(
            "string", 1, [MlflowAssessment("ab_preference", "true", "(mapped to challenger)", "HUMAN", "canopy_user")]
        ),
    ]
    count = count_mlflow_votes(traces)
    assert count.tally == VoteTally(challenger_wins=1, champion_wins=0)
    assert count.unmapped == 1
    assert count.not_human == 2


def test_the_arm_can_come_from_a_trace_tag() -> None:
    traces = [
        MlflowTrace(
            "a",
            1,
            [MlflowAssessment("ab_preference", True, "no arm here", "HUMAN", "canopy_user")],
            {"arm": "challenger"},
        ),
        MlflowTrace(
            "b", 1, [MlflowAssessment("ab_preference", True, None, "HUMAN", "canopy_user")], {"arm": "Champion"}
        ),
        MlflowTrace("c", 1, [MlflowAssessment("ab_preference", True, None, "HUMAN", "canopy_user")], {}),
    ]
    count = count_mlflow_votes(traces, arm_from="Tag", arm_tag="arm")
    assert count.tally == VoteTally(challenger_wins=1, champion_wins=1)
    assert count.unmapped == 1


def test_thumbs_down_is_the_latest_human_user_satisfaction_false() -> None:
    def sat(value: bool, at: int, source: str = "canopy_user") -> MlflowAssessment:
        return MlflowAssessment(
            "user_satisfaction", value, "too vague", "HUMAN", source, created_at=T0 + timedelta(seconds=at)
        )

    assert thumbs_down(MlflowTrace("t", 1, [sat(False, 0)])) is not None
    assert thumbs_down(MlflowTrace("t", 1, [sat(False, 0), sat(True, 5)])) is None
    assert thumbs_down(MlflowTrace("t", 1, [sat(False, 0, source="judge")])) is None
    assert thumbs_down(MlflowTrace("t", 1, [preference(False, "champion")])) is None


def ann(
    span: str,
    arm: str | None,
    *,
    score: float | None = 1,
    ident: str = "",
    at: int = 0,
    kind: str = "HUMAN",
    label: str | None = None,
) -> SpanAnnotation:
    return SpanAnnotation(span, "ab_preference", ident, label, score, None, arm, kind, T0 + timedelta(seconds=at))


def test_phoenix_counts_the_latest_vote_per_identifier_on_the_selected_spans() -> None:
    annotations = [
        ann("llm-1", "challenger"),
        ann("llm-2", "challenger", ident="u7", at=0),
        ann("llm-2", "champion", ident="u7", at=9),  # re-posted with the same identifier: replaces the vote
        ann("llm-3", "champion", score=0),  # not preferred
        ann("parent-1", "challenger"),  # on a span that does not count here
        ann("llm-4", "challenger", kind="LLM"),
        ann("llm-5", None),
        ann("llm-6", "challenger", score=None, label="preferred"),
    ]
    count = count_phoenix_votes(annotations, {f"llm-{i}" for i in range(1, 7)}, name="ab_preference")
    assert count.tally == VoteTally(challenger_wins=2, champion_wins=1)
    assert (count.unmapped, count.not_human) == (1, 1)
    parents = count_phoenix_votes(annotations, {"parent-1"}, name="ab_preference")
    assert parents.tally == VoteTally(challenger_wins=1, champion_wins=0)


def test_phoenix_negative_feedback() -> None:
    assert is_negative(SpanAnnotation("s", "user_feedback", "", "thumbs_down", None))
    assert is_negative(SpanAnnotation("s", "user_feedback", "", None, 0.0))
    assert not is_negative(SpanAnnotation("s", "user_feedback", "", "thumbs_up", 1.0))


def test_the_arm_can_come_from_the_prompt_version_the_trace_links_to() -> None:
    def linked(trace_id: str, links: str) -> MlflowTrace:
        vote = MlflowAssessment("ab_preference", True, "no arm in this text", "HUMAN", "canopy_user")
        return MlflowTrace(trace_id, 1, [vote], {"mlflow.linkedPrompts": links})

    traces = [
        linked("a", '[{"name": "summarization", "version": "5"}]'),
        linked("b", '[{"name": "summarization", "version": "3"}]'),
        linked("c", '[{"name": "other-prompt", "version": "5"}]'),  # another prompt's version 5
        linked("d", '[{"name": "summarization", "version": "4"}]'),  # neither arm of this test
        linked("e", "not json"),
    ]
    versions: dict[str, Arm] = {"3": "champion", "5": "challenger"}
    count = count_mlflow_votes(traces, arm_from="Prompt", prompt="summarization", versions=versions)
    assert count.tally == VoteTally(challenger_wins=1, champion_wins=1)
    assert count.unmapped == 3
