"""One reconcile pass of a PromptExperiment: observe -> plan (pure core) -> act -> report.

Called by the experiment's daemon at the poll interval. Everything the pass must remember lives in status,
which is written through ``persist`` (with a resourceVersion precondition) before any step that restarts the
backend. Each step below returns the status it leads to and the :class:`Effects` it adds (events, a reason
to degrade, what was delivered or decided); the last one, :func:`report`, settles phase and conditions.
The pass sees ports only: a :class:`~canopy_operator.delivery.base.Delivery`, an
:class:`~canopy_operator.sources.base.AppProbe` and :class:`~canopy_operator.sources.base.VoteSource`, a
:class:`~canopy_operator.sources.prompts.PromptStore`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol

from pydantic import ValidationError

from canopy_operator.api.base import parse_duration
from canopy_operator.api.spec import PromptExperimentSpec
from canopy_operator.api.status import PromptExperimentStatus
from canopy_operator.core import lifecycle as lc
from canopy_operator.core import plan, startrecord
from canopy_operator.core.backends import BackendNotAllowed, backend_url
from canopy_operator.core.changes import change_of
from canopy_operator.core.stats import assess
from canopy_operator.core.status import (
    FRESH_WRITE_SECONDS,
    INVALID_SPEC_POLL_SECONDS,
    PassFindings,
    StatusUnreadable,
    intent,
    next_poll,
    read_status,
    settle,
    unreadable_status,
)
from canopy_operator.core.values import ManagedKeys, layout_for
from canopy_operator.delivery.base import Delivery, DeliveryError, Failpoint, SourceState, no_failpoint
from canopy_operator.k8s.errors import KubeError
from canopy_operator.service.collect import poll_votes
from canopy_operator.service.evaluations import Evaluations
from canopy_operator.service.parsed import ParsedObject
from canopy_operator.service.report import Effects, Report
from canopy_operator.sources.base import AppProbe, SourceError, VoteSource
from canopy_operator.sources.prompts import PromptStore, StoreRefused

INTERNAL_ERROR = "InternalError"
INTERNAL_MESSAGE_LIMIT = 200


def internal_error_message(exc: BaseException) -> str:
    """The exception's type and the start of its message, on one line (never a traceback or a long text)."""
    text = " ".join(str(exc).split())
    text = text if len(text) <= INTERNAL_MESSAGE_LIMIT else text[: INTERNAL_MESSAGE_LIMIT - 3] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Backend(AppProbe, VoteSource, Protocol):
    """The application the experiment runs on: what it serves, and where its votes are read."""


@dataclass(frozen=True)
class Ports:
    """What one pass works with; built by the caller for each pass."""

    delivery: Callable[[PromptExperimentSpec, PromptExperimentStatus], Awaitable[Delivery]]
    backend: Callable[[PromptExperimentSpec], Backend]
    prompts: Callable[[PromptExperimentSpec], PromptStore]
    persist: Callable[[PromptExperimentStatus], Awaitable[None]]
    now: Callable[[], datetime]
    evaluations: Evaluations | None = None
    failpoint: Failpoint = no_failpoint
    backend_hosts: tuple[str, ...] = ()
    """Hosts a backend URL may name besides the experiment's own namespace (``Settings.backend_hosts``)."""
    parsed: ParsedObject | None = None
    """The daemon's last parsed spec and status (:mod:`.parsed`); None: parse every pass."""
    fence: Callable[[], None] = lambda: None
    """Raises :class:`~canopy_operator.k8s.errors.Conflict` when the object as the watch shows it now is being
    deleted or has a new generation: checked before a config write that no status write precedes (an intent's
    resourceVersion precondition is that fence for the others)."""


@dataclass(frozen=True)
class Context:
    """The fixed inputs of a pass."""

    spec: PromptExperimentSpec
    generation: int
    ports: Ports
    uid: str = ""
    """The experiment's metadata.uid (what a start record names; empty: no record is written or read)."""


