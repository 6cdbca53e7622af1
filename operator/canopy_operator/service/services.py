"""What an operator process holds from start-up to clean-up, and the two things the handlers ask of it:
run one reconcile pass of an experiment, and restore its config when it is deleted.

Kopf keeps one :class:`Services` in its ``memo``; nothing lives in module globals.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

from canopy_operator.api.spec import PromptExperimentSpec
from canopy_operator.api.status import PromptExperimentStatus
from canopy_operator.core import lifecycle as lc
from canopy_operator.core.redact import Redactor
from canopy_operator.core.status import dump, merge_patch
from canopy_operator.failpoints import Failpoints
from canopy_operator.gitops.repo import GitWorkspace
from canopy_operator.k8s.client import api_client
from canopy_operator.k8s.gateway import Gateway
from canopy_operator.service import wiring
from canopy_operator.service.evaluations import Evaluations
from canopy_operator.service.observe import Observer
from canopy_operator.service.reconcile import Backend, Ports, reconcile
from canopy_operator.service.report import Report
from canopy_operator.service.settings import Settings
from canopy_operator.sources.canopy.source import CanopySource
from canopy_operator.telemetry.metrics import Metrics, MetricsServer


def utcnow() -> datetime:
    return datetime.now(UTC)


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

    @classmethod
    async def open(cls, settings: Settings, metrics: Metrics, redactor: Redactor) -> Services:
        """Connect to the API server and open the Git cache."""
        gateway = Gateway(await api_client(settings.kubeconfig))
        server = metrics.start_server(settings.metrics_port, settings.metrics_addr) if settings.metrics_port else None
        return cls(
            settings=settings,
            gateway=gateway,
            git=wiring.open_git_workspace(settings),
            observer=Observer(metrics),
            redactor=redactor,
            failpoint=settings.make_failpoints(),
            metrics_server=server,
        )

    async def close(self) -> None:
        if self.metrics_server is not None:
            self.metrics_server.close()
        wiring.close_git_workspace(self.git, self.settings)
        await self.gateway.api.close()

    async def reconcile(self, namespace: str, name: str, body: Mapping[str, Any]) -> Report:
        """One pass; the status is written only when it changed, with a resourceVersion precondition."""
        rv = {"value": body.get("metadata", {}).get("resourceVersion")}
        old: dict[str, Any] = dict(body.get("status") or {})
        sources: list[CanopySource] = []

        async def write(new: dict[str, Any]) -> None:
            patch = merge_patch(old, new)
            if not patch:
                return
            self.failpoint("before-status-write")
            obj = await self.gateway.patch_experiment_status(namespace, name, patch, rv["value"])
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
            source = wiring.source_for(spec, self.settings, self.observer.time_request, self.tls)
            sources.append(source)
            votes = wiring.votes_for(spec, apis)
            return source if votes is None else wiring.SplitBackend(source, votes)

        ports = Ports(
            delivery=partial(
                wiring.delivery_for,
                self.gateway,
                self.git,
                namespace,
                name,
                redactor=self.redactor,
                failpoint=self.failpoint,
            ),
            backend=backend,
            prompts=partial(wiring.prompts_for, apis=apis),
            persist=persist,
            now=utcnow,
            evaluations=Evaluations.for_body(self.gateway, namespace, body, self.settings),
            failpoint=self.failpoint,
            backend_hosts=self.settings.backend_hosts,
        )
        watch = self.observer.watch(namespace, name, body)
        try:
            report = await reconcile(body, ports)
            await write(report.raw_status if report.raw_status is not None else dump(report.status))
            if report.raw_status is None:
                watch.report(report)
        finally:
            watch.close()
            for source in sources:
                await source.aclose()
            await apis.aclose()
        return report

    async def restore(self, namespace: str, name: str, body: Mapping[str, Any]) -> str | None:
        """onDelete Restore: write the champion-only config; the revision, or None when there is nothing to do.

        Raises :class:`RestoreSkipped` when spec or status is unreadable; delivery errors propagate (the
        caller retries them)."""
        try:
            spec = PromptExperimentSpec.model_validate(body.get("spec") or {})
            status = PromptExperimentStatus.model_validate(body.get("status") or {})
        except ValueError as exc:
            raise RestoreSkipped(f"unreadable spec or status: {exc}") from exc
        if spec.promotion.on_delete == "Keep" or status.original is None:
            return None
        keys = lc.restore_keys(spec, status, status.original)
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
        result = await delivery.write(keys)
        return result.revision
