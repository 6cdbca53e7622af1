"""Suite-wide pytest configuration."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from canopy_devkit.controlplane import AssetsMissing, find_assets

_INTEGRATION_DIR = Path(__file__).parent / "integration"


#: The operator's safe defaults refuse what a test machine needs: backends, Git servers and forges run on
#: loopback, over plain HTTP, and some repositories are file:// ones. Every operator a test starts (in process
#: or as a child process) inherits these; a test of the refusals sets them back for its own operator.
TEST_MACHINE_SETTINGS = {
    "CANOPY_BACKEND_HOSTS": "127.0.0.1,localhost",
    "CANOPY_ALLOW_INSECURE_HTTP": "true",
    "CANOPY_ALLOW_FILE_REPOSITORIES": "true",
}


def pytest_configure(config: pytest.Config) -> None:
    for name, value in TEST_MACHINE_SETTINGS.items():
        os.environ.setdefault(name, value)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under tests/integration/ needs the API server: mark it, so `-m "not integration"` works."""
    for item in items:
        if _INTEGRATION_DIR in Path(item.path).parents:
            item.add_marker(pytest.mark.integration)


def pytest_report_header() -> str:
    try:
        assets = find_assets()
    except AssetsMissing:
        return "envtest: kube-apiserver/etcd not found (run `make envtest-assets`)"
    return f"envtest: {assets.kube_apiserver}, {assets.etcd}"
