"""Evaluation I/O of one reconcile pass: the negative-feedback ledger Secret, dataset Secrets and Jobs.

Deciding happens in ``core.evaluation`` (jobs, results, trigger, gate) and ``core.ledger``; this module reads the Jobs,
asks the core what to do, does it through the gateway and reports events. One instance per pass.

Before a Job starts, the operator-level rules hold (security-model rule 1): its image is the operator's own or on
``CANOPY_EVALUATION_IMAGES`` (``core.credentials.image_refusal``), and the judge's API key Secret opted in for the
judge endpoint (``service.credentials.judge_refusal``); otherwise no Job is made, and an ``EvaluationNotStarted``
event and the EvaluationPassed condition say why. Dataset Secrets are deleted by the names the operator knows
(status and the Jobs' annotations): it never lists Secrets.

While a run's Job runs, each pass reads the tail of its pod's log for the runner's progress; once it ends, the
whole log (bounded) is read once, its case lines checked (``core.evaluation.caselog``) and kept in results
Secrets owned by the experiment, created before the run is recorded as finished, so status never points at
results that are not there. They are deleted when the run falls out of ``status.evaluations``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from canopy_operator.api.conditions import ConditionType as C
from canopy_operator.api.spec import PromptExperimentSpec
from canopy_operator.api.status import (
    EVALUATION_HISTORY_LIMIT,
    EvaluationProgress,
    EvaluationResults,
    EvaluationRun,
    PromptExperimentStatus,
)
from canopy_operator.core import lifecycle as lc
from canopy_operator.core.conditions import set_condition
from canopy_operator.core.credentials import image_refusal
from canopy_operator.core.evaluation.caselog import (
    MAX_LINE_BYTES,
    describe_progress,
    last_progress,
    read_case_log,
    shard,
)
from canopy_operator.core.evaluation.gate import gate_state, gate_waiting, latest_run, run_verdict
from canopy_operator.core.evaluation.jobs import (
    ANNOTATION_DATASET,
    ANNOTATION_DATASET_PARTS,
    CONTAINER_NAME,
    MAX_DATASET_PARTS,
    dataset_digest,
    dataset_part_name,
    dataset_secret_name,
    eval_selector,
    job_name_for,
    render_dataset_secrets,
    render_eval_job,
    render_results_secret,
    seed_for,
    split_dataset,
    start_annotations,
)
from canopy_operator.core.evaluation.results import (
    finish_run,
    job_state,
    jobs_to_prune,
    parse_job_result,
    record_start,
    run_from_job,
    unrecorded_jobs,
    vanished_run,
)
from canopy_operator.core.evaluation.trigger import Trigger, should_trigger, trigger_inputs
from canopy_operator.core.ledger import (
    LEDGER_KEY,
    Layout,
    Ledger,
    LedgerEntry,
    ShardDoc,
    assemble,
    decode_manifest,
    decode_shard,
    is_ledger_shard,
    ledger_secret_name,
    plan_write,
    render_manifest_secret,
    render_shard_secret,
    shard_secret_name,
    text_sha256,
)
from canopy_operator.k8s.errors import Conflict, KubeError, NotFound
from canopy_operator.k8s.gateway import Gateway
from canopy_operator.service.credentials import judge_refusal
from canopy_operator.service.settings import Settings

EventSink = Callable[[str, str, bool], None]
_DATASET_NAME = re.compile(r"-dataset-[0-9a-f]{8}$")
#: Bytes of a running pod's log read for its progress (the last few case lines).
PROGRESS_TAIL_BYTES = 3 * MAX_LINE_BYTES
#: The most of a finished pod's log read for its per-case results.
RESULTS_LOG_LIMIT = 64 * 1024 * 1024


class LedgerUnreadable(KubeError):
    """The ledger Secret exists but is not a ledger (or a shard it names is missing or not the one it names):
    never overwrite it (its entries would be lost)."""

    reason = "LedgerUnreadable"


@dataclass(frozen=True)
class _StoredLedger:
    """The ledger as this pass read or wrote it: entries, where they are, and the manifest's version."""

    ledger: Ledger
    layout: Layout
    version: str | None
    """The manifest's resourceVersion (None: there is no manifest, or ``created`` holds what this pass made)."""
    created: str | None = None
    """The manifest text this pass created (create returns no resourceVersion: read it back before a patch)."""