async def reconcile(body: Mapping[str, Any], ports: Ports) -> Report:
    """The whole story of a pass, from the object as read to the report."""
    meta = body.get("metadata", {})
    generation = int(meta.get("generation") or 0)
    raw = dict(body.get("status") or {})
    parsed = ports.parsed or ParsedObject()
    try:
        st = parsed.get("status", meta.get("resourceVersion"), raw, read_status)
    except StatusUnreadable as exc:
        degraded = unreadable_status(raw, exc, generation, ports.now())
        empty = PromptExperimentStatus(phase="Degraded", message=str(degraded["message"]))
        return Report(status=empty, failed=True, next_in=INVALID_SPEC_POLL_SECONDS, raw_status=degraded)
    st = st.model_copy(update={"observed_generation": generation})
    try:
        spec_key = (meta.get("uid"), generation) if generation else None
        spec = parsed.get("spec", spec_key, body.get("spec") or {}, PromptExperimentSpec.model_validate)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = "spec." + ".".join(str(p) for p in first["loc"])
        effects = Effects().degrade("InvalidSpec", f"{where}: {first['msg']}")
        return report(st, effects, INVALID_SPEC_POLL_SECONDS, generation, ports.now())
    namespace = str(body.get("metadata", {}).get("namespace") or "")
    try:
        spec = with_server_urls(spec, namespace, ports.backend_hosts)
    except BackendNotAllowed as exc:
        effects = Effects().degrade("BackendNotAllowed", str(exc))
        return report(st, effects, INVALID_SPEC_POLL_SECONDS, generation, ports.now())
    ctx = Context(spec, generation, ports, uid=str(meta.get("uid") or ""))
    try:
        st, effects = await run_steps(ctx, st)
    except (DeliveryError, KubeError) as exc:
        reason = getattr(exc, "reason", type(exc).__name__)
        effects = Effects(delivered="failed").degrade(reason, str(exc))
    except Exception as exc:  # the last resort: every failure is a condition (security-model rule 5)
        effects = Effects().degrade(INTERNAL_ERROR, internal_error_message(exc))
    return report(st, effects, parse_duration(spec.analysis.interval), generation, ports.now())


def with_server_urls(spec: PromptExperimentSpec, namespace: str, allowed: tuple[str, ...]) -> PromptExperimentSpec:
    """Every server the spec names (the backend, MLflow, Phoenix) checked by one rule and made explicit, before
    anything is sent (:func:`canopy_operator.core.backends.backend_url`); raises ``BackendNotAllowed``."""
    backend = spec.backend.model_copy(update={"url": backend_url(spec.backend.url, namespace, allowed)})
    votes, prompts = spec.votes, spec.prompts
    if votes.mlflow is not None:
        url = backend_url(votes.mlflow.tracking_url, namespace, allowed, field="spec.votes.mlflow.trackingUrl")
        votes = votes.model_copy(update={"mlflow": votes.mlflow.model_copy(update={"tracking_url": url})})
    if votes.phoenix is not None:
        url = backend_url(votes.phoenix.url, namespace, allowed, field="spec.votes.phoenix.url")
        votes = votes.model_copy(update={"phoenix": votes.phoenix.model_copy(update={"url": url})})
    if prompts.mlflow is not None:
        url = backend_url(prompts.mlflow.tracking_url, namespace, allowed, field="spec.prompts.mlflow.trackingUrl")
        prompts = prompts.model_copy(update={"mlflow": prompts.mlflow.model_copy(update={"tracking_url": url})})
    return spec.model_copy(update={"backend": backend, "votes": votes, "prompts": prompts})


