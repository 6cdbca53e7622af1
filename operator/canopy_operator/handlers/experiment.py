"""Kopf handlers for PromptExperiment. Handler ids are persisted keys: never rename them.

Kopf only: decorators, the daemon's timing, and mapping outcomes to Kopf's events and retries. The
operator's services live in Kopf's ``memo`` from start-up to clean-up; the work is in ``service/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import random
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

import kopf

from canopy_operator.api.base import FINALIZER, GROUP, PLURAL, VERSION
from canopy_operator.core.redact import Redactor
from canopy_operator.core.status import (
    MAX_BACKOFF_SECONDS,
    PROGRESS_POLL_SECONDS,
    ROLLOUT_POLL_SECONDS,
    aligned_pause,
    backoff,
)
from canopy_operator.delivery.base import DeliveryError
from canopy_operator.k8s.access import may_scan_cluster
from canopy_operator.k8s.client import NoConfiguration, load_credentials
from canopy_operator.k8s.errors import Conflict, KubeError, NotFound
from canopy_operator.k8s.events import ObjectRef
from canopy_operator.k8s.gateway import drop_managed_fields
from canopy_operator.k8s.rollout import RolloutView, rollout_of
from canopy_operator.k8s.watched import Kind, Rollouts, Versions, no_rollouts, unwatched
from canopy_operator.service.reconcile import internal_error_message
from canopy_operator.service.report import Report
from canopy_operator.service.services import RestoreSkipped, Services
from canopy_operator.service.session import ExperimentSession
from canopy_operator.service.settings import Settings
from canopy_operator.service.wake import Wake, sleep_until
from canopy_operator.telemetry.metrics import Metrics

log = logging.getLogger("canopy_operator")
EVENT_MESSAGE_LIMIT = 1024
RESTORE_BACKOFF_SECONDS = 2.0
RESTORE_RETRIES = 10
"""Kopf's bound for failures nobody expected; expected ones give up after ``CANOPY_DELETE_ATTEMPTS``."""


def _services(memo: Any) -> Services:
    services = memo.get("services")
    assert isinstance(services, Services), "startup handler did not run"
    return services


@kopf.on.login(retries=12, backoff=5.0)
async def login(memo: kopf.Memo, settings: kopf.OperatorSettings, **_: Any) -> kopf.ConnectionInfo:
    """Kopf's credentials from the loader the operator's own client uses (``k8s.client``): the in-cluster service
    account, else the settings' kubeconfig (``KUBECONFIG``, else ~/.kube/config), exec plugins included.

    Kopf calls this again when the API server rejects the credentials (401) and after ``expiration``, so an exec
    plugin's token is renewed by running the plugin again. No configuration at all stops the operator at once;
    other failures (an exec plugin failing) are retried for about a minute first."""
    services = memo.get("services")
    ours = services.settings if isinstance(services, Services) else memo.get("settings") or Settings.from_env()
    try:
        found = await load_credentials(ours.kubeconfig)
    except NoConfiguration as exc:
        raise kopf.PermanentError(str(exc)) from exc
    return kopf.ConnectionInfo(
        server=found.server,
        ca_path=found.ca_path,
        insecure=found.insecure,
        username=found.username,
        password=found.password,
        scheme=found.scheme,
        token=found.token,
        certificate_path=found.certificate_path,
        private_key_path=found.private_key_path,
        default_namespace=found.default_namespace,
        proxy_url=found.proxy_url,
        trust_env=settings.networking.trust_env,
        expiration=found.expiration,
    )


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Kopf's storage under our prefix; the services into ``memo`` (metrics and redactor from ``run``)."""
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = NoDiffBase()
    settings.persistence.finalizer = FINALIZER
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    # Kopf's own API calls get deadlines too: a stalled API server must not hang a handler (finding 9).
    settings.networking.connect_timeout = 10
    settings.networking.request_timeout = 60
    metrics = memo.get("metrics") or Metrics()
    redactor = memo.get("redactor") or Redactor()
    services = await Services.open(memo.get("settings") or Settings.from_env(), metrics, redactor)
    memo["services"] = services
    # A namespaced install (a Role) cannot list CRDs or namespaces: skip Kopf's scanning, not retry it for a minute.
    settings.scanning.disabled = not await may_scan_cluster(services.gateway.api)
    # What is alive now (modules, classes, schemas: tens of MiB) lives as long as the process: out of the cyclic
    # collector's way, so a full collection walks only what the experiments made since (issue #20).
    gc.collect()
    gc.freeze()


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    services = memo.pop("services", None)
    if isinstance(services, Services):
        await services.close()
    gc.unfreeze()  # an embedding process (the tests run the operator in theirs) goes on collecting as before