def _dataset_parts(jobs: Sequence[Mapping[str, Any]], dataset: str) -> int:
    """How many Secrets the dataset ``dataset`` takes, from the annotations of the Jobs that read it (1 when
    none says; at most :data:`MAX_DATASET_PARTS`, whatever an annotation claims)."""
    counts = [1]
    for job in jobs:
        annotations = job.get("metadata", {}).get("annotations") or {}
        if annotations.get(ANNOTATION_DATASET) == dataset:
            with contextlib.suppress(TypeError, ValueError):
                counts.append(int(annotations.get(ANNOTATION_DATASET_PARTS, 1)))
    return max(1, min(max(counts), MAX_DATASET_PARTS))


class Evaluations:
    """The experiment's ledger, dataset Secrets and evaluation Jobs, seen from one reconcile pass."""

    def __init__(self, gateway: Gateway, namespace: str, name: str, uid: str, settings: Settings) -> None:
        self.gateway = gateway
        self.namespace = namespace
        self.name = name
        self.uid = uid
        self.settings = settings
        self._stored: _StoredLedger | None = None
        self._refused: tuple[str, str] | None = None
        """Why this pass did not start the evaluation it was due to start (reason, message)."""

    @classmethod
    def for_body(cls, gateway: Gateway, namespace: str, body: Mapping[str, Any], settings: Settings) -> Evaluations:
        """For the experiment in ``body``, under the operator's ``settings`` (its image and allow-lists)."""
        metadata = body.get("metadata") or {}
        return cls(gateway, namespace, str(metadata.get("name", "")), str(metadata.get("uid", "")), settings)

    # -- the ledger (core.ledger decides; this reads and writes the Secret) -----------------------------------
    def ledger_name(self) -> str:
        return ledger_secret_name(self.name)

    def dataset_name(self, ledger: Ledger) -> str | None:
        """The dataset Secret the ledger's entries make (None while it holds none); named by a digest of the
        prompts, so no YAML is rendered on a poll."""
        return dataset_secret_name(self.name, dataset_digest(ledger.prompts())) if ledger.entries else None

    async def load(self) -> Ledger:
        return (await self._read()).ledger

    async def _read(self) -> _StoredLedger:
        """The manifest, then each shard it names (hash checked); read once per pass."""
        if self._stored is None:
            try:
                secret = await self.gateway.read_secret(self.namespace, self.ledger_name())
            except NotFound:
                self._stored = _StoredLedger(Ledger(), Layout(), None)
                return self._stored
            where = f"Secret {self.namespace}/{self.ledger_name()}"
            try:
                manifest = decode_manifest(secret.data.get(LEDGER_KEY, ""))
            except ValueError as exc:
                raise LedgerUnreadable(f"{where} is not a feedback ledger ({exc}); move it away") from exc
            shards: dict[int, tuple[LedgerEntry, ...]] = {}
            for ref in manifest.layout.shards:
                name = shard_secret_name(self.name, ref.seq)
                try:
                    shard = await self.gateway.read_secret(self.namespace, name)
                    shards[ref.seq] = decode_shard(shard.data.get(LEDGER_KEY, ""), ref)
                except NotFound as exc:
                    raise LedgerUnreadable(f"{where} names shard {name}, which is missing") from exc
                except ValueError as exc:
                    raise LedgerUnreadable(f"{where} names shard {name}, which is not that shard ({exc})") from exc
            self._stored = _StoredLedger(assemble(manifest, shards), manifest.layout, secret.resource_version)
        return self._stored

    async def save(self, ledger: Ledger) -> None:
        """Write the ledger: new shards first, then the manifest (the commit, with a resourceVersion
        precondition: nobody wrote it since it was read), then delete the shards it no longer names. A crash
        at any point leaves the manifest naming only shards that exist; the caller moves the read position
        only after this returns."""
        stored = await self._read()
        plan = plan_write(stored.layout, stored.ledger, ledger)
        for seq in plan.remove_first:  # retired by an earlier write, named by no manifest
            await self._delete_shard(seq)
        for doc in plan.create:
            await self._create_shard(doc)
        version = stored.version if stored.created is None else await self._version_of(stored.created)
        body = render_manifest_secret(self.namespace, self.name, self.uid, plan.manifest, version)
        if version is None:
            await self.gateway.create_secret(body)  # Conflict if someone made it since it was read
            self._stored = _StoredLedger(ledger, plan.layout, None, created=plan.manifest)
        else:
            self._stored = _StoredLedger(ledger, plan.layout, await self.gateway.patch_secret(body))
        for seq in plan.remove_after:  # listed as retired in the manifest: the next write deletes them too
            await self._delete_shard(seq)

    async def _create_shard(self, doc: ShardDoc) -> None:
        """Create a shard; one already there under its name is left by a write that crashed before its manifest:
        kept if it holds the same, else deleted and written again (never one that is not a ledger shard)."""
        body = render_shard_secret(self.namespace, self.name, self.uid, doc)
        try:
            await self.gateway.create_secret(body)
            return
        except Conflict:
            existing = await self.gateway.read_secret(self.namespace, body["metadata"]["name"])
        if text_sha256(existing.data.get(LEDGER_KEY, "")) == doc.ref.sha256:
            return
        if not is_ledger_shard(existing.labels, self.name):
            where = f"Secret {self.namespace}/{existing.name}"
            raise LedgerUnreadable(f"{where} is in the way of the feedback ledger's next shard; move it away")
        await self.gateway.delete_secret(self.namespace, existing.name)
        await self.gateway.create_secret(body)

    async def _delete_shard(self, seq: int) -> None:
        with contextlib.suppress(NotFound):
            await self.gateway.delete_secret(self.namespace, shard_secret_name(self.name, seq))

    async def _version_of(self, created: str) -> str:
        """The resourceVersion of the manifest this pass created, if it still holds what was written."""
        secret = await self.gateway.read_secret(self.namespace, self.ledger_name())
        if secret.data.get(LEDGER_KEY) != created:
            raise Conflict(f"Secret {self.namespace}/{self.ledger_name()} changed since this pass wrote it")
        return secret.resource_version

    # -- one pass -----------------------------------------------------------------------------------------
    async def step(
        self,
        spec: PromptExperimentSpec,
        st: PromptExperimentStatus,
        generation: int,
        now: datetime,
        event: EventSink,
    ) -> tuple[PromptExperimentStatus, str | None]:
        """Read finished Jobs into status, start one when the trigger says so, prune; return the status and
        why the promotion gate holds back an automatic promotion (None when it does not)."""
        test_over = lc.outcome_of(st) is not None
        running = any(run.state == "Running" for run in st.evaluations)
        wanted = should_trigger(trigger_inputs(spec, st, running, test_over)).trigger
        if running or wanted is not None:
            try:
                st = await self._jobs(spec, st, test_over, now, event)
            except KubeError as exc:
                # Evaluations must not stall the A/B test: report, keep what was read, retry next pass.
                event("EvaluationError", str(exc)[:1024], True)
        ledger_cases = max(0, st.negatives.total - st.negatives.trimmed)
        st = st.model_copy(update={"negatives": st.negatives.model_copy(update={"awaiting_review": ledger_cases})})
        st = self._condition(spec, st, generation, now)
        gate = gate_state(spec, st)
        return st, (gate.message if gate_waiting(spec, st) else None)

    async def _jobs(
        self, spec: PromptExperimentSpec, st: PromptExperimentStatus, test_over: bool, now: datetime, event: EventSink
    ) -> PromptExperimentStatus:
        jobs = await self.gateway.list_jobs(self.namespace, eval_selector(self.name))
        st = await self._follow(spec, st, jobs, now, event)
        job_running = any(job_state(job)[0] == "Running" for job in jobs)
        decision = should_trigger(trigger_inputs(spec, st, job_running, test_over))
        if decision.trigger is not None:
            st = await self._start(spec, st, decision.trigger, decision.reason, now, event)
        await self._prune(spec, st, jobs)
        return st

    async def _follow(
        self,
        spec: PromptExperimentSpec,
        st: PromptExperimentStatus,
        jobs: Sequence[Mapping[str, Any]],
        now: datetime,
        event: EventSink,
    ) -> PromptExperimentStatus:
        """Finished Jobs' results into their runs, after adopting Jobs created but never recorded (the status
        write after the create was lost: a crash, or a conflict with another write to the object)."""
        for unrecorded in unrecorded_jobs(st, jobs):
            adopted = run_from_job(unrecorded, now)
            if adopted is not None:
                st = record_start(st, *adopted)
        by_name = {str(job.get("metadata", {}).get("name")): job for job in jobs}
        runs: list[EvaluationRun] = []
        for run in st.evaluations:
            job = by_name.get(run.name)
            if run.state == "Running" and job is None:
                run = vanished_run(run, now)
                event("EvaluationFailed", f"{run.name}: {run.message}", True)
            elif run.state == "Running" and job is not None and job_state(job)[0] != "Running":
                message = await self.gateway.job_termination_message(self.namespace, run.name)
                threshold = spec.evaluation.min_challenger_better_rate
                outcome = parse_job_result(job, message)
                results = await self._keep_results(run, outcome.summary.cases if outcome.summary else run.cases)
                run = finish_run(run, outcome, threshold, now).model_copy(update={"results": results})
                ok = run.state == "Succeeded"
                event("EvaluationSucceeded" if ok else "EvaluationFailed", f"{run.name}: {run.message}", not ok)
            elif run.state == "Running" and job is not None:
                run = await self._progress(run, now)
            runs.append(run)
        return st.model_copy(update={"evaluations": runs})

    async def _progress(self, run: EvaluationRun, now: datetime) -> EvaluationRun:
        """The runner's latest progress from its pod's log tail (kept as it was when the log cannot be read:
        the pod may still be starting)."""
        try:
            tail = await self.gateway.job_pod_log(
                self.namespace, run.name, CONTAINER_NAME, limit_bytes=PROGRESS_TAIL_BYTES, tail_lines=3
            )
        except KubeError:
            return run
        found = last_progress(tail or "")
        if found is None:
            return run
        progress = EvaluationProgress(done=found.done, total=found.total, eta_seconds=found.eta_seconds, updated_at=now)
        return run.model_copy(update={"progress": progress})

    async def _keep_results(self, run: EvaluationRun, cases: int) -> EvaluationResults:
        """Read the finished pod's case lines once and keep them in results Secrets (created before the run is
        recorded as finished; an existing one, from a pass that crashed after creating it, holds the same)."""
        limit = min(RESULTS_LOG_LIMIT, (cases + 1) * MAX_LINE_BYTES * 2)
        try:
            text = await self.gateway.job_pod_log(self.namespace, run.name, CONTAINER_NAME, limit_bytes=limit)
        except KubeError as exc:
            return EvaluationResults(unavailable=f"the pod's log could not be read: {str(exc)[:200]}")
        if text is None:
            return EvaluationResults(unavailable="the Job's pod is gone")
        log = read_case_log(text, max_cases=max(cases, 1))
        shards, left_out = shard(log.records)
        names = []
        for index, jsonl in enumerate(shards):
            body = render_results_secret(self.namespace, self.name, self.uid, run.name, index, jsonl)
            with contextlib.suppress(Conflict):
                await self.gateway.create_secret(body)
            names.append(str(body["metadata"]["name"]))
        truncated = left_out > 0 or len(log.records) < cases
        return EvaluationResults(secrets=names, cases=len(log.records) - left_out, truncated=truncated)

    async def _forget_results(self, runs: Sequence[EvaluationRun]) -> None:
        """Delete the results Secrets of runs that fall out of status (by the names status recorded)."""
        for run in runs:
            for name in run.results.secrets if run.results is not None else []:
                if name.startswith(f"{run.name}-results-"):
                    with contextlib.suppress(NotFound):
                        await self.gateway.delete_secret(self.namespace, name)

    async def _start(
        self,
        spec: PromptExperimentSpec,
        st: PromptExperimentStatus,
        trigger: Trigger,
        why: str,
        now: datetime,
        event: EventSink,
    ) -> PromptExperimentStatus:
        assert st.test is not None  # the trigger needs an active test
        refused = await self._refusal(spec)
        if refused is not None:
            self._refused = refused
            event("EvaluationNotStarted", f"{refused[0]}: {refused[1]} ({why})", True)
            return st
        image = spec.evaluation.image or self.settings.operator_image
        assert image is not None  # _refusal checked it
        ledger = await self.load()
        prompts = ledger.prompts()
        dataset = dataset_secret_name(self.name, dataset_digest(prompts))
        parts = await asyncio.to_thread(split_dataset, prompts)  # PyYAML's emitter: seconds for 10 000 cases
        # The parts first, the Secret the Job and status name last: once it exists, every part does.
        for secret in render_dataset_secrets(self.namespace, self.name, self.uid, dataset, parts):
            with contextlib.suppress(Conflict):  # named by content hash: an existing one holds the same part
                await self.gateway.create_secret(secret)
        job_name = job_name_for(self.name, st.test.id, dataset, trigger, now)
        job = render_eval_job(
            namespace=self.namespace,
            experiment_name=self.name,
            experiment_uid=self.uid,
            job_name=job_name,
            image=image,
            dataset_secret=dataset,
            backend_url=spec.backend.url,
            evaluation=spec.evaluation,
            test_id=st.test.id,
            trigger=trigger,
            seed=seed_for(job_name),
            cases=len(ledger.entries),
            dataset_parts=len(parts),
        )
        job["metadata"]["annotations"].update(start_annotations(st, spec, trigger))
        await self.gateway.create_job(job)
        run = EvaluationRun(
            name=job_name,
            test_id=st.test.id,
            trigger=trigger,
            dataset_secret=dataset,
            cases=len(ledger.entries),
            started_at=now,
        )
        st = st.model_copy(update={"negatives": st.negatives.model_copy(update={"dataset_secret": dataset})})
        event("EvaluationStarted", f"{job_name}: {why}; {len(ledger.entries)} negative cases", False)
        kept = [r for r in st.evaluations if r.name != run.name]
        await self._forget_results(kept[: max(0, len(kept) + 1 - EVALUATION_HISTORY_LIMIT)])
        return record_start(st, run, st.negatives.total, spec.evaluation.run_request)

    async def _refusal(self, spec: PromptExperimentSpec) -> tuple[str, str] | None:
        """Why the evaluation may not start (reason, message naming the field or Secret), or None."""
        settings = self.settings
        image = image_refusal(spec.evaluation.image, settings.operator_image, settings.evaluation_images)
        if image is not None:
            return "EvaluationImageNotAllowed", image
        judge = spec.evaluation.judge
        return await judge_refusal(
            self.gateway,
            self.namespace,
            judge.api_key_secret,
            judge.endpoint,
            allow_insecure_http=settings.allow_insecure_http,
        )

    async def _prune(
        self, spec: PromptExperimentSpec, st: PromptExperimentStatus, jobs: Sequence[Mapping[str, Any]]
    ) -> None:
        """Finished Jobs beyond historyLimit, then the dataset Secrets only they read, deleted by name (from their
        annotations and their runs in status; a dataset's other parts by the count its Jobs' annotation gives,
        before the Secret that names them): the operator has no ``list`` on Secrets."""
        doomed = set(jobs_to_prune(jobs, spec.evaluation.history_limit))
        for name in doomed:
            with contextlib.suppress(NotFound):
                await self.gateway.delete_job(self.namespace, name)
        if not doomed:
            return
        keep = {st.negatives.dataset_secret} | {r.dataset_secret for r in st.evaluations if r.state == "Running"}
        candidates: set[str | None] = {r.dataset_secret for r in st.evaluations if r.name in doomed}
        for job in jobs:
            dataset = (job.get("metadata", {}).get("annotations") or {}).get(ANNOTATION_DATASET)
            (candidates if job.get("metadata", {}).get("name") in doomed else keep).add(dataset)
        for name in sorted(n for n in candidates - keep if isinstance(n, str) and self._is_dataset(n)):
            for index in reversed(range(_dataset_parts(jobs, name))):
                with contextlib.suppress(NotFound):
                    await self.gateway.delete_secret(self.namespace, dataset_part_name(name, index))

    def _is_dataset(self, name: str) -> bool:
        """A dataset Secret's name (``<experiment>-dataset-<sha8>``): an annotation naming any other Secret is
        not followed."""
        return bool(_DATASET_NAME.search(name)) and name.startswith(self.name[:20])

    def _condition(
        self, spec: PromptExperimentSpec, st: PromptExperimentStatus, generation: int, now: datetime
    ) -> PromptExperimentStatus:
        if not spec.evaluation.enabled and not st.evaluations:
            return st
        latest = latest_run(st)
        verdict = run_verdict(latest)
        status: Literal["True", "False"] = "True" if verdict.open else "False"
        reason, message = verdict.reason, verdict.message
        if latest is not None and latest.state == "Running" and latest.progress is not None:
            progress = latest.progress
            message += f" ({describe_progress(progress.done, progress.total, progress.eta_seconds)})"
        if self._refused is not None:
            status, (reason, message) = "False", self._refused
        conditions = set_condition(st.conditions, C.EVALUATION_PASSED, status, reason, message, generation, now)
        return st.model_copy(update={"conditions": conditions})