async def run_steps(ctx: Context, st: PromptExperimentStatus) -> tuple[PromptExperimentStatus, Effects]:
    """Observe the config source, start or keep the test, deliver, verify, collect and decide, evaluate.

    spec.suspend stops the pass before anything is read or written; spec.abort turns the active test into a
    pending ``aborted`` outcome, delivered (champion only) like a decision; Shadow mode writes nothing."""
    ctx.ports.failpoint("reconcile-start")
    if ctx.spec.suspend:
        return suspend(ctx, st)
    resumed = st.suspended_at is not None
    st = st.model_copy(update={"suspended_at": None})
    delivery = await ctx.ports.delivery(ctx.spec, st)
    source = await delivery.read()
    ctx.ports.failpoint("after-source-read")
    st, effects = observe_source(ctx, st, source)
    if effects.degraded:
        return st, effects
    if resumed:
        effects = effects.event("Resumed", "spec.suspend is false: polling and delivering again")
    st, effects = await start_test(ctx, st, source, effects)
    if effects.degraded:
        return st, effects
    st = lc.approve(ctx.spec, st, ctx.generation, ctx.ports.now())
    aborted = lc.abort(ctx.spec, st, ctx.ports.now())
    if aborted is not st:
        st = aborted
        assert st.pending_promotion is not None
        effects = effects.event("Aborted", st.pending_promotion.summary)
    assert st.original is not None
    assert st.test is not None
    desired = lc.desired_keys(ctx.spec, st, st.original)
    assert desired is not None
    backend = ctx.ports.backend(ctx.spec)
    if lc.shadow(ctx.spec):
        st, effects = shadow_check(ctx, st, source, effects)
        if effects.degraded:
            return st, effects
    else:
        st, effects, written = await deliver(ctx, st, delivery, backend, source, desired, effects)
        if effects.degraded:
            return st, effects
        st, effects = track(ctx, st, delivery, source, desired, written, effects)
        if effects.awaiting_review:
            return st, effects
    st, effects = await verify(ctx, st, delivery, backend, desired, effects)
    if st.delivery.verified_at is None or effects.degraded:
        return st, effects
    if lc.outcome_of(st) is None and st.evidence.decision == "continue":
        st, effects = await collect_and_decide(ctx, st, backend, effects)
    elif st.pending_promotion is not None:
        st, effects = await conclude(ctx, st, effects)
    return await evaluate(ctx, st, effects)


def suspend(ctx: Context, st: PromptExperimentStatus) -> tuple[PromptExperimentStatus, Effects]:
    """spec.suspend: nothing is read, written, polled or started; every count and position is kept."""
    effects = Effects(suspended=True)
    if st.suspended_at is None:
        st = st.model_copy(update={"suspended_at": ctx.ports.now()})
        effects = effects.event("Suspended", "spec.suspend is true: no polling, no config writes, no evaluations")
    return st, effects


def shadow_check(
    ctx: Context, st: PromptExperimentStatus, source: SourceState, effects: Effects
) -> tuple[PromptExperimentStatus, Effects]:
    """Shadow mode: the backend must already run this A/B test (feedback and A/B testing on, the champion as its
    prompt and the challenger as its second prompt); nothing is written either way."""
    assert st.test is not None
    keys, layout = source.keys, layout_for(ctx.spec.backend.generation)
    problems = []
    if keys.prompt != st.test.champion_prompt:
        problems.append(f"{layout.dotted('prompt')} is not the champion")
    if keys.prompt_b != ctx.spec.challenger_ref:
        problems.append(f"{layout.dotted('prompt_b')} is not spec.challenger")
    if not keys.feedback_enabled or not keys.ab_testing_enabled:
        problems.append("feedback and ab_testing must both be enabled")
    if problems and lc.outcome_of(st) is None and st.pending_promotion is None:
        message = "Shadow mode decides on the A/B test the backend runs, and it runs another: " + "; ".join(problems)
        return st, effects.degrade("ShadowMismatch", message)
    return st, effects


def observe_source(
    ctx: Context, st: PromptExperimentStatus, source: SourceState
) -> tuple[PromptExperimentStatus, Effects]:
    """Snapshot the original keys once (from this experiment's start record when the source carries one: then
    the keys are the ones its own first write made); note a source Argo CD self-heals."""
    effects = Effects()
    if st.original is None:
        try:
            recorded = startrecord.decode(source.record, ctx.uid) if ctx.uid else None
        except startrecord.StartRecordInvalid as exc:
            message = f"annotation {startrecord.ANNOTATION} of the config source: {exc} (remove it to take the keys"
            return st, effects.degrade("InvalidStartRecord", message + " there now as the original config)")
        st = st.model_copy(update={"original": recorded or lc.original_from(source.keys)})
    if source.argo_managed and not st.delivery.argo_managed:
        message = "the ConfigMap is tracked by Argo CD, whose self-heal reverts direct patches: use delivery.mode Git"
        effects = effects.event("ArgoManagedConfig", message, warning=True)
    update = {"argo_managed": source.argo_managed, "mode": ctx.spec.delivery.mode}
    return st.model_copy(update={"delivery": st.delivery.model_copy(update=update)}), effects