class NoDiffBase(kopf.DiffBaseStorage):
    """Kopf keeps no last-handled configuration of an experiment.

    The operator has no create, update or resume handler to diff against it (the daemon reads the whole
    object every pass; :func:`wake` watches the generation). Kopf's default stored one in an annotation: one
    more PATCH of every new object (racing the daemon's first status write into a conflict) and a second
    copy of the spec in every object, kept in memory for each experiment (issue #20). An object written by an
    older operator keeps its stale annotation; nothing reads it.
    """

    def build(self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


@kopf.on.event(GROUP, VERSION, PLURAL, id="wake")
async def wake(memo: Any, meta: kopf.Meta, body: kopf.Body, **_: Any) -> None:
    """A spec change (e.g. an approval: a new ``metadata.generation``) wakes the daemon at once instead of at
    the next interval. Status writes and metadata edits leave the generation as it was: no wake-up.

    Every event of an experiment passes here before its daemon starts, and moments after Kopf hands the daemon
    the new object, so this is also where the copy Kopf keeps for the daemon loses its ``managedFields``
    (:func:`drop_managed_fields`): Kopf (1.45, checked in its ``processing.process_resource_event``) hands its
    event handlers the very object it keeps for the daemon, and has no hook of its own for this. A Kopf that
    copied the object instead would only lose the saving (memory), nothing else."""
    drop_managed_fields(body)
    generation = meta.get("generation")
    seen, memo["seen_generation"] = memo.get("seen_generation"), generation
    event = memo.get("wake")
    if seen is not None and generation != seen and isinstance(event, Wake):
        event.set()


@kopf.index("configmaps", id="configmap_versions")
async def configmap_versions(namespace: str | None, name: str, meta: kopf.Meta, **_: Any) -> dict[Any, Any]:
    """``(namespace, name) -> resourceVersion`` of the ConfigMaps served; never their data (``k8s/watched.py``)."""
    return {(namespace, name): meta.get("resourceVersion")}


@kopf.index("apps", "v1", "deployments", id="deployment_versions")
async def deployment_versions(namespace: str | None, name: str, body: kopf.Body, memo: Any, **_: Any) -> dict[Any, Any]:
    """``(namespace, name) ->`` the rollout fields (generations, replica counts, resourceVersion) of the
    Deployments served, never their pod template. A change that leaves the rollout finished wakes the daemons
    waiting for that Deployment; one still in progress does not (its pass could only find the rollout pending:
    in a burst of 500 starts that was a pass per start, woken by the start's own roll, issue #20)."""
    view = rollout_of(name, body)
    services = memo.get("services")
    if isinstance(services, Services) and namespace is not None and view.pending() is None:
        services.deployment_changed(namespace, name)
    return {(namespace, name): view}


def _versions(configmaps: kopf.Index[Any, Any], deployments: kopf.Index[Any, Any]) -> Versions:
    """The indexes as the watched reads ask them: one resourceVersion, or None (none, or several objects)."""
    indexes = {"ConfigMap": configmaps, "Deployment": deployments}

    def latest(kind: Kind, namespace: str, name: str) -> str | None:
        store = indexes[kind].get((namespace, name))
        values = list(store) if store is not None else []
        value = values[0] if len(values) == 1 else None
        if isinstance(value, RolloutView):
            return value.resource_version or None
        return value if isinstance(value, str) else None

    return latest


def _rollouts(deployments: kopf.Index[Any, Any]) -> Rollouts:
    """The Deployment index as the watched reads ask it: one rollout view, or None (none, or several)."""

    def latest(namespace: str, name: str) -> RolloutView | None:
        store = deployments.get((namespace, name))
        values = list(store) if store is not None else []
        return values[0] if len(values) == 1 and isinstance(values[0], RolloutView) else None

    return latest


@kopf.daemon(GROUP, VERSION, PLURAL, id="reconcile", cancellation_timeout=10.0)
async def run(
    namespace: str | None, name: str, body: kopf.Body, memo: Any, stopped: kopf.DaemonStopped, **kwargs: Any
) -> None:
    """Reconcile at the poll interval (faster while a change is in flight) until the object goes away.

    Kopf passes its indexes by their ids (``configmap_versions``, ``deployment_versions``)."""
    assert namespace is not None, "PromptExperiment is namespaced"
    services = _services(memo)
    # The backend client and the last ConfigMap/Deployment reads, kept for the daemon's life.
    configmaps, deployments = kwargs.get("configmap_versions"), kwargs.get("deployment_versions")
    versions: Versions = unwatched
    rollouts: Rollouts = no_rollouts
    if configmaps is not None and deployments is not None:
        versions, rollouts = _versions(configmaps, deployments), _rollouts(deployments)
    session = services.session(namespace, name, versions, rollouts)
    watched = rollouts is not no_rollouts  # the Deployment watch wakes a daemon waiting for a rollout
    try:
        await _loop(services, session, namespace, name, body, memo, stopped, watched=watched)
    finally:
        await asyncio.shield(services.end_session(session))


async def _loop(
    services: Services,
    session: ExperimentSession,
    namespace: str,
    name: str,
    body: kopf.Body,
    memo: Any,
    stopped: kopf.DaemonStopped,
    *,
    watched: bool = True,
) -> None:
    wake_event = memo.setdefault("wake", Wake())
    rollout = Wake()
    """Set when the watch sees the Deployment this daemon listens to (``listening``) with its rollout finished."""
    listening: str | None = None

    def listen_to(deployment: str) -> str:
        if listening is not None:
            services.stop_listening(namespace, listening, rollout)
        services.listen(namespace, deployment, rollout)
        return deployment

    failures = 0
    loop = asyncio.get_running_loop()
    async with _woken_when_stopped(stopped) as stop:
        try:
            while not stopped:
                if body.get("metadata", {}).get("deletionTimestamp"):
                    return
                named = _deployment_named(body) if watched else None
                if named is not None and named != listening:  # listening before the pass reads its Deployment
                    listening = listen_to(named)
                # Cleared before the pass reads anything: a change during the pass wakes the next sleep at once.
                wake_event.clear()
                rollout.clear()
                started = loop.time()
                rolling: str | None = None
                try:
                    report = await services.reconcile(namespace, name, dict(body), session, latest=lambda: body)
                    _post(services, body, report)
                    failures = failures + 1 if report.failed else 0
                    delay = backoff(report.next_in, failures) if report.failed else report.next_in
                    rolling = report.rolling
                    if rolling is not None and not watched:  # no watch to wake us: poll as often as before
                        delay = min(delay, PROGRESS_POLL_SECONDS)
                    elif rolling is not None:  # the watch wakes us when it finishes: no quick look before
                        delay = max(delay, ROLLOUT_POLL_SECONDS)
                    if rolling is not None and watched and rolling != listening:  # not the one the spec named
                        listening = listen_to(rolling)
                        rollout.set()  # a change between this pass's read and now went unheard: look once more
                    del report  # not kept while sleeping: its status models are about 10 KiB per experiment (#20)
                except NotFound:
                    return
                except Conflict:
                    delay = 0.5  # someone wrote the object since we read it: read the fresh one and redo the pass
                except KubeError as exc:
                    failures += 1
                    delay = min(2.0 * 2**failures, MAX_BACKOFF_SECONDS)
                    log.warning("reconcile of %s/%s failed: %s", namespace, name, exc)
                except Exception as exc:  # the pass turns its own failures into conditions; this is what
                    # escaped even that (the status write, the report): one short line, then back off
                    failures += 1
                    delay = min(2.0 * 2**failures, MAX_BACKOFF_SECONDS)
                    message = internal_error_message(exc)
                    log.warning("reconcile of %s/%s failed unexpectedly: %s", namespace, name, message)
                # The period is the interval, not interval + pass time; +-5 % jitter spreads experiments created
                # together; a long sleep ends on the shared tick, so daemons due in the same second wake together.
                now = loop.time()
                pause = max(0.0, delay * random.uniform(0.95, 1.05) - (now - started))  # noqa: S311
                wakes = (stop, wake_event, *((rollout,) if rolling is not None and watched else ()))
                await sleep_until(now + aligned_pause(now, pause), *wakes)
        finally:
            if listening is not None:
                services.stop_listening(namespace, listening, rollout)


def _deployment_named(body: kopf.Body) -> str | None:
    """The Deployment ``spec.delivery.configMap.deployment`` names (the API server fills in its default), or
    None. Only listened to: the pass checks the spec; a name that is not a string is no name."""
    spec = body.get("spec")
    delivery = spec.get("delivery") if isinstance(spec, Mapping) else None
    config_map = delivery.get("configMap") if isinstance(delivery, Mapping) else None
    named = config_map.get("deployment") if isinstance(config_map, Mapping) else None
    return named if isinstance(named, str) and named else None


@contextlib.asynccontextmanager
async def _woken_when_stopped(stopped: kopf.DaemonStopped) -> AsyncIterator[Wake]:
    """A :class:`Wake` set when Kopf stops the daemon (its object deleted, the operator stopping), so that a
    sleep ends at once. One watcher for the daemon's life (a task, and the one Kopf's flag makes under it, about
    3.6 KiB in all): waiting on Kopf's flag in every sleep made and cancelled those two tasks each pass (issue
    #20)."""
    stop = Wake()

    async def watch() -> None:
        await stopped.wait()
        stop.set()

    watcher = asyncio.ensure_future(watch())
    try:
        yield stop
    finally:
        watcher.cancel()
        await asyncio.wait([watcher])  # a cancellation of the daemon itself still propagates from here


def _post(services: Services, body: kopf.Body, report: Report) -> None:
    """The pass's events, to be posted in the background (:mod:`canopy_operator.k8s.events`)."""
    if not report.events:
        return
    ref = ObjectRef.of(body)
    for type_, reason, message in report.events:
        services.events.post(ref, type_, reason, message)  # cut to the event's limit where its body is made


@kopf.on.delete(
    GROUP, VERSION, PLURAL, id="restore", optional=False, retries=RESTORE_RETRIES, backoff=RESTORE_BACKOFF_SECONDS
)
async def restore(namespace: str | None, name: str, body: kopf.Body, memo: Any, retry: int, **_: Any) -> None:
    """onDelete Restore: put back the champion-only config; Kopf retries a failure, then releases the object."""
    assert namespace is not None, "PromptExperiment is namespaced"
    services = _services(memo)
    if retry == 0:
        services.observer.forget(namespace, name)
    try:
        revision = await services.restore(namespace, name, dict(body))
    except RestoreSkipped as exc:
        kopf.warn(body, reason="RestoreSkipped", message=str(exc)[:EVENT_MESSAGE_LIMIT])
        return
    except (DeliveryError, KubeError) as exc:
        attempts = services.settings.delete_attempts
        if retry + 1 >= attempts:
            message = f"gave up restoring after {attempts} attempts: {exc}"
            kopf.warn(body, reason="RestoreFailed", message=message[:EVENT_MESSAGE_LIMIT])
            return
        raise kopf.TemporaryError(str(exc), delay=min(RESTORE_BACKOFF_SECONDS * 2**retry, 5.0)) from exc
    if revision is None:
        kopf.info(body, reason="ConfigKept", message="onDelete is Keep or nothing was changed: config left as it is")
    else:
        kopf.info(body, reason="ConfigRestored", message=f"champion-only config restored ({revision})")
