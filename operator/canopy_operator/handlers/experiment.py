"""Kopf handlers for PromptExperiment. Handler ids are persisted keys: never rename them."""

from __future__ import annotations

import asyncio
import logging
import random
from datetime import UTC, datetime
from functools import partial
from typing import Any

import kopf

from canopy_operator.api.base import GROUP, PLURAL, VERSION
from canopy_operator.api.spec import PromptExperimentSpec
from canopy_operator.api.status import PromptExperimentStatus
from canopy_operator.core import lifecycle as lc
from canopy_operator.failpoints import failpoint
from canopy_operator.handlers import access, observe
from canopy_operator.handlers.evaluation import Evaluations
from canopy_operator.handlers.reconcile import Pass, Report
from canopy_operator.handlers.wiring import (
    OperatorSettings,
    api_client,
    backend_for,
    close_git_workspace,
    delivery_for,
    open_git_workspace,
)
from canopy_operator.k8s.errors import Conflict, KubeError, NotFound
from canopy_operator.k8s.gateway import Gateway

log = logging.getLogger("canopy_operator")
STATE: dict[str, Any] = {}
MAX_BACKOFF = 300.0


def _now() -> datetime:
    return datetime.now(UTC)


def _gateway() -> Gateway:
    gateway = STATE.get("gateway")
    assert isinstance(gateway, Gateway), "startup handler did not run"
    return gateway


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """In-cluster service account, else the kubeconfig named by $KUBECONFIG at the time of login."""
    info: kopf.ConnectionInfo | None = kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)
    return info


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    STATE["settings"] = OperatorSettings.from_env()
    STATE["gateway"] = Gateway(await api_client())
    STATE["git"] = open_git_workspace(STATE["settings"])
    observe.reset()
    # A namespaced install (a Role) cannot list CRDs or namespaces: skip Kopf's scanning, not retry it for a minute.
    settings.scanning.disabled = not await access.may_scan_cluster(STATE["gateway"].api)


@kopf.on.cleanup()
async def close(**_: Any) -> None:
    git = STATE.pop("git", None)
    if git is not None:
        close_git_workspace(git, STATE["settings"])
    gateway = STATE.pop("gateway", None)
    if isinstance(gateway, Gateway):
        await gateway.api.close()


def _status_dump(status: PromptExperimentStatus) -> dict[str, Any]:
    return status.model_dump(mode="json", by_alias=True, exclude_none=True)


async def reconcile_once(namespace: str, name: str, body: dict[str, Any]) -> Report:
    """One pass; the status is written only when it changed, with a resourceVersion precondition."""
    gateway = _gateway()
    settings: OperatorSettings = STATE["settings"]
    http_clients: list[Any] = []
    rv = {"value": body.get("metadata", {}).get("resourceVersion")}
    old = body.get("status") or {}

    async def persist(status: PromptExperimentStatus) -> None:
        new = _status_dump(status)
        patch = _merge_patch(old, new)
        if patch:
            failpoint("before-status-write")
            obj = await gateway.patch_experiment_status(namespace, name, patch, rv["value"])
            failpoint("after-status-write")
            rv["value"] = obj["metadata"]["resourceVersion"]
            old.clear()
            old.update(obj.get("status") or {})

    def backend(spec: PromptExperimentSpec) -> Any:
        http, reader = backend_for(spec, settings)
        http_clients.append(http)
        return observe.TimedReader(reader)

    watch = observe.PassWatch(namespace, name, body)
    try:
        factory = partial(delivery_for, gateway, STATE["git"], namespace, name)
        evaluations = Evaluations.for_body(gateway, namespace, body)
        report = await Pass(body, factory, backend, persist, _now, evaluations).run()
        await persist(report.status)
        watch.report(report)
    finally:
        watch.close()
        for http in http_clients:
            await http.aclose()
    return report


