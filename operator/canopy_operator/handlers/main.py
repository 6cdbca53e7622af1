"""Running the operator: Kopf's loop with the handlers of this package and the process's services in memo."""

from __future__ import annotations

import platform

import kopf
from kopf._core.engines.peering import Identity  # the NewType kopf.run's identity is typed with

from canopy_operator.handlers import experiment as _registered  # noqa: F401 - registers the handlers
from canopy_operator.service.settings import Settings
from canopy_operator.telemetry.logs import configure_logging
from canopy_operator.telemetry.metrics import Metrics


def run(settings: Settings, namespaces: list[str], *, log_prompts: bool = False) -> None:
    """Configure JSON logs and run Kopf until it is stopped (every namespace when ``namespaces`` is empty)."""
    handler = configure_logging(settings.log_level, log_prompts=log_prompts)
    kopf.run(
        standalone=True,
        # Kopf would otherwise name itself after the login user (getpass.getuser), which fails for a UID the image's
        # /etc/passwd does not know: the arbitrary UID OpenShift's restricted-v2 runs the pod as.
        identity=Identity(operator_identity()),
        clusterwide=not namespaces,
        namespaces=namespaces,
        liveness_endpoint=settings.liveness or None,
        memo=kopf.Memo(settings=settings, metrics=Metrics(), redactor=handler.redactor),
    )


def operator_identity() -> str:
    """How the operator names itself to Kopf: the host (the pod's name), never the login user."""
    return f"canopy-operator@{platform.node() or 'unknown-host'}"