async def start_test(
    ctx: Context, st: PromptExperimentStatus, source: SourceState, effects: Effects
) -> tuple[PromptExperimentStatus, Effects]:
    """A new test when the spec asks for one: its arms from the prompt store. While spec.abort is true no new
    test replaces the one there is (it is aborted instead)."""
    if not lc.needs_new_test(ctx.spec, st) or (ctx.spec.abort and st.test is not None):
        return st, effects
    try:
        arms = await ctx.ports.prompts(ctx.spec).arms(ctx.spec, source.keys.prompt)
    except StoreRefused as exc:
        return st, effects.degrade(exc.reason, str(exc))
    prompt_key = layout_for(ctx.spec.backend.generation).dotted("prompt")
    if arms is None:
        message = f"{prompt_key} is not configured and spec.champion.prompt is not set"
        return st, effects.degrade("NoChampion", message)
    if arms.champion == arms.challenger:
        message = f"spec.challenger.prompt equals the configured {prompt_key} (the champion)"
        return st, effects.degrade("InvalidSpec", message)
    old = st.test.id if st.test else None
    st = lc.start_test(
        ctx.spec,
        st,
        arms.champion,
        ctx.ports.now(),
        champion_version=arms.champion_version,
        challenger_version=arms.challenger_version,
    )
    assert st.test is not None
    return st, effects.event("TestStarted", f"test {st.test.id} started" + (f" (supersedes {old})" if old else ""))


async def deliver(
    ctx: Context,
    st: PromptExperimentStatus,
    delivery: Delivery,
    backend: Backend,
    source: SourceState,
    desired: ManagedKeys,
    effects: Effects,
) -> tuple[PromptExperimentStatus, Effects, tuple[str | None, str | None]]:
    """Act on the delivery plan; returns the review branch and URL a write reported (or Nones)."""
    now = ctx.ports.now
    p = plan.plan_delivery(
        ctx.spec, st, source.keys, desired, reviewed=delivery.traits.reviewed, generation=ctx.generation, now=now()
    )
    st, effects = p.status, effects.with_events(p.events)
    nothing: tuple[str | None, str | None] = (None, None)
    if p.action == "stop":
        return st, effects.degrade("ConfigDrift", p.stop_message), nothing
    if p.action in ("adopt", "reroll"):
        result = await delivery.write(desired, ensure_rolled=True)
        effects = replace(effects, delivered="changed" if result.rolled else None)
        if p.action == "adopt":
            st = plan.record_write(st, desired, result.revision, now())
        return st, effects, nothing
    if p.action == "none":
        return st, effects, nothing
    if p.final_read:
        try:
            st, effects = await collect_and_decide(ctx, st, backend, effects, decide=False)
        except SourceError as exc:
            message = f"could not read votes before the config change: {exc}"
            effects = effects.event("FinalReadFailed", message, warning=True)
    if p.action == "await_review":
        return st, effects, nothing
    record = start_record(ctx, st, delivery, source, p.final_read)
    if record is None:
        # Intent first: the original config, the test and the counts are in status before the write
        # (a conflict here means nothing was written; the next pass starts from the fresh object).
        await ctx.ports.persist(intent(st, ctx.generation, now()))
    else:
        ctx.ports.fence()  # deleted or edited meanwhile: nothing is written, the pass is redone (or ends)
    ctx.ports.failpoint("before-config-write")
    result = await delivery.write(desired, record=record)
    ctx.ports.failpoint("after-config-write")
    changed = result.changed or result.rolled
    recorded = record is not None and result.changed  # unchanged text: nothing (and no record) was written
    effects = replace(effects, delivered="changed" if changed else "unchanged", recorded_start=recorded)
    change = plan.describe_change(source.keys, desired, layout_for(ctx.spec.backend.generation))
    effects = effects.event("ConfigDelivered", f"{ctx.spec.delivery.mode}: {change} ({result.revision})")
    st = plan.record_write(st, desired, result.revision, now())
    st = plan.record_first_sync(st, ctx.generation, now())
    return st, effects, (result.review_branch, result.review_url)


def start_record(
    ctx: Context, st: PromptExperimentStatus, delivery: Delivery, source: SourceState, final_read: bool
) -> str | None:
    """The start record a write carries instead of an intent written to status before it, or None.

    Only an experiment's first config write (nothing applied yet: no counts to keep, and no earlier test whose
    status a crash could confuse with this one), to a source that carries records and that Argo CD does not
    own (its self-heal could drop the annotation with the change): what the intent would protect is then the
    original config alone, and the test is the spec's (the same id again after a crash). The status of such a
    pass waits for the rollout like any written intent's (``core.status.defer_write``)."""
    if not (ctx.uid and delivery.traits.carries_record) or source.argo_managed or final_read:
        return None
    if st.delivery.applied_hash or st.original is None or st.test_history:
        return None
    record = startrecord.encode(ctx.uid, st.original)
    if record is None or source.annotation_bytes + len(record) > startrecord.MAX_ANNOTATION_BYTES:
        return None  # the API server keeps at most 256 KiB of annotations: the intent goes to status instead
    return record