def _merge_patch(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """A JSON merge patch turning ``old`` into ``new`` (nulls delete keys); empty when equal."""
    patch: dict[str, Any] = {}
    for key in old.keys() - new.keys():
        patch[key] = None
    for key, value in new.items():
        if key not in old:
            patch[key] = value
        elif isinstance(value, dict) and isinstance(old[key], dict):
            sub = _merge_patch(old[key], value)
            if sub:
                patch[key] = sub
        elif value != old[key]:
            patch[key] = value
    return patch


@kopf.on.update(GROUP, VERSION, PLURAL, id="wake", field="spec")
async def wake(memo: Any, **_: Any) -> None:
    """A spec change (e.g. an approval) wakes the daemon at once instead of at the next interval."""
    event = memo.get("wake")
    if isinstance(event, asyncio.Event):
        event.set()


@kopf.daemon(GROUP, VERSION, PLURAL, id="reconcile", cancellation_timeout=10.0)
async def run(
    namespace: str | None, name: str, body: kopf.Body, memo: Any, stopped: kopf.DaemonStopped, **_: Any
) -> None:
    """Reconcile at the poll interval (faster while a change is in flight) until the object goes away."""
    assert namespace is not None, "PromptExperiment is namespaced"
    wake_event = memo.setdefault("wake", asyncio.Event())
    failures = 0
    loop = asyncio.get_running_loop()
    while not stopped:
        if body.get("metadata", {}).get("deletionTimestamp"):
            return
        started = loop.time()
        try:
            report = await reconcile_once(namespace, name, dict(body))
            _post(body, report)
            failures = failures + 1 if report.failed else 0
            delay = report.next_in if not report.failed else min(report.next_in * 2 ** min(failures, 6), MAX_BACKOFF)
        except NotFound:
            return
        except Conflict:
            delay = 0.5  # someone wrote the object since we read it: read the fresh one and redo the pass
        except KubeError as exc:
            failures += 1
            delay = min(2.0 * 2**failures, MAX_BACKOFF)
            log.warning("reconcile of %s/%s failed: %s", namespace, name, exc)
        wake_event.clear()
        # The period is the interval, not interval + pass time; +-5 % jitter spreads experiments created together.
        await _sleep(stopped, wake_event, max(0.0, delay * random.uniform(0.95, 1.05) - (loop.time() - started)))  # noqa: S311 - jitter


async def _sleep(stopped: kopf.DaemonStopped, wake_event: asyncio.Event, delay: float) -> None:
    """Sleep ``delay`` seconds, or until the daemon is stopped or woken (no polling while idle)."""
    waiters = [asyncio.ensure_future(stopped.wait()), asyncio.ensure_future(wake_event.wait())]
    try:
        await asyncio.wait(waiters, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)


def _post(body: kopf.Body, report: Report) -> None:
    for type_, reason, message in report.events:
        kopf.event(body, type=type_, reason=reason, message=message[:1024])


@kopf.on.delete(GROUP, VERSION, PLURAL, id="restore", optional=False)
async def restore(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> None:
    """onDelete Restore: put back the champion-only config; never hang (bounded attempts, then release)."""
    observe.forget(namespace or "", name)
    try:
        spec = PromptExperimentSpec.model_validate(body.get("spec") or {})
        status = PromptExperimentStatus.model_validate(body.get("status") or {})
    except ValueError as exc:
        kopf.warn(body, reason="RestoreSkipped", message=f"unreadable spec or status: {exc}")
        return
    if spec.promotion.on_delete == "Keep" or status.original is None:
        kopf.info(body, reason="ConfigKept", message="onDelete is Keep or nothing was changed: config left as it is")
        return
    assert namespace is not None, "PromptExperiment is namespaced"
    settings: OperatorSettings = STATE["settings"]
    keys = lc.restore_keys(spec, status, status.original)
    last = ""
    for attempt in range(settings.delete_attempts):
        try:
            delivery = await delivery_for(_gateway(), STATE["git"], namespace, name, spec, status, restoring=True)
            result = await delivery.write(keys)
            kopf.info(body, reason="ConfigRestored", message=f"champion-only config restored ({result.revision})")
            return
        except Exception as exc:
            last = str(exc)
            await asyncio.sleep(min(2.0**attempt, 5.0))
    kopf.warn(
        body,
        reason="RestoreFailed",
        message=f"gave up restoring after {settings.delete_attempts} attempts: {last}",
    )
