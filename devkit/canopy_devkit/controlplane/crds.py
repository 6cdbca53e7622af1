"""Install CustomResourceDefinitions and wait until discovery serves them (as envtest does)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

from canopy_devkit.controlplane.rest import RestClient

CRD_PLURAL = "customresourcedefinitions"
DISCOVERY_TIMEOUT = 10.0
DISCOVERY_INTERVAL = 0.1


def default_crd_dir() -> Path:
    """The repository's ``crds/`` folder (this module is ``<repo>/devkit/canopy_devkit/controlplane/crds.py``).

    The devkit is installed editable from its repository (``make``); a wheel install has no ``crds/`` beside
    it, so pass the CRD paths explicitly there.
    """
    return Path(__file__).resolve().parents[3] / "crds"


def load_crds(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """Every CustomResourceDefinition document in the given files, or in ``*.yaml`` of given folders."""
    files: list[Path] = []
    for path in paths:
        files.extend(sorted(path.glob("*.yaml")) + sorted(path.glob("*.yml")) if path.is_dir() else [path])
    crds: list[dict[str, Any]] = []
    for file in files:
        with file.open(encoding="utf-8") as f:
            crds.extend(d for d in yaml.safe_load_all(f) if d and d.get("kind") == "CustomResourceDefinition")
    return crds


def served_resources(crds: Sequence[dict[str, Any]]) -> set[tuple[str, str]]:
    """(group/version, plural) pairs that discovery must list once the CRDs are served."""
    pairs: set[tuple[str, str]] = set()
    for crd in crds:
        spec = crd["spec"]
        for version in spec["versions"]:
            if version.get("served", True):
                pairs.add((f"{spec['group']}/{version['name']}", spec["names"]["plural"]))
    return pairs


def install_crds(client: RestClient, crds: Sequence[dict[str, Any]]) -> None:
    """Create each CRD, or update it when it already exists."""
    for crd in crds:
        client.create_or_replace(crd, CRD_PLURAL)


def _missing(client: RestClient, wanted: set[tuple[str, str]]) -> set[tuple[str, str]]:
    missing: set[tuple[str, str]] = set()
    for group_version in {gv for gv, _ in wanted}:
        response = client.request("GET", f"/apis/{group_version}")
        names = {r["name"] for r in response.json().get("resources", [])} if response.status_code == 200 else set()
        missing |= {(gv, plural) for gv, plural in wanted if gv == group_version and plural not in names}
    return missing


def _unlistable(client: RestClient, wanted: set[tuple[str, str]]) -> set[tuple[str, str]]:
    # Discovery lists a new resource before its watch cache is ready; until then a list answers
    # 429 "storage is (re)initializing", which clients such as Kopf report as errors and retry.
    return {(gv, plural) for gv, plural in wanted if client.status(f"/apis/{gv}/{plural}?limit=1") != 200}


def wait_until_served(
    client: RestClient,
    crds: Sequence[dict[str, Any]],
    timeout: float = DISCOVERY_TIMEOUT,
    interval: float = DISCOVERY_INTERVAL,
) -> None:
    """Poll until discovery lists every served version's plural and it can be listed.

    TimeoutError names the resources still missing.
    """
    wanted = served_resources(crds)
    deadline = time.monotonic() + timeout
    while missing := _missing(client, wanted) or _unlistable(client, wanted):
        if time.monotonic() >= deadline:
            listed = ", ".join(sorted(f"{gv}/{plural}" for gv, plural in missing))
            raise TimeoutError(f"discovery did not serve {listed} within {timeout:.0f}s")
        time.sleep(interval)
