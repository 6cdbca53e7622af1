"""Pure lifecycle of an experiment: which test is active, what config it wants, what a decision does.

Exactly-once promotion rests on one rule: a decision is *recorded* in status (``pendingPromotion``) before
any config changes, and the desired config is a pure function of status. Delivering it again after a crash
is a no-op, and the history gets one record per test id.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import get_args

from canopy_operator.api.spec import PromptExperimentSpec
from canopy_operator.api.status import (
    PROMOTION_HISTORY_LIMIT,
    TEST_HISTORY_LIMIT,
    TRAJECTORY_LIMIT,
    ConfidenceSequence,
    Evidence,
    OriginalConfig,
    PendingPromotion,
    PromotionRecord,
    PromptExperimentStatus,
    TestIdentity,
    TestRecord,
    TrajectoryPoint,
    VoteCounts,
)
from canopy_operator.core.collect import text_hash
from canopy_operator.core.evaluation.gate import gate_released, gate_state
from canopy_operator.core.stats import METHOD_VERSIONS, Assessment, Method, TestSettings, decision_summary
from canopy_operator.core.values import ManagedKeys

CONFIGURED = "<configured summarize.prompt>"
FINAL_OUTCOMES = ("challenger", "champion", "no_winner", "equivalent", "aborted")
ENDED_PHASES = ("Concluded", "Aborted")
SHADOW_REVISION = "shadow: nothing written"
"""The revision a shadow experiment's conclusion records: it decided, and changed nothing."""
TRAJECTORY_KEEP = 120


def test_key(spec: PromptExperimentSpec) -> str:
    """The id of the test a spec asks for; a new id means a new test with fresh counts."""
    a = spec.analysis
    material = {
        "champion": text_hash(spec.champion.prompt) if spec.champion.prompt is not None else CONFIGURED,
        "challenger": text_hash(spec.challenger_ref),
        "method": a.method,
        "alpha": a.alpha,
        "tau": a.tau,
        "minVotes": a.min_votes,
        "maxVotes": a.max_votes,
        "equivalenceDelta": a.equivalence_delta,
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:12]


def settings_of(test: TestIdentity) -> TestSettings:
    """The decision settings fixed when the test started, the method's version included: a running test keeps
    the constants it started with when a release changes them (a test recorded without a version is version 1)."""
    method = test.method if test.method in get_args(Method) else "msprt"
    return TestSettings(
        method=method,  # type: ignore[arg-type]  # checked against Method just above
        alpha=test.alpha,
        tau=test.tau,
        min_votes=test.min_votes,
        max_votes=test.max_votes,
        equivalence_delta=test.equivalence_delta,
        method_version=(test.method_version or 1) if method == test.method else 1,
    )


def needs_new_test(spec: PromptExperimentSpec, status: PromptExperimentStatus) -> bool:
    """Whether the spec asks for a different test than the active one."""
    return status.test is None or status.test.id != test_key(spec)


def champion_text(spec: PromptExperimentSpec, configured_prompt: str | None) -> str | None:
    """The champion for a new test: the spec's, else the prompt configured now."""
    return spec.champion.prompt if spec.champion.prompt is not None else configured_prompt


def start_test(
    spec: PromptExperimentSpec,
    status: PromptExperimentStatus,
    champion: str,
    now: datetime,
    *,
    champion_version: str | None = None,
    challenger_version: str | None = None,
) -> PromptExperimentStatus:
    """A status with a fresh test; the previous one (if any) goes to the bounded test history.

    ``champion_version`` / ``challenger_version``: the registry versions the arms are pinned to (MLflow store)."""
    history = list(status.test_history)
    if status.test is not None:
        ended = {"Concluded": status.evidence.decision, "Aborted": "aborted"}
        result = ended.get(status.phase, "superseded")
        history.append(
            TestRecord(
                test_id=status.test.id,
                ended_at=now,
                result=result,
                challenger_wins=status.votes.challenger_wins,
                champion_wins=status.votes.champion_wins,
                ties=status.votes.ties,
                p_value=status.evidence.p_value,
            )
        )
    a = spec.analysis
    test = TestIdentity(
        id=test_key(spec),
        started_at=now,
        champion_hash=text_hash(champion),
        challenger_hash=text_hash(spec.challenger_ref),
        champion_prompt=champion,
        method=a.method,
        method_version=METHOD_VERSIONS[a.method],
        alpha=a.alpha,
        tau=a.tau,
        min_votes=a.min_votes,
        max_votes=a.max_votes,
        equivalence_delta=a.equivalence_delta,
        champion_version=champion_version,
        challenger_version=challenger_version,
    )
    collection = status.collection.model_copy(update={"vote_fingerprints": ""})
    return status.model_copy(
        update={
            "test": test,
            "votes": VoteCounts(),
            "evidence": Evidence(),
            "winner": None,
            "pending_promotion": None,
            "awaiting_approval_since_generation": None,
            "collection": collection,
            "test_history": history[-TEST_HISTORY_LIMIT:],
            "trajectory": [],
        }
    )


