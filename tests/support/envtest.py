"""Helpers of the envtest-style integration fixtures: kubectl, namespace names, the operator's RBAC."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
from collections.abc import Sequence
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CLUSTERROLE_PATH = REPO_ROOT / "manifests" / "rbac" / "clusterrole.yaml"
USER_ROLES_PATH = REPO_ROOT / "manifests" / "rbac" / "user-roles.yaml"
SAMPLES_DIR = REPO_ROOT / "manifests" / "samples"
OPERATOR_NAMESPACE = "canopy-system"
OPERATOR_SERVICE_ACCOUNT = "canopy-operator"
TEST_BINDING_NAME = "canopy-operator-envtest"


def running_in_ci() -> bool:
    """True under CI=true (or 1/yes): integration tests must then fail, never skip."""
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def namespace_name(test_name: str) -> str:
    """A unique, valid namespace name (DNS-1123 label) derived from a test's name."""
    slug = re.sub(r"[^a-z0-9-]+", "-", test_name.lower().removeprefix("test_")).strip("-")[:40].strip("-")
    return f"t-{slug or 'test'}-{secrets.token_hex(3)}"


class Kubectl:
    """Runs the real kubectl against the test API server; defaults to the admin kubeconfig."""

    def __init__(self, default_kubeconfig: Path, cache_dir: Path) -> None:
        self.default_kubeconfig = default_kubeconfig
        self.cache_dir = cache_dir

    def __call__(
        self,
        *args: str,
        kubeconfig: Path | None = None,
        input: str | None = None,
        check: bool = True,
        timeout: float = 60.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``kubectl <args>``; with ``check`` a non-zero exit raises AssertionError showing stderr."""
        config = kubeconfig or self.default_kubeconfig
        env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        command = ["kubectl", f"--kubeconfig={config}", f"--cache-dir={self.cache_dir}", *args]
        result = subprocess.run(
            command, input=input, capture_output=True, text=True, timeout=timeout, env=env, check=False
        )
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(command)} exited {result.returncode}: {result.stderr.strip()}")
        return result


def cluster_role_names(path: Path = CLUSTERROLE_PATH) -> list[str]:
    """Names of the ClusterRoles in the shipped RBAC file."""
    with path.open(encoding="utf-8") as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    return [d["metadata"]["name"] for d in docs if d.get("kind") == "ClusterRole"]


def operator_binding_manifest(role_names: Sequence[str]) -> str:
    """ClusterRoleBindings of the given roles to ServiceAccount canopy-system/canopy-operator."""
    docs = [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": f"{TEST_BINDING_NAME}-{name}"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": OPERATOR_SERVICE_ACCOUNT, "namespace": OPERATOR_NAMESPACE}],
        }
        for name in role_names
    ]
    return yaml.safe_dump_all(docs, sort_keys=False)