def track(
    ctx: Context,
    st: PromptExperimentStatus,
    delivery: Delivery,
    source: SourceState,
    desired: ManagedKeys,
    written: tuple[str | None, str | None],
    effects: Effects,
) -> tuple[PromptExperimentStatus, Effects]:
    """The delivery's bookkeeping (review branch, pull request, deployed revision); wait for a merge."""
    traits = delivery.traits
    tracking = plan.track_delivery(
        st,
        current=source.keys,
        version=source.version,
        desired=desired,
        reviewed=traits.reviewed,
        versioned=traits.versioned,
        target=traits.target,
        review_branch=written[0],
        review_url=written[1],
        change=change_of(st)[0],
        now=ctx.ports.now(),
    )
    effects = replace(effects.with_events(tracking.events), awaiting_review=tracking.awaiting_review)
    return tracking.status, effects


async def verify(
    ctx: Context,
    st: PromptExperimentStatus,
    delivery: Delivery,
    backend: Backend,
    desired: ManagedKeys,
    effects: Effects,
) -> tuple[PromptExperimentStatus, Effects]:
    """Measure (rollout, flags, the A/B endpoint), then let the core say what it means."""
    if st.delivery.verified_at is not None:
        return st, effects
    rollout = await delivery.rollout_pending()
    timeout = parse_duration(ctx.spec.delivery.verify_timeout)

    def waiting(rolling: str | None = None) -> tuple[PromptExperimentStatus, Effects]:
        applied = st.delivery.applied_at or ctx.ports.now()
        fresh = (ctx.ports.now() - applied).total_seconds() < FRESH_WRITE_SECONDS
        return st, replace(effects, fresh_rollout=fresh, rolling=rolling)

    if rollout is not None and not plan.verify_overdue(st.delivery.applied_at, timeout, ctx.ports.now()):
        # Old pods still answer: whatever the backend says now cannot verify the config, so it is not asked
        # (two requests fewer per experiment per pass while hundreds roll out at once, issue #20).
        return waiting(rolling=ctx.spec.delivery.config_map.deployment)
    expected = lc.expected_flags(desired)
    seen: dict[str, object]
    try:
        flags = await backend.flags()
        seen = {k: flags.get(k) for k in expected}
        serving = plan.flags_match(expected, flags)
        if serving and desired.ab_testing_enabled:
            serving = await backend.ab_ready()
            seen = {**seen, "ab_ready": serving}
    except SourceError as exc:
        serving, seen = False, {"error": str(exc)}
    verdict = plan.verify_verdict(
        expected=expected,
        serving=serving,
        seen=seen,
        ab_testing=bool(desired.ab_testing_enabled),
        rollout=rollout,
        applied_at=st.delivery.applied_at,
        timeout=timeout,
        timeout_text=ctx.spec.delivery.verify_timeout,
        now=ctx.ports.now(),
    )
    if verdict.state == "timed_out":
        return st, effects.degrade("VerifyTimeout", verdict.message)
    if verdict.state == "waiting":
        return waiting()
    effects = effects.event("ConfigVerified", verdict.message)
    ctx.ports.failpoint("after-verify")
    return st.model_copy(update={"delivery": st.delivery.model_copy(update={"verified_at": ctx.ports.now()})}), effects