def outcome_of(status: PromptExperimentStatus) -> str | None:
    """The active test's final outcome, once decided and past any approval wait."""
    if status.pending_promotion is not None:
        return status.pending_promotion.outcome
    if status.phase in ENDED_PHASES and status.test is not None:
        for record in reversed(status.promotions):
            if record.test_id == status.test.id:
                return record.outcome
    return None


def current_champion(spec: PromptExperimentSpec, status: PromptExperimentStatus) -> str | None:
    """The winner once the active test is over: its text, or its registry version (MLflow store)."""
    if status.test is None:
        return None
    return spec.challenger_ref if outcome_of(status) == "challenger" else status.test.champion_prompt


def champion_in_config(spec: PromptExperimentSpec, status: PromptExperimentStatus) -> str | None:
    """What the config's prompt key holds once the active test is over: the winner's text, or, with the MLflow
    registry, the champion reference unchanged (the store moves the alias instead of the config changing)."""
    if status.test is None:
        return None
    if spec.prompts.store == "MLflowRegistry":
        return status.test.champion_prompt
    return current_champion(spec, status)


def desired_keys(
    spec: PromptExperimentSpec, status: PromptExperimentStatus, original: OriginalConfig
) -> ManagedKeys | None:
    """The four managed keys the experiment wants now (None before a test exists)."""
    if status.test is None:
        return None
    outcome = outcome_of(status)
    if outcome is None:
        # Votes are posted to /feedback/ab, which needs the feedback flag: it is on for every A/B test.
        return ManagedKeys(
            prompt=status.test.champion_prompt,
            prompt_b=spec.challenger_ref,
            feedback_enabled=True,
            ab_testing_enabled=True,
        )
    winner = champion_in_config(spec, status)
    assert winner is not None
    return ManagedKeys(
        prompt=winner,
        prompt_b=None,
        feedback_enabled=True if spec.promotion.keep_feedback else original.feedback_enabled,
        ab_testing_enabled=False,
    )


def restore_keys(spec: PromptExperimentSpec, status: PromptExperimentStatus, original: OriginalConfig) -> ManagedKeys:
    """onDelete: Restore — the champion (a promoted winner stays promoted) and the flags as they were."""
    champion = champion_in_config(spec, status) or original.prompt
    return ManagedKeys(
        prompt=champion,
        prompt_b=original.prompt_b,
        feedback_enabled=original.feedback_enabled,
        ab_testing_enabled=original.ab_testing_enabled,
    )


def original_from(keys: ManagedKeys) -> OriginalConfig:
    """Snapshot of the managed keys before the experiment touched them."""
    return OriginalConfig(
        prompt=keys.prompt,
        prompt_b=keys.prompt_b,
        feedback_enabled=keys.feedback_enabled,
        ab_testing_enabled=keys.ab_testing_enabled,
    )


def expected_flags(keys: ManagedKeys) -> dict[str, bool]:
    """What GET /feature-flags must report once ``keys`` are live."""
    ab_on = bool(keys.ab_testing_enabled)
    return {"feedback": bool(keys.feedback_enabled), "ab_testing": ab_on}


def approval_granted(spec: PromptExperimentSpec, status: PromptExperimentStatus, generation: int) -> bool:
    """A Manual promotion's approval counts only for the test awaiting it, given after the wait began."""
    if not spec.promotion.approved or status.test is None:
        return False
    if spec.promotion.approved_test_id:
        return spec.promotion.approved_test_id == status.test.id
    since = status.awaiting_approval_since_generation
    return since is not None and generation > since


def _action(outcome: str) -> str:
    return {
        "challenger": "promoted",
        "champion": "champion kept",
        "no_winner": "no winner, champion kept",
        "equivalent": "no meaningful winner, champion kept",
        "aborted": "aborted, champion kept",
    }[outcome]


def shadow(spec: PromptExperimentSpec) -> bool:
    """Shadow mode: decide on the A/B test the backend already runs; write nothing, promote nothing."""
    return spec.delivery.mode == "Shadow"


def abort(spec: PromptExperimentSpec, status: PromptExperimentStatus, now: datetime) -> PromptExperimentStatus:
    """spec.abort ends the active test keeping the champion: recorded as a pending outcome ``aborted`` (so the
    champion-only config is delivered exactly once, like any decision). A decision already recorded stands."""
    if not spec.abort or status.test is None or status.pending_promotion is not None or outcome_of(status):
        return status
    votes = status.votes
    summary = (
        f"aborted by spec.abort after {votes.challenger_wins} challenger, {votes.champion_wins} champion, "
        f"{votes.ties} tie votes (p = {status.evidence.p_value:.3g}); champion kept"
    )
    pending = PendingPromotion(
        test_id=status.test.id,
        outcome="aborted",
        prompt_hash=text_hash(status.test.champion_prompt),
        decided_at=now,
        summary=summary,
    )
    return status.model_copy(update={"pending_promotion": pending})


