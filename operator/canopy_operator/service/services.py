"""What an operator process holds from start-up to clean-up, and the two things the handlers ask of it:
run one reconcile pass of an experiment, and restore its config when it is deleted.

Kopf keeps one :class:`Services` in its ``memo``; nothing lives in module globals.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from typing import Any

from canopy_operator.api.spec import PromptExperimentSpec
from canopy_operator.api.status import PromptExperimentStatus
from canopy_operator.core import lifecycle as lc
from canopy_operator.core import startrecord
from canopy_operator.core.redact import Redactor
from canopy_operator.core.status import StatusUnreadable, defer_write, dump, merge_patch, read_status
from canopy_operator.delivery.base import DeliveryError
from canopy_operator.failpoints import Failpoints
from canopy_operator.gitops.repo import GitWorkspace
from canopy_operator.k8s.client import api_client
from canopy_operator.k8s.errors import Conflict, Forbidden
from canopy_operator.k8s.events import EventPoster
from canopy_operator.k8s.gateway import Gateway
from canopy_operator.k8s.watched import Rollouts, Versions, WatchedReads, no_rollouts, unwatched
from canopy_operator.service import wiring
from canopy_operator.service.evaluations import Evaluations
from canopy_operator.service.memory import MemoryTrimmer, glibc_in_use, glibc_malloc_trim
from canopy_operator.service.notify import Notifier, Target
from canopy_operator.service.observe import Observer
from canopy_operator.service.reconcile import Backend, Ports, internal_error_message, reconcile
from canopy_operator.service.report import Report
from canopy_operator.service.session import Deferred, ExperimentSession
from canopy_operator.service.settings import Settings
from canopy_operator.service.wake import Wake
from canopy_operator.telemetry.metrics import Metrics, MetricsServer

log = logging.getLogger("canopy_operator")


def utcnow() -> datetime:
    return datetime.now(UTC)


STATUS_WRITE_ATTEMPTS = 3
"""Status writes tried per pass when only the object's metadata moved on (then the pass itself is redone)."""


