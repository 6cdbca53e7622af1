"""Process-wide wiring: the Kubernetes API client, delivery and backend factories, settings from env."""

from __future__ import annotations

import os
from dataclasses import dataclass

from kubernetes_asyncio import client, config

from canopy_operator.api.base import parse_duration
from canopy_operator.api.spec import PromptExperimentSpec
from canopy_operator.canopy.client import CanopyClient
from canopy_operator.handlers.collection import ClientReader
from canopy_operator.k8s.configmap_delivery import ConfigMapDelivery, DeliveryError
from canopy_operator.k8s.gateway import Gateway


@dataclass(frozen=True)
class OperatorSettings:
    """Settings from the environment (the Deployment sets them)."""

    max_backend_body: int = 32 * 1024 * 1024
    delete_attempts: int = 3

    @classmethod
    def from_env(cls) -> OperatorSettings:
        return cls(
            max_backend_body=int(os.environ.get("CANOPY_MAX_BACKEND_BODY", str(32 * 1024 * 1024))),
            delete_attempts=int(os.environ.get("CANOPY_DELETE_ATTEMPTS", "3")),
        )


async def api_client() -> client.ApiClient:
    """An ApiClient from the in-cluster config, else $KUBECONFIG / ~/.kube/config."""
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]  # untyped in the client
    except config.ConfigException:
        # The client reads $KUBECONFIG once at import; read it now so the current environment wins.
        await config.load_kube_config(config_file=os.environ.get("KUBECONFIG") or None)
    return client.ApiClient()


def delivery_for(gateway: Gateway, namespace: str, spec: PromptExperimentSpec) -> ConfigMapDelivery:
    """The delivery the spec asks for."""
    if spec.delivery.mode == "Git":
        raise DeliveryError("delivery.mode Git is not available in this build")
    cm = spec.delivery.config_map
    return ConfigMapDelivery(gateway, namespace, cm.name, cm.key, cm.deployment)


def backend_for(spec: PromptExperimentSpec, settings: OperatorSettings) -> tuple[CanopyClient, ClientReader]:
    """An HTTP client for the spec's backend (the caller closes it)."""
    http = CanopyClient(
        spec.backend.url,
        timeout=parse_duration(spec.backend.request_timeout),
        max_body_bytes=settings.max_backend_body,
    )
    return http, ClientReader(http)
