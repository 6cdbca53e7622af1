"""``patch_status``: a conflict from a metadata-only write is retried on the fresh resourceVersion; any other
conflict (a new generation, a status written by someone else, a deletion begun) fails the pass as before."""

from __future__ import annotations

from typing import Any

import pytest

from canopy_operator.k8s.errors import Conflict, Forbidden
from canopy_operator.service.services import STATUS_WRITE_ATTEMPTS, patch_status

META = {"name": "exp", "generation": 3, "resourceVersion": "10"}
BASED_ON = {"phase": "Pending"}
PATCH = {"phase": "Progressing"}


class FakeGateway:
    """Refuses the first ``conflicts`` status patches; ``fresh`` is what a read finds meanwhile."""

    def __init__(self, conflicts: int, fresh: dict[str, Any]) -> None:
        self.conflicts = conflicts
        self.fresh = fresh
        self.patches: list[str | None] = []
        self.reads = 0

    async def patch_experiment_status(
        self, namespace: str, name: str, status: dict[str, Any], resource_version: str | None = None
    ) -> dict[str, Any]:
        self.patches.append(resource_version)
        if len(self.patches) <= self.conflicts:
            raise Conflict(f"patch PromptExperiment {namespace}/{name} status: 409 Conflict")
        return {"metadata": {"resourceVersion": "99"}, "status": {**BASED_ON, **status}}

    async def read_experiment(self, namespace: str, name: str) -> dict[str, Any]:
        self.reads += 1
        return self.fresh


def fresh(**changes: Any) -> dict[str, Any]:
    meta = {**META, "resourceVersion": "11", "labels": {"team": "search"}, "finalizers": ["x/finalizer"]}
    status = changes.pop("status", BASED_ON)
    meta.update(changes)
    return {"metadata": meta, "spec": {}, "status": status}


async def write(gateway: FakeGateway) -> dict[str, Any]:
    obj, tried = await patch_status(gateway, "ns", "exp", PATCH, "10", META, BASED_ON)  # type: ignore[arg-type]
    assert tried == gateway.patches  # every version the write was tried on is one it replaced
    return obj


async def test_no_conflict_is_one_patch_and_no_read() -> None:
    gateway = FakeGateway(0, fresh())
    obj = await write(gateway)
    assert obj["status"] == {"phase": "Progressing"}
    assert (gateway.patches, gateway.reads) == (["10"], 0)


async def test_a_metadata_only_write_is_retried_on_the_fresh_resource_version() -> None:
    gateway = FakeGateway(1, fresh())
    obj = await write(gateway)
    assert obj["metadata"]["resourceVersion"] == "99"
    assert (gateway.patches, gateway.reads) == (["10", "11"], 1)


@pytest.mark.parametrize(
    "moved",
    [
        fresh(generation=4),
        fresh(status={"phase": "Running"}),
        fresh(status={}),
        fresh(deletionTimestamp="2026-11-30T08:00:00Z"),
    ],
    ids=["new-generation", "status-written-by-someone-else", "status-cleared", "deletion-begun"],
)
async def test_a_conflict_that_moved_what_the_pass_read_fails_the_pass(moved: dict[str, Any]) -> None:
    gateway = FakeGateway(1, moved)
    with pytest.raises(Conflict):
        await write(gateway)
    assert (gateway.patches, gateway.reads) == (["10"], 1)


async def test_retries_are_bounded() -> None:
    gateway = FakeGateway(100, fresh())
    with pytest.raises(Conflict):
        await write(gateway)
    assert len(gateway.patches) == STATUS_WRITE_ATTEMPTS
    assert gateway.reads == STATUS_WRITE_ATTEMPTS - 1


