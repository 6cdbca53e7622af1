"""Leader election over a ``coordination.k8s.io/v1`` Lease, the pure part: given the lease and now, what to do.

Several replicas of the operator share one Lease; only its holder runs Kopf (docs/high-availability.md). The
rules are client-go's (``k8s.io/client-go/tools/leaderelection``), with its default timing:

- a candidate takes the lease when nobody holds it (none yet, or released: no holder) or when its holder has
  not renewed it for ``leaseDurationSeconds`` (15 s) *as this candidate observed it*: the expiry counts from
  when the candidate last saw the record change, on the candidate's own monotonic clock, never from the
  ``renewTime`` the holder wrote, so clock skew between nodes does not matter;
- the holder renews every ``retry`` period (2 s); if it has not renewed for ``renew_deadline`` (10 s) it stops
  acting at once, which leaves 5 s before any other candidate can see the lease as expired;
- every write carries the resourceVersion it read (the shell's business), so of two candidates racing for an
  expired lease one wins and the other gets a conflict;
- a holder that stops gracefully releases the lease (no holder, a duration of 1 s): another candidate takes it
  at its next try instead of after the whole duration.

Times here are plain numbers: ``now`` is a monotonic clock in seconds, ``wall`` the UTC time written into the
record for people (``kubectl get lease``), never compared across processes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal

LEASE_DURATION = 15
RENEW_DEADLINE = 10
RETRY_PERIOD = 2
JITTER = 1.2
"""A candidate waits ``retry * (1 + JITTER * u)`` for ``u`` in [0, 1) between tries (client-go's JitterFactor)."""
RELEASED_DURATION = 1
"""The duration a released lease states (client-go's): expired for everyone almost at once."""


@dataclass(frozen=True)
class Timing:
    """How long a lease lasts, how long its holder keeps trying to renew it, how often anyone tries."""

    lease_duration: int = LEASE_DURATION
    renew_deadline: int = RENEW_DEADLINE
    retry: int = RETRY_PERIOD

    def problem(self) -> str | None:
        """Why this timing cannot work (None when it can): a lost holder must stop before anyone may take over."""
        if min(self.lease_duration, self.renew_deadline, self.retry) < 1:
            return "every duration must be at least 1 second"
        if self.lease_duration <= self.renew_deadline:
            return (
                f"the lease duration ({self.lease_duration}s) must be longer than the renew deadline "
                f"({self.renew_deadline}s)"
            )
        if self.renew_deadline <= JITTER * self.retry:
            return (
                f"the renew deadline ({self.renew_deadline}s) must be longer than {JITTER:g} x the retry period "
                f"({self.retry}s)"
            )
        return None


@dataclass(frozen=True)
class LeaseRecord:
    """The spec of a Lease as leader election reads and writes it."""

    holder: str | None
    """``holderIdentity``; None or empty: nobody holds the lease (never taken, or released)."""
    duration: int | None = None
    """``leaseDurationSeconds`` as the holder wrote it."""
    acquired: datetime | None = None
    renewed: datetime | None = None
    transitions: int = 0
    """``leaseTransitions``: how many times the lease changed hands."""


@dataclass(frozen=True)
class Observation:
    """A lease as a candidate last saw it (its record and resourceVersion), and when, on the candidate's monotonic
    clock, it first saw it like that."""

    record: LeaseRecord
    since: float
    version: str = ""


def observe(previous: Observation | None, record: LeaseRecord, version: str, now: float) -> Observation:
    """The observation after reading ``record`` at ``version`` at ``now``: the clock restarts whenever the lease
    was written since (a renewal changes the version even if it wrote the same record)."""
    if previous is not None and previous.record == record and previous.version == version:
        return previous
    return Observation(record, now, version)


Action = Literal["create", "acquire", "renew", "wait"]


@dataclass(frozen=True)
class Decision:
    """What a candidate does after reading the lease: write ``record`` (create, acquire, renew) or wait."""

    action: Action
    record: LeaseRecord | None
    reason: str
    """One line for the log: why."""


def _duration(record: LeaseRecord, timing: Timing) -> int:
    return record.duration if record.duration else timing.lease_duration


def decide(identity: str, observed: Observation | None, now: float, wall: datetime, timing: Timing) -> Decision:
    """Create, take, renew or leave the lease; ``observed`` is None when there is no Lease object yet."""
    if observed is None:
        record = LeaseRecord(identity, timing.lease_duration, wall, wall, 0)
        return Decision("create", record, "no lease yet")
    current = observed.record
    if current.holder == identity:
        return Decision("renew", replace(current, duration=timing.lease_duration, renewed=wall), "held by us")
    taken = LeaseRecord(identity, timing.lease_duration, wall, wall, current.transitions + 1)
    if not current.holder:
        return Decision("acquire", taken, "released")
    unchanged_for = now - observed.since
    left = _duration(current, timing) - unchanged_for
    if left <= 0:
        return Decision("acquire", taken, f"expired: {current.holder} did not renew it for {unchanged_for:.0f}s")
    return Decision("wait", None, f"held by {current.holder} (expires in {left:.0f}s unless renewed)")


def still_leading(last_renewed: float, now: float, timing: Timing) -> bool:
    """Whether a holder that last renewed at ``last_renewed`` may still act: within the renew deadline."""
    return now - last_renewed < timing.renew_deadline


def renew_budget(last_renewed: float, now: float, timing: Timing) -> float:
    """Seconds a renewal attempt may take before the holder must consider the lease lost (may be <= 0)."""
    return last_renewed + timing.renew_deadline - now


def retry_delay(timing: Timing, u: float) -> float:
    """The wait between two tries of a candidate, ``u`` a uniform number in [0, 1) (jitter spreads candidates)."""
    return timing.retry * (1.0 + JITTER * min(max(u, 0.0), 1.0))


def release(record: LeaseRecord, identity: str, wall: datetime) -> LeaseRecord | None:
    """The record that gives a lease up on a graceful stop; None when ``identity`` does not hold it."""
    if record.holder != identity:
        return None
    return replace(record, holder=None, duration=RELEASED_DURATION, renewed=wall)
