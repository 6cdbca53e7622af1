"""The Kubernetes API client the operator's own calls use (Kopf keeps its own connection)."""

from __future__ import annotations

from kubernetes_asyncio import client, config


async def api_client(kubeconfig: str | None = None, context: str | None = None) -> client.ApiClient:
    """An ApiClient from the in-cluster config, else ``kubeconfig`` (else ~/.kube/config) at ``context``
    (else its current context)."""
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]  # untyped in the client
    except config.ConfigException:
        await config.load_kube_config(config_file=kubeconfig, context=context)
    return client.ApiClient()
