"""Fixtures of the e2e tier: one cluster per session (a real node here, kind or any kubeconfig elsewhere), the
images built and loaded, the shipped manifests installed, and a fresh namespace per test.

See :mod:`tests.support.node_e2e` for how the cluster is chosen and the environment variables.
"""

from __future__ import annotations

import os
import secrets
import shlex
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.envtest import running_in_ci
from tests.support.node_e2e import (
    OPERATOR_NAMESPACE,
    REPO_ROOT,
    Cluster,
    CommandFailed,
    Kube,
    docker_available,
    install_overlay,
    operator_pod,
    play_restricted_v2,
    run,
    wait_for,
)

_E2E_DIR = Path(__file__).parent
#: Runs last: it stops the session's node and checks the machine.
LAST_TESTS = ("test_machine_left_as_found_after_the_node_stops",)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _E2E_DIR in Path(item.path).parents:
            item.add_marker(pytest.mark.e2e)
    items.sort(key=lambda item: item.name in LAST_TESTS)


def _requested() -> bool:
    """The tier runs when asked for (``make e2e`` sets CANOPY_E2E=1) or under CI; a plain ``pytest tests`` on a
    root machine would otherwise start a node and build images in the middle of a unit-test run."""
    return running_in_ci() or os.environ.get("CANOPY_E2E") == "1" or bool(os.environ.get("E2E_KUBECONFIG"))


def _unavailable(reason: str) -> None:
    """Skip, or fail under CI=true (the tier must never be skipped there)."""
    if running_in_ci():
        pytest.fail(f"e2e tier cannot run under CI=true: {reason}", pytrace=False)
    pytest.skip(reason)


def _build_images() -> Path:
    out = subprocess.run(
        ["bash", str(REPO_ROOT / "hack" / "images.sh")], capture_output=True, text=True, timeout=3600, check=False
    )
    if out.returncode != 0:
        _unavailable(f"hack/images.sh failed:\n{out.stderr[-3000:]}")
    return Path(out.stdout.strip().splitlines()[-1])


def _existing_cluster(kubeconfig: Path, tmp: Path) -> Cluster:
    load = os.environ.get("E2E_IMAGE_LOAD", "")

    def load_images(archive: Path) -> None:
        if load:
            run(*shlex.split(load.replace("{archive}", str(archive))), timeout=900)

    return Cluster(Kube(kubeconfig, tmp / "kube-cache"), "existing", load_images)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if not _requested():
        pytest.skip("the e2e tier runs with `make e2e` (CANOPY_E2E=1) or under CI=true")
    tmp = tmp_path_factory.mktemp("e2e")
    if kubeconfig := os.environ.get("E2E_KUBECONFIG"):
        yield _existing_cluster(Path(kubeconfig), tmp)
        return
    if kind_name := os.environ.get("E2E_KIND_CLUSTER"):
        yield from _kind_cluster(kind_name, tmp)
        return
    yield from _real_node(tmp)


def _kind_cluster(name: str, tmp: Path) -> Iterator[Cluster]:
    if reason := docker_available():
        _unavailable(f"E2E_KIND_CLUSTER is set but {reason}")
    if name not in run("kind", "get", "clusters", check=False).split():
        run("kind", "create", "cluster", "--name", name, "--wait", "180s", timeout=900)
    kubeconfig = tmp / "kind.kubeconfig"
    kubeconfig.write_text(run("kind", "get", "kubeconfig", "--name", name), encoding="utf-8")

    def load_images(archive: Path) -> None:
        run("kind", "load", "image-archive", str(archive), "--name", name, timeout=900)

    try:
        yield Cluster(Kube(kubeconfig, tmp / "kube-cache"), "kind", load_images)
    finally:
        if os.environ.get("E2E_KEEP_CLUSTER") != "1":
            run("kind", "delete", "cluster", "--name", name, check=False)


def _real_node(tmp: Path) -> Iterator[Cluster]:
    from canopy_devkit.node import Node, NodeAssetsMissing, NodeError

    if os.geteuid() != 0:
        _unavailable("a real node needs root (or set E2E_KUBECONFIG / E2E_KIND_CLUSTER)")
    node = Node()
    try:
        node.start()
    except NodeAssetsMissing as e:
        _unavailable(f"the real node's programs are missing: {e}")
    except NodeError as e:
        _unavailable(f"the real node did not start: {e}")
    try:
        yield Cluster(Kube(node.admin_kubeconfig(), tmp / "kube-cache"), "node", node.load_images, node=node)
    finally:
        node.stop()


@pytest.fixture(scope="session")
def images(cluster: Cluster) -> Path:
    """The operator and simulator images (``hack/images.sh``), loaded into the cluster."""
    archive = _build_images()
    began = time.monotonic()
    cluster.load_images(archive)
    cluster.notes.append(f"images loaded in {time.monotonic() - began:.1f}s")
    return archive


@pytest.fixture(scope="session")
def installed(cluster: Cluster, images: Path, tmp_path_factory: pytest.TempPathFactory) -> Kube:
    """``kubectl apply -k`` of an overlay over the shipped ``manifests/`` (local image, never pulled).

    On the dev kit's node every pod is admitted as OpenShift's restricted-v2 would admit it (an assigned high
    UID, group 0, pinned UIDs refused), so each e2e test is also an arbitrary-UID run."""
    kube = cluster.kube
    if cluster.node is not None:  # the dev kit's node enables MutatingAdmissionPolicy; kind and others may not
        play_restricted_v2(cluster)
    overlay = install_overlay(tmp_path_factory.mktemp("overlay"))
    kube("apply", "-k", str(overlay), timeout=180)
    try:
        kube("-n", OPERATOR_NAMESPACE, "rollout", "status", "deployment/canopy-operator", "--timeout=180s", timeout=200)
    except CommandFailed as e:
        described = kube("-n", OPERATOR_NAMESPACE, "describe", "pods", check=False)
        raise AssertionError(f"the operator Deployment did not become available: {e}\n{described[-4000:]}") from None
    wait_for("the operator pod to be ready", lambda: operator_pod(kube), 120)
    return kube


@pytest.fixture
def namespace(request: pytest.FixtureRequest, installed: Kube) -> Iterator[str]:
    """A fresh namespace name for one test (the test creates it, with the backend); deleted afterwards."""
    slug = request.node.name.removeprefix("test_").replace("_", "-")[:30].strip("-")
    name = f"e2e-{slug}-{secrets.token_hex(2)}"
    yield name
    installed("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)
