"""Kubeconfig files with embedded certificate data (what kubectl, Kopf and the Python clients all read)."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import yaml

from canopy_devkit.controlplane.certs import KeyPair

CLUSTER_NAME = "canopy-envtest"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def render_kubeconfig(server: str, ca_pem: bytes, user: str, client: KeyPair, namespace: str = "default") -> str:
    """A single-context kubeconfig for ``user`` at ``server``; everything is inline (*-data fields)."""
    context = f"{user}@{CLUSTER_NAME}"
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": CLUSTER_NAME, "cluster": {"server": server, "certificate-authority-data": _b64(ca_pem)}}],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": _b64(client.cert_pem),
                    "client-key-data": _b64(client.key_pem),
                },
            }
        ],
        "contexts": [{"name": context, "context": {"cluster": CLUSTER_NAME, "user": user, "namespace": namespace}}],
        "current-context": context,
        "preferences": {},
    }
    return yaml.safe_dump(config, sort_keys=False)


def write_private(path: Path, data: bytes | str) -> Path:
    """Write a file only the current user can read (keys, kubeconfigs)."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(raw)
    return path
