"""A throw-away Kopf operator for the harness's own tests (not the real one: canopy_operator.handlers).

On create of a PromptExperiment it writes ``status.phase: Pending`` and ``status.observedGeneration``
through the status subresource. Its Kopf settings are the ones the real operator needs against a
strict status schema and a least-privilege user. Handlers live in a private registry, so importing
this module never adds handlers to an operator run with Kopf's global registry.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from canopy_operator.api import GROUP, PLURAL, VERSION

PREFIX = GROUP  # canopy.genaiops.io
registry = kopf.OperatorRegistry()


@kopf.on.login(registry=registry)
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    # Read KUBECONFIG at login time. Kopf's default login through kubernetes_asyncio reads the
    # KUBECONFIG that was set when kubernetes_asyncio was first imported, and sets that library's
    # process-wide default configuration.
    info: kopf.ConnectionInfo | None = kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)
    return info


@kopf.on.startup(registry=registry)
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # A strict status schema prunes status.kopf and status.<handler id>: keep Kopf's state in annotations.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=PREFIX, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{PREFIX}/finalizer"
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 10
    settings.watching.client_timeout = 15
    settings.networking.request_timeout = 15


@kopf.on.create(GROUP, VERSION, PLURAL, id="harness-create", registry=registry)
def on_create(meta: kopf.Meta, patch: kopf.Patch, **_: Any) -> None:
    patch.status["phase"] = "Pending"
    patch.status["observedGeneration"] = meta.get("generation")