async def collect_and_decide(
    ctx: Context, st: PromptExperimentStatus, backend: Backend, effects: Effects, *, decide: bool = True
) -> tuple[PromptExperimentStatus, Effects]:
    """Count the new votes; unless only reading before a config change, assess and record a decision."""
    assert st.test is not None
    try:
        await ctx.ports.prompts(ctx.spec).check(st.test)
    except StoreRefused as exc:
        if not decide:
            raise SourceError(str(exc)) from None
        return st, effects.degrade(exc.reason, str(exc))  # nothing counted: votes of two versions never pool
    try:
        st, restarted = await poll_votes(ctx.spec, st, backend, ctx.ports.now(), ctx.ports.evaluations)
    except SourceError as exc:
        if not decide:
            raise
        # Nothing of this poll is counted (both reads must succeed): say why, back off, retry.
        return st, effects.degrade(type(exc).__name__, f"cannot read votes from {backend.where}: {exc}")
    ctx.ports.failpoint("after-poll")
    if restarted:
        effects = effects.event(
            "BackendRestarted", "the backend restarted (its stores start again); counted votes are kept"
        )
    if not decide:
        return st, effects
    assert st.test is not None
    votes = st.votes
    a = assess(lc.settings_of(st.test), votes.challenger_wins, votes.champion_wins, st.evidence.max_e_value)
    st = lc.apply_assessment(ctx.spec, st, a, ctx.generation, ctx.ports.now())
    st = lc.record_trajectory(st, a, ctx.ports.now())
    if a.decision != "continue":
        effects = replace(effects, decision=a.decision)
    if st.pending_promotion is not None:
        # Record the decision before the config changes, then deliver it on the next pass.
        effects = effects.event("Decided", st.pending_promotion.summary)
        ctx.ports.failpoint("after-decision")
    return st, effects


async def conclude(
    ctx: Context, st: PromptExperimentStatus, effects: Effects
) -> tuple[PromptExperimentStatus, Effects]:
    """The decided config is live: the prompt store records the winner, the history one record per test."""
    pending = st.pending_promotion
    test = st.test
    assert pending is not None
    assert test is not None
    store = ctx.ports.prompts(ctx.spec)
    now = ctx.ports.now()
    if lc.shadow(ctx.spec):
        st = lc.conclude(st, lc.SHADOW_REVISION, now)
        return st, effects.event("ShadowConcluded", st.promotions[-1].summary + " (shadow: nothing written)")
    if pending.store_moved_at is None and pending.outcome != "aborted":
        winner = lc.current_champion(ctx.spec, st) or test.champion_prompt
        try:
            change = await store.promote(winner, test)
        except StoreRefused as exc:
            return st, effects.degrade(exc.reason, str(exc))
        ctx.ports.failpoint("after-store-promote")
        if change is not None:
            pending = pending.model_copy(update={"store_moved_at": now, "store_revision": change})
            st = st.model_copy(update={"pending_promotion": pending})
            effects = effects.event("PromptStorePromoted", change)
    if pending.store_moved_at is not None and (now - pending.store_moved_at).total_seconds() < store.settle_seconds:
        return st, effects  # the application's alias cache may still serve the old champion
    revision = pending.store_revision or st.delivery.revision
    st = lc.conclude(st, revision, now)
    ctx.ports.failpoint("after-conclude")
    record = st.promotions[-1]
    reason = {"challenger": "Promoted", "aborted": "AbortCompleted"}.get(record.outcome, "Concluded")
    return st, effects.event(reason, record.summary)


async def evaluate(
    ctx: Context, st: PromptExperimentStatus, effects: Effects
) -> tuple[PromptExperimentStatus, Effects]:
    """Evaluation Jobs: results read, one started when due, the promotion gate's verdict."""
    evaluations = ctx.ports.evaluations
    if evaluations is None:
        return st, effects
    events: list[tuple[str, str, str]] = []

    def sink(reason: str, message: str, warning: bool) -> None:
        events.append(("Warning" if warning else "Normal", reason, message))

    st, gate_block = await evaluations.step(ctx.spec, st, ctx.generation, ctx.ports.now(), sink)
    return st, replace(effects.with_events(tuple(events)), gate_block=gate_block)


def report(st: PromptExperimentStatus, effects: Effects, interval: float, generation: int, now: datetime) -> Report:
    """Settle phase and conditions; when to run again."""
    findings = PassFindings(
        effects.degraded,
        effects.awaiting_review,
        effects.gate_block,
        effects.fresh_rollout,
        effects.suspended,
        rolling=effects.rolling is not None,
    )
    st = settle(st, findings, generation, now)
    next_in = next_poll(st.phase, findings, interval)
    return Report(
        status=st,
        events=effects.events,
        next_in=next_in,
        failed=effects.degraded is not None,
        delivered=effects.delivered,
        decision=effects.decision,
        rolling=effects.rolling,
        recorded_start=effects.recorded_start,
    )
