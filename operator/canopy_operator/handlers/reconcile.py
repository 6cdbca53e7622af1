"""One reconcile pass of a PromptExperiment: observe, decide (pure core), act, report.

Called by the experiment's daemon at the poll interval. Everything it must remember lives in status, which
is written through ``persist`` (with a resourceVersion precondition) before any step that restarts the backend.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from pydantic import ValidationError

from canopy_operator.api.base import parse_duration
from canopy_operator.api.conditions import ConditionType as C
from canopy_operator.api.spec import PromptExperimentSpec
from canopy_operator.api.status import PromptExperimentStatus
from canopy_operator.sources.canopy.errors import BackendError
from canopy_operator.core import lifecycle as lc
from canopy_operator.core.conditions import get_condition, set_condition
from canopy_operator.core.stats import assess
from canopy_operator.core.values import ManagedKeys, managed_hash
from canopy_operator.failpoints import failpoint
from canopy_operator.gitops.delivery import GitDelivery
from canopy_operator.handlers.collection import BackendReader, poll_backend
from canopy_operator.handlers.evaluation import Evaluations
from canopy_operator.k8s.configmap_delivery import DeliveryError, SourceState, WriteResult
from canopy_operator.k8s.errors import KubeError

PROGRESS_POLL_SECONDS = 2.0


class Delivery(Protocol):
    """A way to read and write the managed keys (ConfigMap or Git)."""

    async def read(self) -> SourceState: ...

    async def write(self, desired: ManagedKeys, *, ensure_rolled: bool = False) -> WriteResult: ...

    async def rollout_pending(self) -> str | None:
        """What the rollout of the written config still waits for (None when done or not observable)."""
        ...


@dataclass
class Report:
    """What a pass wants the handler to tell the world."""

    status: PromptExperimentStatus
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)
    next_in: float = 30.0
    failed: bool = False
    delivered: str | None = None  # delivery result for metrics: "changed", "unchanged", "failed"
    decision: str | None = None


class Pass:
    """State of one reconcile pass (kept small: the handler builds one per wake-up)."""

    def __init__(
        self,
        body: Mapping[str, Any],
        delivery_factory: Callable[[PromptExperimentSpec, PromptExperimentStatus], Awaitable[Delivery]],
        backend_factory: Callable[[PromptExperimentSpec], BackendReader],
        persist: Callable[[PromptExperimentStatus], Awaitable[None]],
        now: Callable[[], datetime],
        evaluations: Evaluations | None = None,
    ) -> None:
        self.body = body
        self.generation = int(body.get("metadata", {}).get("generation") or 0)
        self.delivery_factory = delivery_factory
        self.backend_factory = backend_factory
        self.persist = persist
        self.now = now
        self.events: list[tuple[str, str, str]] = []
        self.degraded: tuple[str, str] | None = None
        self.delivered: str | None = None
        self.decision: str | None = None
        self.awaiting_merge = False  # Git PullRequest mode: the change waits for a human merge
        self.evaluations = evaluations  # ledger, evaluation Jobs and the promotion gate (handlers/evaluation.py)
        self.gate_block: str | None = None  # why the evaluation gate holds back an automatic promotion

    # -- helpers -----------------------------------------------------------------------------------------
    def event(self, reason: str, message: str, warning: bool = False) -> None:
        self.events.append(("Warning" if warning else "Normal", reason, message))

    def cond(
        self, st: PromptExperimentStatus, type_: str, ok: bool, reason: str, message: str
    ) -> PromptExperimentStatus:
        conditions = set_condition(
            st.conditions, type_, "True" if ok else "False", reason, message, self.generation, self.now()
        )
        return st.model_copy(update={"conditions": conditions})

    def is_degraded(self) -> bool:
        return self.degraded is not None

    def degrade(self, st: PromptExperimentStatus, reason: str, message: str) -> PromptExperimentStatus:
        self.degraded = (reason, message)
        return st

    # -- the story ---------------------------------------------------------------------------------------
    async def run(self) -> Report:
        raw_status = self.body.get("status") or {}
        try:
            st = PromptExperimentStatus.model_validate(raw_status)
        except ValidationError:
            st = PromptExperimentStatus()
        st = st.model_copy(update={"observed_generation": self.generation})
        try:
            spec = PromptExperimentSpec.model_validate(self.body.get("spec") or {})
        except ValidationError as exc:
            first = exc.errors()[0]
            where = "spec." + ".".join(str(p) for p in first["loc"])
            st = self.degrade(st, "InvalidSpec", f"{where}: {first['msg']}")
            return self.finish(st, None, 300.0)
        interval = parse_duration(spec.analysis.interval)
        try:
            st = await self.reconcile(spec, st)
        except (DeliveryError, KubeError) as exc:
            reason = getattr(exc, "reason", type(exc).__name__)
            st = self.degrade(st, reason, str(exc))
            self.delivered = "failed"
        return self.finish(st, spec, interval)

    async def reconcile(self, spec: PromptExperimentSpec, st: PromptExperimentStatus) -> PromptExperimentStatus:
        failpoint("reconcile-start")
        delivery = await self.delivery_factory(spec, st)
        source = await delivery.read()
        failpoint("after-source-read")
        if st.original is None:
            st = st.model_copy(update={"original": lc.original_from(source.keys)})
        if source.argo_managed and not st.delivery.argo_managed:
            self.event(
                "ArgoManagedConfig",
                "the ConfigMap is tracked by Argo CD, whose self-heal reverts direct patches: use delivery.mode Git",
                warning=True,
            )
        st = st.model_copy(
            update={
                "delivery": st.delivery.model_copy(
                    update={"argo_managed": source.argo_managed, "mode": spec.delivery.mode}
                )
            }
        )
        st = self.ensure_test(spec, st, source)
        if self.is_degraded():
            return st
        st = lc.approve(spec, st, self.generation, self.now())
        assert st.original is not None
        assert st.test is not None
        desired = lc.desired_keys(spec, st, st.original)
        assert desired is not None
        st = await self.deliver(spec, st, delivery, source, desired)
        if self.is_degraded():
            return st
        if isinstance(delivery, GitDelivery):
            st, self.awaiting_merge = delivery.track(st, source, desired, self.now(), self.event)
            if self.awaiting_merge:
                return st
        backend = self.backend_factory(spec)
        st = await self.verify(spec, st, backend, desired, delivery)
        if st.delivery.verified_at is None or self.is_degraded():
            return st
        if lc.outcome_of(st) is None and st.evidence.decision == "continue":
            try:
                st = await self.collect_and_decide(spec, st, backend)
            except BackendError as exc:
                # Nothing of this poll is counted (both reads must succeed): say why, back off, retry.
                return self.degrade(st, type(exc).__name__, f"cannot read votes from {spec.backend.url}: {exc}")
            if st.pending_promotion is not None:
                # Record the decision before the config changes, then deliver it on the next pass.
                self.event("Decided", st.pending_promotion.summary)
                failpoint("after-decision")
        elif st.pending_promotion is not None:
            st = lc.conclude(st, st.delivery.revision, self.now())
            failpoint("after-conclude")
            record = st.promotions[-1]
            reason = "Promoted" if record.outcome == "challenger" else "Concluded"
            self.event(reason, record.summary)
        if self.evaluations is not None:
            st, self.gate_block = await self.evaluations.step(spec, st, self.generation, self.now(), self.event)
        return st

    def ensure_test(
        self, spec: PromptExperimentSpec, st: PromptExperimentStatus, source: SourceState
    ) -> PromptExperimentStatus:
        if not lc.needs_new_test(spec, st):
            return st
        champion = lc.champion_text(spec, source.keys.prompt)
        if champion is None:
            return self.degrade(
                st, "NoChampion", "summarize.prompt is not configured and spec.champion.prompt is not set"
            )
        if champion == spec.challenger.prompt:
            return self.degrade(
                st,
                "InvalidSpec",
                "spec.challenger.prompt equals the configured summarize.prompt (the champion)",
            )
        old = st.test.id if st.test else None
        st = lc.start_test(spec, st, champion, self.now())
        assert st.test is not None
        self.event("TestStarted", f"test {st.test.id} started" + (f" (supersedes {old})" if old else ""))
        return st

    async def deliver(
        self,
        spec: PromptExperimentSpec,
        st: PromptExperimentStatus,
        delivery: Delivery,
        source: SourceState,
        desired: ManagedKeys,
    ) -> PromptExperimentStatus:
        dh = managed_hash(desired)
        d = st.delivery
        if source.keys == desired:
            st = self.cond(st, C.CONFIG_DRIFT, False, "InSync", "the managed keys are as the experiment wants")
            if d.desired_hash != dh:
                # Already as desired (someone, or a previous pass that died, wrote it): adopt it, and roll
                # unless it is live already (a pass that died between the write and the roll left it unrolled).
                result = await delivery.write(desired, ensure_rolled=True)
                self.delivered = "changed" if result.rolled else None
                st = st.model_copy(
                    update={
                        "delivery": d.model_copy(
                            update={
                                "desired_hash": dh,
                                "applied_hash": dh,
                                "revision": result.revision,
                                "applied_at": self.now(),
                                "verified_at": None,
                            }
                        )
                    }
                )
            elif d.verified_at is None and d.revision:
                result = await delivery.write(desired, ensure_rolled=True)
                self.delivered = "changed" if result.rolled else None
            return st
        if d.applied_hash == dh and d.verified_at is not None:
            message = "the managed keys were changed outside the experiment (" + _diff(source.keys, desired) + ")"
            st = self.cond(st, C.CONFIG_DRIFT, True, "DriftDetected", message)
            self.event("ConfigDrift", message, warning=True)
            if spec.delivery.on_drift == "Stop":
                return self.degrade(st, "ConfigDrift", message + "; spec.delivery.onDrift is Stop")
        if d.verified_at is not None and lc.outcome_of(st) is None and st.evidence.decision == "continue":
            # The write restarts the backend, which forgets every vote: read them once more first.
            try:
                st = await self.collect_and_decide(spec, st, self.backend_factory(spec), decide=False)
            except BackendError as exc:
                self.event("FinalReadFailed", f"could not read votes before the config change: {exc}", warning=True)
        if isinstance(delivery, GitDelivery) and delivery.awaiting_merge(d, desired):
            return st  # pushed for review already: nothing to write until it is merged
        # Intent first: the original config, the test and the counts are in status before the write
        # (a conflict here means nothing was written; the next pass starts from the fresh object).
        await self.persist(self.intent_status(st))
        failpoint("before-config-write")
        result = await delivery.write(desired)
        failpoint("after-config-write")
        self.delivered = "changed" if result.changed or result.rolled else "unchanged"
        self.event("ConfigDelivered", f"{spec.delivery.mode}: {_diff(source.keys, desired)} ({result.revision})")
        delivery_status = st.delivery.model_copy(
            update={
                "desired_hash": dh,
                "applied_hash": dh,
                "revision": result.revision,
                "applied_at": self.now(),
                "verified_at": None,
            }
        )
        if get_condition(st.conditions, C.CONFIG_DRIFT) is None:
            # Record "in sync" with the first write, not at the first idle poll (a status write for nothing).
            st = self.cond(st, C.CONFIG_DRIFT, False, "InSync", "the managed keys are as the experiment wants")
        return st.model_copy(update={"delivery": delivery_status})

    def intent_status(self, st: PromptExperimentStatus) -> PromptExperimentStatus:
        """The status written just before a config change: a Running test is no longer Running or Ready.

        Without this, a new test's id appears next to the old config's phase Running and Ready=True until
        the pass ends. Only Pending and Running are rewritten (a first delivery shows Progressing too):
        Concluded (and Promoting) are read back by the lifecycle.
        """
        if st.phase not in ("Pending", "Running"):
            return st
        st = self.cond(st, C.READY, False, "NotVerified", "")
        st = self.cond(st, C.PROGRESSING, True, "Delivering", "waiting for the backend to report the new config")
        return st.model_copy(update={"phase": "Progressing", "message": "delivering config"})

    async def verify(
        self,
        spec: PromptExperimentSpec,
        st: PromptExperimentStatus,
        backend: BackendReader,
        desired: ManagedKeys,
        delivery: Delivery,
    ) -> PromptExperimentStatus:
        if st.delivery.verified_at is not None:
            return st
        # An old pod answers with the old prompts (and, when only a text changed, the same flags) until it
        # is replaced: the flags count only once the rollout is complete.
        rollout = await delivery.rollout_pending()
        expected = lc.expected_flags(desired)
        seen: dict[str, object]
        try:
            flags = await backend.flags()
            seen = {k: flags.get(k) for k in expected}
            ok = all(flags.get(k) == v for k, v in expected.items())
            if ok and desired.ab_testing_enabled:
                ok = await backend.ab_ready()
                seen = {**seen, "ab_ready": ok}
        except BackendError as exc:
            ok, seen = False, {"error": str(exc)}
        if ok and rollout is None:
            self.event("ConfigVerified", f"backend reports {_flags(expected)}")
            failpoint("after-verify")
            return st.model_copy(update={"delivery": st.delivery.model_copy(update={"verified_at": self.now()})})
        applied_at = st.delivery.applied_at or self.now()
        waited = (self.now() - applied_at).total_seconds()
        if waited > parse_duration(spec.delivery.verify_timeout):
            return self.degrade(
                st,
                "VerifyTimeout",
                f"expected {_flags(expected)}{' and /summarize/ab serving' if desired.ab_testing_enabled else ''}"
                f" within {spec.delivery.verify_timeout}; backend reports {_flags(seen)}"
                + (f"; rollout not finished: {rollout}" if rollout else ""),
            )
        return st

    async def collect_and_decide(
        self,
        spec: PromptExperimentSpec,
        st: PromptExperimentStatus,
        backend: BackendReader,
        decide: bool = True,
    ) -> PromptExperimentStatus:
        st, restarted = await poll_backend(spec, st, backend, self.now(), self.evaluations)
        failpoint("after-poll")
        if restarted:
            self.event("BackendRestarted", "the backend restarted (its stores start again); counted votes are kept")
        if not decide:
            return st
        assert st.test is not None
        a = assess(lc.settings_of(st.test), st.votes.challenger_wins, st.votes.champion_wins, st.evidence.max_e_value)
        st = lc.apply_assessment(spec, st, a, self.generation, self.now())
        if a.decision != "continue":
            self.decision = a.decision
        return st

    # -- report ------------------------------------------------------------------------------------------
    def finish(self, st: PromptExperimentStatus, spec: PromptExperimentSpec | None, interval: float) -> Report:
        st = self.conditions(st)
        fast = st.phase in ("Progressing", "Promoting") and not self.degraded and not self.awaiting_merge
        return Report(
            status=st,
            events=self.events,
            next_in=min(interval, PROGRESS_POLL_SECONDS) if fast else interval,
            failed=self.degraded is not None,
            delivered=self.delivered,
            decision=self.decision,
        )

    def conditions(self, st: PromptExperimentStatus) -> PromptExperimentStatus:
        verified = st.delivery.verified_at is not None
        outcome = lc.outcome_of(st)
        awaiting = st.evidence.decision == "challenger" and st.pending_promotion is None and outcome is None
        if self.degraded:
            phase = "Degraded"
        elif st.pending_promotion is not None:
            phase = "Promoting"
        elif outcome is not None:
            phase = "Concluded"
        elif awaiting:
            phase = "AwaitingApproval"
        elif not verified:
            phase = "Progressing"
        else:
            phase = "Running"
        reason, message = self.degraded or ("", "")
        st = self.cond(st, C.DEGRADED, self.degraded is not None, reason or "AsExpected", message)
        progressing = phase in ("Progressing", "Promoting")
        st = self.cond(
            st,
            C.PROGRESSING,
            progressing,
            "Delivering" if progressing else "Settled",
            "waiting for the backend to report the new config" if progressing else "",
        )
        st = self.cond(st, C.READY, verified and not self.degraded, "Verified" if verified else "NotVerified", "")
        st = self.cond(
            st,
            C.AWAITING_APPROVAL,
            awaiting,
            ("EvaluationGate" if self.gate_block else "ManualPolicy") if awaiting else "NotAwaiting",
            (self.gate_block or st.evidence.reason) if awaiting else "",
        )
        decided = st.evidence.decision != "continue"
        st = self.cond(st, C.DECIDED, decided, st.evidence.decision if decided else "Collecting", st.evidence.reason)
        promoted = outcome == "challenger" and phase == "Concluded"
        st = self.cond(
            st,
            C.PROMOTED,
            promoted,
            "ChallengerPromoted" if promoted else "NotPromoted",
            st.promotions[-1].summary if promoted else "",
        )
        message = message or {
            "Progressing": "delivering config and waiting for the backend to report it",
            "Running": "collecting votes",
            "AwaitingApproval": self.gate_block or "challenger won; set spec.promotion.approved: true to promote",
            "Promoting": "delivering the decision",
            "Concluded": st.promotions[-1].summary if st.promotions else "concluded",
        }.get(phase, "")
        return st.model_copy(update={"phase": phase, "message": message})


def _flags(flags: Mapping[str, object]) -> str:
    return ", ".join(f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in flags.items())


def _diff(current: ManagedKeys, desired: ManagedKeys) -> str:
    parts = []
    if current.prompt != desired.prompt:
        parts.append("summarize.prompt changed")
    if current.prompt_b != desired.prompt_b:
        parts.append("summarize.prompt_b " + ("removed" if desired.prompt_b is None else "set"))
    if current.feedback_enabled != desired.feedback_enabled:
        parts.append(f"feedback.enabled={str(desired.feedback_enabled).lower()}")
    if current.ab_testing_enabled != desired.ab_testing_enabled:
        parts.append(f"ab_testing.enabled={str(desired.ab_testing_enabled).lower()}")
    return ", ".join(parts) or "no change"
