"""Suite-wide pytest configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from canopy_devkit.controlplane import AssetsMissing, find_assets

_INTEGRATION_DIR = Path(__file__).parent / "integration"


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
