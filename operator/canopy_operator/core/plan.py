"""Plans of one reconcile pass: what to do about the config source, and what the backend's answer means.

Pure, in the manner of Argo Rollouts' assess/decide functions: each takes what the pass observed and
returns a verdict; the shell does the one I/O step the verdict names. Nothing here knows which delivery
adapter is in use: what matters of it is in :class:`~canopy_operator.delivery.base.DeliveryTraits`, passed
in as plain flags.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from canopy_operator.api.conditions import ConditionType as C
from canopy_operator.api.spec import PromptExperimentSpec
from canopy_operator.api.status import DeliveryStatus, PromptExperimentStatus
from canopy_operator.core import lifecycle as lc
from canopy_operator.core.conditions import get_condition
from canopy_operator.core.status import with_condition
from canopy_operator.core.values import GEN1, ManagedKeys, ValuesLayout, managed_hash

Event = tuple[str, str, str]
"""(type, reason, message) of a Kubernetes event."""
IN_SYNC = "the managed keys are as the experiment wants"

Action = Literal["none", "adopt", "reroll", "write", "await_review", "stop"]


@dataclass(frozen=True)
class DeliveryPlan:
    """What to do about the config source this pass."""

    action: Action
    """``adopt``: the source already carries the desired keys that status does not know it wrote (someone,
    or a pass that died, wrote them): record them and roll unless live. ``reroll``: written and recorded but
    never seen live: roll again if needed. ``write``: read the votes once more if ``final_read``, persist the
    intent, write. ``await_review``: pushed for review, nothing to write until it is merged. ``stop``: drift
    with ``onDrift: Stop``."""
    status: PromptExperimentStatus
    """Status with the ConfigDrift condition as observed."""
    final_read: bool = False
    """The write restarts the backend, which forgets every vote: read them once more first."""
    events: tuple[Event, ...] = ()
    stop_message: str = ""


def plan_delivery(
    spec: PromptExperimentSpec,
    st: PromptExperimentStatus,
    current: ManagedKeys,
    desired: ManagedKeys,
    *,
    reviewed: bool,
    generation: int,
    now: datetime,
) -> DeliveryPlan:
    """Adopt, re-roll, write, wait for a review, or stop on drift: from the source's keys and the status."""
    dh = managed_hash(desired)
    d = st.delivery
    if current == desired:
        st = with_condition(st, C.CONFIG_DRIFT, False, "InSync", IN_SYNC, generation, now)
        if d.desired_hash != dh:
            return DeliveryPlan("adopt", st)
        return DeliveryPlan("reroll" if d.verified_at is None and d.revision else "none", st)
    events: list[Event] = []
    if d.applied_hash == dh and d.verified_at is not None:
        message = f"the managed keys were changed outside the experiment ({describe_change(current, desired)})"
        st = with_condition(st, C.CONFIG_DRIFT, True, "DriftDetected", message, generation, now)
        events.append(("Warning", "ConfigDrift", message))
        if spec.delivery.on_drift == "Stop":
            return DeliveryPlan(
                "stop", st, events=tuple(events), stop_message=message + "; spec.delivery.onDrift is Stop"
            )
    final_read = d.verified_at is not None and lc.outcome_of(st) is None and st.evidence.decision == "continue"
    if reviewed and awaiting_review(d, desired, current):
        return DeliveryPlan("await_review", st, final_read=final_read, events=tuple(events))
    return DeliveryPlan("write", st, final_read=final_read, events=tuple(events))


def awaiting_review(d: DeliveryStatus, desired: ManagedKeys, current: ManagedKeys) -> bool:
    """This change was pushed for review and the target does not carry it yet (reviewed deliveries only)."""
    return (
        d.branch is not None
        and d.applied_hash == managed_hash(desired)
        and d.verified_at is None
        and current != desired
    )


def record_write(
    st: PromptExperimentStatus, desired: ManagedKeys, revision: str, now: datetime
) -> PromptExperimentStatus:
    """Status after the desired keys were written (or adopted): applied, not yet verified."""
    dh = managed_hash(desired)
    update = {"desired_hash": dh, "applied_hash": dh, "revision": revision, "applied_at": now, "verified_at": None}
    return st.model_copy(update={"delivery": st.delivery.model_copy(update=update)})


def record_first_sync(st: PromptExperimentStatus, generation: int, now: datetime) -> PromptExperimentStatus:
    """Record "in sync" with the first write, not at the first idle poll (a status write for nothing)."""
    if get_condition(st.conditions, C.CONFIG_DRIFT) is not None:
        return st
    return with_condition(st, C.CONFIG_DRIFT, False, "InSync", IN_SYNC, generation, now)