async def patch_status(
    gateway: Gateway,
    namespace: str,
    name: str,
    patch: dict[str, Any],
    resource_version: str | None,
    meta: Mapping[str, Any],
    based_on: Mapping[str, Any],
    latest: Callable[[], Mapping[str, Any]] | None = None,
    whole: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """Write the status with a resourceVersion precondition; on a conflict caused by a metadata-only write, try
    again on the fresh resourceVersion instead of failing the pass.

    ``patch`` is the merge patch from ``based_on`` (the status as stored) to the new status; ``whole``, when
    given, is that new status, and then it replaces the stored one (``Gateway.replace_experiment_status``, the
    same result at less API server CPU) whenever there is a resourceVersion to hold it to. The precondition makes
    the two the same: the write lands only on the status it was computed from.

    A pass computes its status from the spec (``metadata.generation``), the status it read (``based_on``) and
    whether the object is being deleted; nothing else of the object. Kopf's own finalizer and annotation
    patches, or a human's label, move the resourceVersion without changing any of those, and used to make
    the pass start over from its reads (16 conflicts per experiment in a burst of 100 on a slow machine,
    issue #20). Anything else (a new generation, a status someone else wrote, a deletion) is still a
    :class:`Conflict`: the pass is redone on the fresh object, so no concurrent update is lost.

    ``latest``: the object as the watch shows it now. When the watch is already past ``resource_version`` by such
    a metadata-only write, the first try uses its version: a new experiment's first status write raced Kopf's
    finalizer patch, lost every time, and paid a refused write and a read for it (one of each per experiment
    in a burst, issue #20).

    Returns the written object and the resourceVersions the write was tried on (all replaced by it).
    """
    tried: list[str] = []
    if latest is not None:
        seen = latest()
        seen_version = (seen.get("metadata") or {}).get("resourceVersion")
        if seen_version and seen_version != resource_version and _only_metadata_moved(seen, meta, based_on):
            resource_version = seen_version
    for attempt in range(STATUS_WRITE_ATTEMPTS):
        if resource_version:
            tried.append(resource_version)
        try:
            if whole is not None and resource_version and gateway.replaces_status:
                try:
                    return await gateway.replace_experiment_status(namespace, name, whole, resource_version), tried
                except Forbidden as exc:  # refused, so not written: the same write as a merge patch, as before
                    gateway.replaces_status = False
                    log.warning("status writes merge-patch from now on (grant update on the status): %s", exc)
            return await gateway.patch_experiment_status(namespace, name, patch, resource_version), tried
        except Conflict:
            if attempt + 1 == STATUS_WRITE_ATTEMPTS:
                raise
            fresh = await gateway.read_experiment(namespace, name)
            if not _only_metadata_moved(fresh, meta, based_on):
                raise
            resource_version = (fresh.get("metadata") or {}).get("resourceVersion")
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


def _only_metadata_moved(obj: Mapping[str, Any], meta: Mapping[str, Any], based_on: Mapping[str, Any]) -> bool:
    """Whether ``obj`` has what a pass computed its status from (generation, deletion, the status it read)."""
    obj_meta = obj.get("metadata") or {}
    return (
        obj_meta.get("generation") == meta.get("generation")
        and obj_meta.get("deletionTimestamp") == meta.get("deletionTimestamp")
        and (obj.get("status") or {}) == dict(based_on)
    )


RESTORE_WAIT_SECONDS = 30.0
"""How long the restore of an experiment deleted before its first status write waits for its running pass."""


class RestoreSkipped(ValueError):
    """The spec or status cannot be read, so there is nothing the operator could restore from."""


@dataclass
class Services:
    """The operator process's gateway, Git cache, telemetry (and its metrics endpoint), redactor, failpoints."""

    settings: Settings
    gateway: Gateway
    git: GitWorkspace
    observer: Observer
    redactor: Redactor
    failpoint: Failpoints
    metrics_server: MetricsServer | None = None
    tls: ssl.SSLContext = field(default_factory=ssl.create_default_context)
    """One trust store for every backend client of the process."""
    notifier: Notifier = field(init=False)
    """The webhook notifications (docs/notifications.md); replaceable in tests."""
    sessions: set[ExperimentSession] = field(init=False, default_factory=set)
    """The open sessions of the experiments' daemons (closed at clean-up if a daemon left one open)."""
    in_flight: dict[tuple[str, str], asyncio.Event] = field(init=False, default_factory=dict)
    """``(namespace, name) ->`` set when the experiment's pass now running ends."""
    rollout_waiters: dict[tuple[str, str], set[Wake]] = field(init=False, default_factory=dict)
    """``(namespace, Deployment) ->`` the wake-up events of the daemons listening to it (for its rollouts)."""
    memory: MemoryTrimmer = field(default_factory=lambda: MemoryTrimmer(None))
    """Gives the memory a burst freed back to the system (:mod:`.memory`); started by :meth:`open`."""
    events: EventPoster = field(init=False)
    """Posts the passes' events in the background (:mod:`canopy_operator.k8s.events`); started by :meth:`open`."""

    def __post_init__(self) -> None:
        self.events = EventPoster(self.gateway)
        self.notifier = Notifier(
            store=self.gateway,
            open_poster=lambda: wiring.webhook_poster(self.tls),
            operator_url=self.settings.notify_webhook_url,
            allow_insecure_http=self.settings.allow_insecure_http,
            redactor=self.redactor,
            count=self.observer.metrics.record_notification,
            now=utcnow,
        )

    @classmethod
    async def open(cls, settings: Settings, metrics: Metrics, redactor: Redactor) -> Services:
        """Connect to the API server and open the Git cache."""
        gateway = Gateway(await api_client(settings.kubeconfig))
        server = metrics.start_server(settings.metrics_port, settings.metrics_addr) if settings.metrics_port else None
        services = cls(
            settings=settings,
            gateway=gateway,
            git=wiring.open_git_workspace(settings),
            observer=Observer(metrics),
            redactor=redactor,
            failpoint=settings.make_failpoints(),
            metrics_server=server,
            memory=MemoryTrimmer(glibc_malloc_trim(), in_use=glibc_in_use()),
        )
        services.memory.start()
        services.events.start()
        return services

    def session(
        self, namespace: str, name: str, versions: Versions = unwatched, rollouts: Rollouts = no_rollouts
    ) -> ExperimentSession:
        """What the daemon of ``namespace/name`` keeps between its passes (:mod:`.session`); it closes it with
        :meth:`end_session` when it stops. ``versions``: what the watches saw of ConfigMaps and Deployments
        (:mod:`canopy_operator.k8s.watched`); without them every read goes to the API server."""
        session = ExperimentSession(
            f"{namespace}/{name}",
            lambda spec: wiring.source_for(spec, self.settings, self.observer.time_request, self.tls),
            lambda spec: wiring.source_key(spec, self.settings),
            WatchedReads(self.gateway, versions, rollouts),
        )
        self.sessions.add(session)
        return session

    def listen(self, namespace: str, deployment: str, wake: Wake) -> None:
        """From now on, a change the watch sees of ``namespace/deployment`` that leaves its rollout finished sets
        ``wake`` (:meth:`deployment_changed`, called by the index handler)."""
        self.rollout_waiters.setdefault((namespace, deployment), set()).add(wake)

    def stop_listening(self, namespace: str, deployment: str, wake: Wake) -> None:
        waiters = self.rollout_waiters.get((namespace, deployment))
        if waiters is not None:
            waiters.discard(wake)
            if not waiters:
                del self.rollout_waiters[(namespace, deployment)]

    def deployment_changed(self, namespace: str, deployment: str) -> None:
        """The watch saw ``namespace/deployment`` with its rollout finished: wake the daemons waiting for it."""
        for wake in self.rollout_waiters.get((namespace, deployment), ()):
            wake.set()

    async def end_session(self, session: ExperimentSession) -> None:
        self.sessions.discard(session)
        await session.aclose()

    async def close(self) -> None:
        await self.events.aclose()
        await self.memory.aclose()
        for session in list(self.sessions):
            await self.end_session(session)
        if self.metrics_server is not None:
            self.metrics_server.close()
        wiring.close_git_workspace(self.git, self.settings)
        await self.gateway.api.close()

    async def reconcile(
        self,
        namespace: str,
        name: str,
        body: Mapping[str, Any],
        session: ExperimentSession | None = None,
        latest: Callable[[], Mapping[str, Any]] | None = None,
    ) -> Report:
        """One pass (:meth:`_reconcile`), noted as in flight until it ends (:meth:`restore` waits for it)."""
        key, done = (namespace, name), asyncio.Event()
        self.in_flight[key] = done
        try:
            return await self._reconcile(namespace, name, body, session, latest)
        finally:
            done.set()
            if self.in_flight.get(key) is done:
                del self.in_flight[key]

    async def _reconcile(
        self,
        namespace: str,
        name: str,
        body: Mapping[str, Any],
        session: ExperimentSession | None = None,
        latest: Callable[[], Mapping[str, Any]] | None = None,
    ) -> Report:
        """One pass; the status is written only when it changed, with a resourceVersion precondition, and after a
        config write whose rollout is still running, once the rollout finished or has taken too long
        (:func:`canopy_operator.core.status.defer_write`).

        The pass's transitions are queued in ``status.notifications`` in the same write, and posted after it
        (:mod:`canopy_operator.service.notify`). ``session``: what the experiment's daemon keeps between passes
        (its backend client); without one, the pass opens its own and closes it at its end. ``latest``: the
        object as the watch shows it at the moment of a write (:func:`patch_status`)."""
        self.memory.note_pass()
        deferred: Deferred | None = None
        if session is not None:
            body = session.freshest(body)
            deferred = session.take_deferred(body)
        meta = body.get("metadata", {})
        rv = {"value": meta.get("resourceVersion")}
        old: dict[str, Any] = dict(body.get("status") or {})
        if deferred is not None:  # the pass starts from what the last one computed; writes diff against `old`
            body = {**body, "status": deferred.status}
        own_session = session is None
        kept = session if session is not None else self.session(namespace, name)

        async def write(new: dict[str, Any]) -> None:
            patch = merge_patch(old, new)
            if not patch:
                return
            self.failpoint("before-status-write")
            obj, replaced = await patch_status(
                self.gateway, namespace, name, patch, rv["value"], meta, old, latest, whole=new
            )
            kept.note_write(replaced, obj)
            self.failpoint("after-status-write")
            rv["value"] = obj["metadata"]["resourceVersion"]
            old.clear()
            old.update(obj.get("status") or {})

        async def persist(status: PromptExperimentStatus) -> None:
            await write(dump(status))

        apis = wiring.ServerApis(
            self.gateway, namespace, self.settings, self.observer.time_request, self.tls, self.redactor
        )

        def backend(spec: PromptExperimentSpec) -> Backend:
            source = kept.source(spec)
            votes = wiring.votes_for(spec, apis)
            return source if votes is None else wiring.SplitBackend(source, votes)

        def fence() -> None:
            seen = (latest() if latest is not None else body).get("metadata") or {}
            if seen.get("deletionTimestamp") or seen.get("generation") != meta.get("generation"):
                raise Conflict(f"PromptExperiment {namespace}/{name}: deleted or edited during the pass")

        ports = Ports(
            fence=fence,
            delivery=partial(
                wiring.delivery_for,
                self.gateway,
                self.git,
                namespace,
                name,
                redactor=self.redactor,
                failpoint=self.failpoint,
                reads=kept.reads,
            ),
            backend=backend,
            prompts=partial(wiring.prompts_for, apis=apis),
            persist=persist,
            now=utcnow,
            evaluations=Evaluations.for_body(self.gateway, namespace, body, self.settings),
            failpoint=self.failpoint,
            backend_hosts=self.settings.backend_hosts,
            parsed=kept.parsed,
        )
        try:
            before = kept.parsed.get("status", meta.get("resourceVersion"), body.get("status") or {}, read_status)
        except StatusUnreadable:
            before = None  # the pass reports it; the metrics see an empty status, as before
        watch = self.observer.watch(namespace, name, body, before)
        target = self.notifier.target(body.get("spec"))
        failed = True
        try:
            report = await reconcile(body, ports)
            if report.raw_status is not None:
                await write(report.raw_status)
            else:
                computed = report.status
                report = replace(report, status=self.notifier.outbox(target, body.get("status"), report.status))
                unchanged = (
                    deferred is None
                    and before is not None
                    and rv["value"] == meta.get("resourceVersion")  # nothing written earlier in this pass
                    and report.status == before
                    and kept.parsed.get("status-as-stored", rv["value"], old, partial(_stored_as_dumped, before))
                )
                # its intent in status earlier in this pass, or in the config write itself (the start record)
                wrote_intent = rv["value"] != meta.get("resourceVersion") or report.recorded_start
                wait = kept is session and defer_write(
                    rolling=report.rolling is not None,
                    failed=report.failed,
                    queued=report.status is not computed and report.status != computed,
                    wrote_intent=wrote_intent,
                    waited=None if deferred is None else time.monotonic() - deferred.since,
                )
                if wait:  # written by the pass the finished rollout wakes, or once it has waited long enough
                    since = None if wrote_intent or deferred is None else deferred.since
                    kept.defer(dump(report.status), old, since)
                elif not unchanged:  # an idle pass changes nothing: no dump of the whole status to find that out
                    await write(dump(report.status))
                watch.report(report)
                fresh = rv["value"] != meta.get("resourceVersion")
                report = await self._notify(namespace, name, body, target, old, rv["value"], report, fresh=fresh)
            failed = report.failed
        except Conflict:
            if deferred is not None and session is not None:
                # the redo starts from it while it still stands
                session.defer(deferred.status, deferred.stored, deferred.since)
            raise
        finally:
            watch.close()
            if own_session:
                await self.end_session(kept)
            else:
                await kept.end_pass(failed=failed)  # a failed pass does not keep its backend client
            await apis.aclose()
        return report

    async def _notify(
        self,
        namespace: str,
        name: str,
        body: Mapping[str, Any],
        target: Target,
        status: Mapping[str, Any],
        resource_version: str | None,
        report: Report,
        *,
        fresh: bool,
    ) -> Report:
        """Post the due notifications after the pass's write; never fails the pass (a failure is logged, and
        the unsent records wait for the next pass)."""
        uid = str(body.get("metadata", {}).get("uid") or f"{namespace}/{name}")
        try:
            events = await self.notifier.send(namespace, name, uid, target, dict(status), resource_version, fresh=fresh)
        except Exception as exc:  # the API server, or the unexpected: the pass itself succeeded
            log.warning("notifications of %s/%s not sent: %s", namespace, name, internal_error_message(exc))
            return report
        return replace(report, events=report.events + events) if events else report

    async def restore(self, namespace: str, name: str, body: Mapping[str, Any]) -> str | None:
        """onDelete Restore: write the champion-only config; the revision, or None when there is nothing to do.

        Raises :class:`RestoreSkipped` when spec or status is unreadable; delivery errors propagate (the
        caller retries them)."""
        try:
            spec = PromptExperimentSpec.model_validate(body.get("spec") or {})
            status = PromptExperimentStatus.model_validate(body.get("status") or {})
        except ValueError as exc:
            raise RestoreSkipped(f"unreadable spec or status: {exc}") from exc
        if spec.promotion.on_delete == "Keep" or lc.shadow(spec):
            return None  # Shadow mode never wrote anything, so there is nothing to restore
        if status.original is None and spec.delivery.mode != "ConfigMap":
            return None  # only a ConfigMap write carries a start record (below); a commit follows its intent
        delivery = await wiring.delivery_for(
            self.gateway,
            self.git,
            namespace,
            name,
            spec,
            status,
            restoring=True,
            redactor=self.redactor,
            failpoint=self.failpoint,
        )
        original = status.original
        if original is None and delivery.traits.carries_record:
            # Deleted before its first status write: the start record of its first config write, if there is
            # one. A pass still running may be about to make it (it checks for the deletion first): wait for it.
            running = self.in_flight.get((namespace, name))
            if running is not None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(RESTORE_WAIT_SECONDS):
                        await running.wait()
            uid = str(body.get("metadata", {}).get("uid") or "")
            try:
                source = await delivery.read()
            except DeliveryError:
                return None  # no readable source: the first write cannot have happened (or cannot be undone)
            try:
                original = startrecord.decode(source.record, uid) if uid else None
            except startrecord.StartRecordInvalid as exc:
                raise RestoreSkipped(f"annotation {startrecord.ANNOTATION} of the config source: {exc}") from exc
        if original is None:
            return None  # nothing was written (or nothing recorded what it replaced)
        result = await delivery.write(lc.restore_keys(spec, status, original))
        return result.revision


def _stored_as_dumped(status: PromptExperimentStatus, stored: Mapping[str, Any]) -> bool:
    """Whether ``stored`` (a status as read) is exactly what writing its parsed model would store: then a pass
    whose status equals that model has nothing to write."""
    return not merge_patch(stored, dump(status))
