"""Running the operator: Kopf's loop with the handlers of this package and the process's services in memo.

With ``CANOPY_LEADER_ELECTION`` on, Kopf runs only while this process holds the leader Lease
(:mod:`canopy_operator.handlers.leadership`, docs/high-availability.md); off, it runs at once, alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import platform
from typing import Any

import kopf
from kopf._core.engines.peering import Identity  # the NewType kopf.run's identity is typed with

from canopy_operator.handlers import experiment as _registered  # noqa: F401 - registers the handlers
from canopy_operator.handlers.leadership import run_elected
from canopy_operator.service.settings import Settings
from canopy_operator.telemetry.logs import configure_logging
from canopy_operator.telemetry.metrics import Metrics

QUIET_HANDLERS = ("wake",)
"""Handlers that run on every event of every experiment: Kopf's success line for them is not logged."""


def run(settings: Settings, namespaces: list[str], *, log_prompts: bool = False) -> None:
    """Configure JSON logs and run Kopf until it is stopped (every namespace when ``namespaces`` is empty)."""
    handler = configure_logging(settings.log_level, log_prompts=log_prompts, quiet_handlers=QUIET_HANDLERS)
    metrics = Metrics()
    options: dict[str, Any] = {
        # Kopf's peering is off: replicas coordinate through a Lease instead (docs/high-availability.md).
        "standalone": True,
        # Kopf would otherwise name itself after the login user (getpass.getuser), which fails for a UID the image's
        # /etc/passwd does not know: the arbitrary UID OpenShift's restricted-v2 runs the pod as.
        "identity": Identity(operator_identity()),
        "clusterwide": not namespaces,
        "namespaces": namespaces,
        "liveness_endpoint": settings.liveness or None,
        "memo": kopf.Memo(settings=settings, metrics=metrics, redactor=handler.redactor),
    }
    if not settings.leader_election:
        kopf.run(**options)
        return

    async def operate() -> None:
        await kopf.operator(**options)

    with contextlib.suppress(asyncio.CancelledError):  # as kopf.run: a cancelled operator is a stopped one
        asyncio.run(run_elected(settings, metrics, operate))


def operator_identity() -> str:
    """How the operator names itself to Kopf: the host (the pod's name), never the login user."""
    return f"canopy-operator@{platform.node() or 'unknown-host'}"