def record_trajectory(status: PromptExperimentStatus, assessment: Assessment, now: datetime) -> PromptExperimentStatus:
    """Add the assessment to the confidence sequence's history when the decisive votes moved (or it is the
    first point); beyond the limit every other point of the older half is dropped, the first and the newest
    kept, so the shape stays over the whole test in at most ``TRAJECTORY_LIMIT`` points."""
    points = list(status.trajectory)
    if points and points[-1].decisive_votes == assessment.decisive_votes:
        return status
    points.append(
        TrajectoryPoint(
            at=now,
            decisive_votes=assessment.decisive_votes,
            lower=min(1.0, max(0.0, assessment.cs_lower)),
            upper=min(1.0, max(0.0, assessment.cs_upper)),
            p_value=min(1.0, max(0.0, assessment.p_value)),
        )
    )
    while len(points) > TRAJECTORY_LIMIT:
        half = len(points) // 2
        points = [points[0], *points[1:half][1::2], *points[half:]]
    return status.model_copy(update={"trajectory": points})


def apply_assessment(
    spec: PromptExperimentSpec,
    status: PromptExperimentStatus,
    assessment: Assessment,
    generation: int,
    now: datetime,
) -> PromptExperimentStatus:
    """Record the evidence; on a decision, record the pending promotion (or the approval wait)."""
    cs = ConfidenceSequence(lower=assessment.cs_lower, upper=assessment.cs_upper)
    evidence = Evidence(
        decisive_votes=assessment.decisive_votes,
        e_value=assessment.e_value,
        max_e_value=assessment.max_e_value,
        p_value=assessment.p_value,
        confidence_sequence=cs,
        decision=assessment.decision,
        reason=assessment.reason,
    )
    update: dict[str, object] = {"evidence": evidence}
    if assessment.decision == "continue" or status.test is None or status.pending_promotion is not None:
        return status.model_copy(update=update)
    outcome = assessment.decision
    manual = spec.promotion.policy == "Manual" and not shadow(spec)  # shadow promotes nothing: nothing to approve
    if outcome == "challenger" and manual and not approval_granted(spec, status, generation):
        if status.awaiting_approval_since_generation is None:
            update["awaiting_approval_since_generation"] = generation
        return status.model_copy(update=update)
    if outcome == "challenger" and not shadow(spec) and not gate_state(spec, status).open:
        return status.model_copy(update=update)  # the evaluation gate holds the automatic promotion back
    votes = status.votes
    summary = decision_summary(votes.challenger_wins, votes.champion_wins, votes.ties, assessment, _action(outcome))
    winner_text = spec.challenger_ref if outcome == "challenger" else status.test.champion_prompt
    update["pending_promotion"] = PendingPromotion(
        test_id=status.test.id,
        outcome=outcome,
        prompt_hash=text_hash(winner_text),
        decided_at=now,
        summary=summary,
    )
    return status.model_copy(update=update)


def approve(
    spec: PromptExperimentSpec, status: PromptExperimentStatus, generation: int, now: datetime
) -> PromptExperimentStatus:
    """Turn an awaited approval (or a gate that opened) into the pending promotion (no-op unless valid)."""
    if status.evidence.decision != "challenger" or status.pending_promotion is not None or status.test is None:
        return status
    if not approval_granted(spec, status, generation) and not gate_released(spec, status):
        return status
    fake = Assessment(
        decisive_votes=status.evidence.decisive_votes,
        e_value=status.evidence.e_value,
        max_e_value=status.evidence.max_e_value,
        p_value=status.evidence.p_value,
        cs_lower=status.evidence.confidence_sequence.lower if status.evidence.confidence_sequence else 0.0,
        cs_upper=status.evidence.confidence_sequence.upper if status.evidence.confidence_sequence else 1.0,
        decision="challenger",
        reason=status.evidence.reason,
    )
    return apply_assessment(spec, status, fake, generation, now)


def _previous_version(status: PromptExperimentStatus, outcome: str) -> str | None:
    """The registry version the champion alias named before a promotion moved it (None: nothing moved)."""
    if outcome != "challenger" or status.test is None:
        return None
    return status.test.champion_version


def conclude(status: PromptExperimentStatus, revision: str, now: datetime) -> PromptExperimentStatus:
    """The pending promotion is delivered and verified: one history record per test, phase Concluded."""
    pending = status.pending_promotion
    if pending is None:
        return status
    history = list(status.promotions)
    if not any(r.test_id == pending.test_id for r in history):
        history.append(
            PromotionRecord(
                test_id=pending.test_id,
                outcome=pending.outcome,
                promoted_hash=pending.prompt_hash,
                challenger_wins=status.votes.challenger_wins,
                champion_wins=status.votes.champion_wins,
                ties=status.votes.ties,
                p_value=status.evidence.p_value,
                confidence_sequence=status.evidence.confidence_sequence,
                summary=pending.summary,
                decided_at=pending.decided_at,
                completed_at=now,
                revision=revision,
                previous_version=_previous_version(status, pending.outcome),
            )
        )
    winner = {"challenger": "challenger", "champion": "champion"}.get(pending.outcome, "none")
    return status.model_copy(
        update={
            "promotions": history[-PROMOTION_HISTORY_LIMIT:],
            "pending_promotion": None,
            "winner": winner,
            "phase": "Aborted" if pending.outcome == "aborted" else "Concluded",
        }
    )