@dataclass(frozen=True)
class Tracking:
    """The delivery's bookkeeping after the delivery step, and whether the pass must wait for a merge."""

    status: PromptExperimentStatus
    awaiting_review: bool
    events: tuple[Event, ...] = field(default=())


def track_delivery(
    st: PromptExperimentStatus,
    *,
    current: ManagedKeys,
    version: str,
    desired: ManagedKeys,
    reviewed: bool,
    versioned: bool,
    target: str,
    review_branch: str | None,
    review_url: str | None,
    change: str,
    now: datetime,
) -> Tracking:
    """Review branch and pull request into ``status.delivery``; once the target carries the change, the
    revision becomes what is deployed there (the commit Argo CD syncs).

    ``review_branch``/``review_url`` come from this pass's write (None when nothing was written)."""
    d = st.delivery
    events: list[Event] = []
    update: dict[str, object] = {}
    if not reviewed:
        update |= {"branch": None, "pull_request_url": None}
    elif review_branch is not None:
        if review_branch != d.branch or review_url != d.pull_request_url:
            where = review_url or f"branch {review_branch} (no forge configured: open the pull request by hand)"
            events.append(("Normal", "PullRequestOpened", f"{change}: review and merge {where}"))
        update |= {"branch": review_branch, "pull_request_url": review_url}
    if versioned and current == desired and d.verified_at is None and version and d.revision != version:
        update["revision"] = version
        if reviewed:
            update["applied_at"] = now  # a merge counts from the moment it is seen
            events.append(("Normal", "PullRequestMerged", f"{change}: merged into {target} ({version})"))
    st = st.model_copy(update={"delivery": d.model_copy(update=update)})
    waiting = reviewed and awaiting_review(st.delivery, desired, current)
    return Tracking(st, waiting, tuple(events))


@dataclass(frozen=True)
class Verdict:
    """What the backend's answer means for the delivered config."""

    state: Literal["verified", "waiting", "timed_out"]
    message: str = ""


def flags_match(expected: Mapping[str, bool], flags: Mapping[str, object]) -> bool:
    """Whether the backend reports every expected flag."""
    return all(flags.get(k) == v for k, v in expected.items())


def verify_overdue(applied_at: datetime | None, timeout: float, now: datetime) -> bool:
    """Whether the config written at ``applied_at`` has waited longer than ``timeout`` seconds to be verified."""
    return (now - (applied_at or now)).total_seconds() > timeout


def verify_verdict(
    *,
    expected: Mapping[str, bool],
    serving: bool,
    seen: Mapping[str, object],
    ab_testing: bool,
    rollout: str | None,
    applied_at: datetime | None,
    timeout: float,
    timeout_text: str,
    now: datetime,
) -> Verdict:
    """Live once the backend serves it and the rollout is complete (an old pod answers with the old prompts,
    and, when only a text changed, with the same flags); a timeout once waited longer than allowed."""
    if serving and rollout is None:
        return Verdict("verified", f"backend reports {describe_flags(expected)}")
    if not verify_overdue(applied_at, timeout, now):
        return Verdict("waiting")
    message = (
        f"expected {describe_flags(expected)}{' and /summarize/ab serving' if ab_testing else ''}"
        f" within {timeout_text}; backend reports {describe_flags(seen)}"
        + (f"; rollout not finished: {rollout}" if rollout else "")
    )
    return Verdict("timed_out", message)


def describe_flags(flags: Mapping[str, object]) -> str:
    """``feedback=true, ab_testing=true``."""
    return ", ".join(f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in flags.items())


def describe_change(current: ManagedKeys, desired: ManagedKeys, layout: ValuesLayout = GEN1) -> str:
    """Which managed keys differ, in words (no prompt texts), named as ``layout`` names them."""
    parts = []
    if current.prompt != desired.prompt:
        parts.append(f"{layout.dotted('prompt')} changed")
    if current.prompt_b != desired.prompt_b:
        parts.append(f"{layout.dotted('prompt_b')} " + ("removed" if desired.prompt_b is None else "set"))
    if current.feedback_enabled != desired.feedback_enabled:
        parts.append(f"feedback.enabled={str(desired.feedback_enabled).lower()}")
    if current.ab_testing_enabled != desired.ab_testing_enabled:
        parts.append(f"ab_testing.enabled={str(desired.ab_testing_enabled).lower()}")
    return ", ".join(parts) or "no change"
