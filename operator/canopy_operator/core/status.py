"""The experiment's status as a whole: reading it, the phase and condition machine, the write, the cadence.

A pass computes the status whole and writes it once, as a JSON merge patch against what it read. The phase
follows from the status and from what the pass found (:class:`PassFindings`); every condition is set on
every pass, and a condition's lastTransitionTime moves only when its status does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from canopy_operator.api.conditions import ConditionType as C
from canopy_operator.api.status import Phase, PromptExperimentStatus
from canopy_operator.core import lifecycle as lc
from canopy_operator.core.conditions import set_condition

PROGRESS_POLL_SECONDS = 2.0
"""How often a pass runs while a change is in flight (Progressing, Promoting), at most."""
ROLLOUT_POLL_SECONDS = 10.0
"""The next pass while the Deployment still rolls out. The watch wakes the daemon at once when it sees that
rollout finished (``Report.rolling``), so this is only the safety net; polling every 2 s instead made 500
experiments rolling out at once run 250 passes a second that could only find the rollout pending (#20)."""
ROLLOUT_RECHECK_SECONDS = 0.25
"""The next pass after one that found its own fresh write not rolled out yet, for a daemon without the
Deployment watch (the handler waits for the watch instead when it has one): the Deployment controller usually
reports the new generation within a few hundred milliseconds, so the first look comes that soon."""
FRESH_WRITE_SECONDS = 0.5
"""How long after a write a pending rollout counts as fresh (one quick re-check, not a busy loop; without the
Deployment watch only, see ``ROLLOUT_RECHECK_SECONDS``)."""
DEFER_LIMIT_SECONDS = 30.0
"""How long the status a config write's pass computed may wait for the rollout to finish before it is written
anyway (``defer_write``). A rollout that finishes sooner costs one status write fewer; one that takes longer
shows its bookkeeping (revision, hashes, when it was applied) at most this late plus one safety-net poll."""
INVALID_SPEC_POLL_SECONDS = 300.0
"""How often an invalid spec is looked at again (a spec change wakes the pass at once anyway)."""
MAX_BACKOFF_SECONDS = 300.0
STATUS_UNREADABLE = "StatusUnreadable"


@dataclass(frozen=True)
class PassFindings:
    """What a pass found that is not in the status itself."""

    degraded: tuple[str, str] | None = None
    """(reason, message) when the experiment cannot go on as it should."""
    awaiting_review: bool = False
    """A change waits for a human to merge it (Git PullRequest mode)."""
    gate_block: str | None = None
    """Why the evaluation gate holds back an automatic promotion."""
    fresh_rollout: bool = False
    """The config this pass wrote (or found written) moments ago is not live yet: look again very soon."""
    suspended: bool = False
    """spec.suspend: the pass did nothing (no reads, no writes)."""
    rolling: bool = False
    """The pass found the Deployment's rollout unfinished (and asked the old pods nothing)."""


class StatusUnreadable(ValueError):
    """The stored status is not a status this operator wrote; ``where`` names the first bad field."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"status.{where}: {problem}")
        self.where = where


def read_status(raw: Mapping[str, Any] | None) -> PromptExperimentStatus:
    """The typed status, or :class:`StatusUnreadable` (never a fresh one: the status is the memory)."""
    try:
        return PromptExperimentStatus.model_validate(dict(raw or {}))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(root)"
        raise StatusUnreadable(where, str(first["msg"])) from None


def unreadable_status(
    raw: Mapping[str, Any], error: StatusUnreadable, generation: int, now: datetime
) -> dict[str, Any]:
    """The raw status with only phase, message and the Degraded condition changed: nothing is forgotten, and
    a human who repairs the bad field lets the experiment go on from where it was."""
    message = f"{error}; the operator will not start the experiment over: repair or remove that field"
    condition = {
        "type": C.DEGRADED,
        "status": "True",
        "reason": STATUS_UNREADABLE,
        "message": message,
        "lastTransitionTime": now.isoformat().replace("+00:00", "Z"),
        "observedGeneration": generation,
    }
    kept = raw.get("conditions")
    others = [c for c in kept if isinstance(c, dict) and c.get("type") != C.DEGRADED] if isinstance(kept, list) else []
    return {**raw, "phase": "Degraded", "message": message, "conditions": [*others, condition]}


def with_condition(
    st: PromptExperimentStatus, type_: str, ok: bool, reason: str, message: str, generation: int, now: datetime
) -> PromptExperimentStatus:
    """``st`` with one condition set (True when ``ok``)."""
    conditions = set_condition(st.conditions, type_, "True" if ok else "False", reason, message, generation, now)
    return st.model_copy(update={"conditions": conditions})


def intent(st: PromptExperimentStatus, generation: int, now: datetime) -> PromptExperimentStatus:
    """The status written just before a config change: a Running test is no longer Running or Ready.

    Without this, a new test's id appears next to the old config's phase Running and Ready=True until the
    pass ends. Only Pending and Running are rewritten (a first delivery shows Progressing too): Concluded (and
    Promoting) are read back by the lifecycle.
    """
    if st.phase not in ("Pending", "Running"):
        return st
    st = with_condition(st, C.READY, False, "NotVerified", "", generation, now)
    message = "waiting for the backend to report the new config"
    st = with_condition(st, C.PROGRESSING, True, "Delivering", message, generation, now)
    return st.model_copy(update={"phase": "Progressing", "message": "delivering config"})


def phase_of(st: PromptExperimentStatus, findings: PassFindings) -> Phase:
    """The phase the status and the pass's findings add up to."""
    outcome = lc.outcome_of(st)
    if findings.suspended:
        return "Suspended"
    if findings.degraded:
        return "Degraded"
    if st.pending_promotion is not None:
        return "Promoting"
    if outcome is not None:
        return "Aborted" if outcome == "aborted" else "Concluded"
    if awaiting_approval(st):
        return "AwaitingApproval"
    if st.delivery.verified_at is None:
        return "Progressing"
    return "Running"


def awaiting_approval(st: PromptExperimentStatus) -> bool:
    """The test decided for the challenger and the promotion waits (for a human, or for the gate)."""
    return st.evidence.decision == "challenger" and st.pending_promotion is None and lc.outcome_of(st) is None


def settle(
    st: PromptExperimentStatus, findings: PassFindings, generation: int, now: datetime
) -> PromptExperimentStatus:
    """The final status of a pass: phase, message and every condition, from the status and the findings."""
    phase = phase_of(st, findings)
    verified = st.delivery.verified_at is not None
    awaiting = awaiting_approval(st)
    outcome = lc.outcome_of(st)
    reason, message = findings.degraded or ("", "")

    def cond(s: PromptExperimentStatus, type_: str, ok: bool, why: str, text: str) -> PromptExperimentStatus:
        return with_condition(s, type_, ok, why, text, generation, now)

    st = cond(st, C.DEGRADED, findings.degraded is not None, reason or "AsExpected", message)
    progressing = phase in ("Progressing", "Promoting")
    waiting_text = "waiting for the backend to report the new config"
    st = cond(
        st, C.PROGRESSING, progressing, "Delivering" if progressing else "Settled", waiting_text if progressing else ""
    )
    st = cond(st, C.READY, verified and not findings.degraded, "Verified" if verified else "NotVerified", "")
    gate = findings.gate_block
    st = cond(
        st,
        C.AWAITING_APPROVAL,
        awaiting,
        ("EvaluationGate" if gate else "ManualPolicy") if awaiting else "NotAwaiting",
        (gate or st.evidence.reason) if awaiting else "",
    )
    decided = st.evidence.decision != "continue"
    st = cond(st, C.DECIDED, decided, st.evidence.decision if decided else "Collecting", st.evidence.reason)
    promoted = outcome == "challenger" and phase == "Concluded" and st.promotions[-1].revision != lc.SHADOW_REVISION
    summary = st.promotions[-1].summary if promoted else ""
    st = cond(st, C.PROMOTED, promoted, "ChallengerPromoted" if promoted else "NotPromoted", summary)
    if phase == "Suspended":
        message = suspended_message(st)
    message = message or {
        "Progressing": "delivering config and waiting for the backend to report it",
        "Running": "collecting: " + votes_progress(st),
        "AwaitingApproval": gate or "challenger won; set spec.promotion.approved: true to promote",
        "Promoting": "delivering the decision",
        "Concluded": st.promotions[-1].summary if st.promotions else "concluded",
        "Aborted": st.promotions[-1].summary if st.promotions else "aborted",
    }.get(phase, "")
    return st.model_copy(update={"phase": phase, "message": message, "progress": progress_column(st, phase)})


def votes_progress(st: PromptExperimentStatus) -> str:
    """``18/30 decisive votes, CS [0.41, 0.93]`` (toward minVotes; the CS once there is one)."""
    decisive = st.evidence.decisive_votes
    text = f"{decisive}/{st.test.min_votes} decisive votes" if st.test is not None else f"{decisive} decisive votes"
    cs = st.evidence.confidence_sequence
    if cs is not None:
        text += f", CS [{cs.lower:.2f}, {cs.upper:.2f}]"
    return text


def suspended_message(st: PromptExperimentStatus) -> str:
    since = st.suspended_at.isoformat().replace("+00:00", "Z") if st.suspended_at else "now"
    return f"suspended by spec.suspend since {since}: no polling, no writes; {votes_progress(st)} kept"


def progress_column(st: PromptExperimentStatus, phase: Phase) -> str:
    """The Progress printer column: votes toward minVotes while collecting, else what the phase means."""
    running = next((r for r in reversed(st.evaluations) if r.state == "Running"), None)
    if running is not None and running.progress is not None:
        evaluation = f"eval {running.progress.done}/{running.progress.total}"
    else:
        evaluation = ""
    if phase in ("Running", "Progressing", "Suspended", "Degraded") and st.test is not None:
        votes = f"{st.evidence.decisive_votes}/{st.test.min_votes} votes"
        return f"{votes}, {evaluation}" if evaluation else votes
    if phase == "AwaitingApproval":
        return "awaiting approval" + (f", {evaluation}" if evaluation else "")
    if phase in ("Concluded", "Aborted") and st.promotions:
        return st.promotions[-1].outcome.replace("_", " ")
    return evaluation


def next_poll(phase: Phase, findings: PassFindings, interval: float) -> float:
    """Seconds to the next pass: the interval, or faster while a change is in flight and nothing is wrong."""
    fast = phase in ("Progressing", "Promoting") and not findings.degraded and not findings.awaiting_review
    if not fast:
        return interval
    if findings.fresh_rollout:
        return min(interval, ROLLOUT_RECHECK_SECONDS)
    return min(interval, ROLLOUT_POLL_SECONDS if findings.rolling else PROGRESS_POLL_SECONDS)


WAKE_TICK_SECONDS = 1.0
"""Long sleeps end on a whole multiple of this (the event loop's clock), so daemons due within the same second
wake together: one loop iteration sends all their polls, and their answers come back together (issue #20)."""
ALIGN_FROM_SECONDS = 10.0
"""Sleeps shorter than this (a rollout re-check, a conflict's retry, a fast poll) end exactly when asked."""


def aligned_pause(now: float, pause: float, tick: float = WAKE_TICK_SECONDS) -> float:
    """``pause`` moved by at most half a ``tick`` so that it ends on a multiple of ``tick`` (``now`` is the clock
    it is measured on); pauses under :data:`ALIGN_FROM_SECONDS` are kept as they are.

    Why: 500 idle experiments polling every 30 s, each waking alone, made the event loop turn over once per
    request, and the turning over (timers, the selector, the wake-up) cost more than the passes themselves.
    Waking on a shared second batches them: measured on the same loop with aiohttp polls alone
    (``bench/wake_tick.py``, 500 pollers every 30 s), CPU fell from 2.2-2.7 % of a core to 1.0 %
    (bench/RESULTS.md). Rounding to the nearest tick (not up) keeps the mean period the interval, so a backend
    still gets one poll per interval; the daemon's jitter still spreads experiments over the ticks."""
    if pause < ALIGN_FROM_SECONDS or tick <= 0:
        return pause
    return max(0.0, round((now + pause) / tick) * tick - now)


def backoff(delay: float, failures: int) -> float:
    """The delay after ``failures`` failed passes in a row: doubling, capped."""
    return float(min(delay * 2 ** min(failures, 6), MAX_BACKOFF_SECONDS))


def merge_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON merge patch turning ``old`` into ``new`` (nulls delete keys); empty when equal."""
    patch: dict[str, Any] = {}
    for key in old.keys() - new.keys():
        patch[key] = None
    for key, value in new.items():
        if key not in old:
            patch[key] = value
        elif isinstance(value, dict) and isinstance(old[key], dict):
            sub = merge_patch(old[key], value)
            if sub:
                patch[key] = sub
        elif value != old[key]:
            patch[key] = value
    return patch


def dump(status: PromptExperimentStatus) -> dict[str, Any]:
    """The status as stored (camelCase keys, no nulls)."""
    return status.model_dump(mode="json", by_alias=True, exclude_none=True)


def defer_write(*, rolling: bool, failed: bool, queued: bool, wrote_intent: bool, waited: float | None) -> bool:
    """Whether a pass may keep its status in memory instead of writing it (issue #20).

    Only while the Deployment still rolls out after a config write of the experiment's own: the pass that wrote
    its intent and then the config, and the passes after it that find the rollout still running, until the
    status has waited ``DEFER_LIMIT_SECONDS`` (``waited``: how long it has; None when this pass did not start
    from a kept status). The intent already says Progressing and holds the original config, the test and the
    counts. What waits is the bookkeeping of the write (revision, hashes, when it was applied): the pass the
    finished rollout wakes writes it with its outcome, and a rollout slower than the limit shows it at the first
    safety-net poll (``ROLLOUT_POLL_SECONDS``) past it. Lost (the operator stopped), the next pass derives it
    again from the source (the ``adopt`` plan), and the verify timeout counts from that pass. Never a failed pass
    (its condition must show), never one that queued a notification (the outbox is durable before anything is
    sent)."""
    held = waited is not None and waited < DEFER_LIMIT_SECONDS
    return (wrote_intent or held) and rolling and not failed and not queued