async def test_a_watch_already_past_a_metadata_only_write_gives_the_first_try_its_version() -> None:
    """Kopf's finalizer patch landed while the pass computed: the watch shows it, so no refused write, no read."""
    gateway = FakeGateway(0, fresh())
    seen = fresh()  # resourceVersion 11, same generation and status, a finalizer added
    obj, tried = await patch_status(gateway, "ns", "exp", PATCH, "10", META, BASED_ON, lambda: seen)  # type: ignore[arg-type]
    assert obj["status"] == {"phase": "Progressing"}
    assert (gateway.patches, gateway.reads, tried) == (["11"], 0, ["11"])


@pytest.mark.parametrize(
    "seen",
    [
        fresh(generation=4),  # the spec changed: the pass must be redone on it, not written over it
        fresh(status={"phase": "Running"}),  # someone else wrote the status
        fresh(deletionTimestamp="2026-11-30T00:00:00Z"),
        {"metadata": {**META}, "status": BASED_ON},  # the same version: nothing to learn
    ],
)
async def test_a_watch_showing_anything_else_leaves_the_precondition_alone(seen: dict[str, Any]) -> None:
    gateway = FakeGateway(0, fresh())
    await patch_status(gateway, "ns", "exp", PATCH, "10", META, BASED_ON, lambda: seen)  # type: ignore[arg-type]
    assert gateway.patches == ["10"]


class ReplacingGateway(FakeGateway):
    """Also replaces the status; RBAC refuses that ``forbidden`` times (a ClusterRole without ``update``)."""

    def __init__(self, conflicts: int, fresh: dict[str, Any], forbidden: int = 0) -> None:
        super().__init__(conflicts, fresh)
        self.replaces_status = True
        self.forbidden = forbidden
        self.replaced: list[tuple[str, dict[str, Any]]] = []

    async def replace_experiment_status(
        self, namespace: str, name: str, status: dict[str, Any], resource_version: str
    ) -> dict[str, Any]:
        if self.forbidden:
            self.forbidden -= 1
            raise Forbidden(f"replace PromptExperiment {namespace}/{name} status: 403 Forbidden")
        self.replaced.append((resource_version, status))
        if len(self.replaced) + len(self.patches) <= self.conflicts:
            raise Conflict(f"replace PromptExperiment {namespace}/{name} status: 409 Conflict")
        return {"metadata": {"resourceVersion": "99"}, "status": status}


WHOLE = {"phase": "Progressing", "message": "delivering config"}


async def test_the_whole_status_replaces_the_one_it_was_computed_from_with_its_precondition() -> None:
    gateway = ReplacingGateway(1, fresh())
    obj, tried = await patch_status(gateway, "ns", "exp", PATCH, "10", META, BASED_ON, whole=WHOLE)  # type: ignore[arg-type]
    assert obj["status"] == WHOLE
    assert gateway.replaced == [("10", WHOLE), ("11", WHOLE)]  # the metadata-only conflict retried, as a patch is
    assert (tried, gateway.patches) == (["10", "11"], [])


async def test_without_update_on_the_status_a_write_merge_patches_from_then_on() -> None:
    gateway = ReplacingGateway(0, fresh(), forbidden=1)
    obj, _ = await patch_status(gateway, "ns", "exp", PATCH, "10", META, BASED_ON, whole=WHOLE)  # type: ignore[arg-type]
    assert obj["status"] == {"phase": "Progressing"}  # the patch, on the same version
    assert (gateway.patches, gateway.replaced, gateway.replaces_status) == (["10"], [], False)
    await patch_status(gateway, "ns", "exp", PATCH, "12", META, BASED_ON, whole=WHOLE)  # type: ignore[arg-type]
    assert (gateway.patches, gateway.replaced) == (["10", "12"], [])  # not asked again


async def test_without_a_resource_version_the_status_is_merge_patched() -> None:
    gateway = ReplacingGateway(0, fresh())
    await patch_status(gateway, "ns", "exp", PATCH, None, META, BASED_ON, whole=WHOLE)  # type: ignore[arg-type]
    assert (gateway.patches, gateway.replaced) == ([None], [])
