"""An experiment's ConfigMap and Deployment are read from the API server only when the watch saw them change
(issue #20: an idle experiment makes no API read); writes always go to the API server."""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

import pytest

from canopy_operator.k8s.errors import Conflict, NotFound
from canopy_operator.k8s.gateway import ConfigMapView, Gateway
from canopy_operator.k8s.rollout import RolloutView
from canopy_operator.k8s.watched import Kind, WatchedReads

NS = "team-a"


class FakeApi:
    """A ConfigMap and a Deployment with resourceVersions, and the calls made to read or write them."""

    def __init__(self) -> None:
        self.text = "summarize:\n  prompt: a\n"
        self.cm_rv = 1
        self.dep_rv = 10
        self.dep_generation = 1
        self.calls: list[str] = []
        self.exists = True
        self.conflict_next = False

    async def get_configmap(self, namespace: str, name: str) -> ConfigMapView:
        self.calls.append(f"get cm {namespace}/{name}")
        if not self.exists:
            raise NotFound(f"get ConfigMap {namespace}/{name}: not found")
        return ConfigMapView(name, namespace, {"canopy-config.yaml": self.text}, str(self.cm_rv))

    async def write_configmap_key(
        self, view: ConfigMapView, key: str, text: str, *, annotations: Mapping[str, str | None] | None = None
    ) -> str:
        self.calls.append(f"patch cm {view.name}")
        if self.conflict_next or view.resource_version != str(self.cm_rv):
            self.conflict_next = False
            raise Conflict("patch ConfigMap: conflict")
        self.text, self.cm_rv = text, self.cm_rv + 1
        return str(self.cm_rv)

    async def get_rollout(self, namespace: str, name: str) -> RolloutView:
        self.calls.append(f"get dep {namespace}/{name}")
        return RolloutView(name, 2, 2, 1, 1, 1, 1, resource_version=str(self.dep_rv))

    async def get_pod_template_annotation(self, namespace: str, name: str, key: str) -> str | None:
        self.calls.append(f"get dep annotation {name}")
        return None

    async def set_pod_template_annotation(self, namespace: str, name: str, key: str, value: str) -> int:
        self.calls.append(f"patch dep {name}")
        self.dep_rv += 1
        self.dep_generation += 1
        return self.dep_generation


class Watch:
    """What the Kopf indexes saw: a resourceVersion per object, set by the test (lagging or not)."""

    def __init__(self) -> None:
        self.seen: dict[tuple[str, str, str], str] = {}

    def __call__(self, kind: Kind, namespace: str, name: str) -> str | None:
        return self.seen.get((kind, namespace, name))

    def sees(self, api: FakeApi) -> None:
        self.seen[("ConfigMap", NS, "canopy-config")] = str(api.cm_rv)
        self.seen[("Deployment", NS, "canopy-backend")] = str(api.dep_rv)


@pytest.fixture
def api() -> FakeApi:
    return FakeApi()


def reads_of(api: FakeApi, watch: Watch) -> WatchedReads:
    return WatchedReads(cast(Gateway, api), watch)


async def test_unchanged_configmap_is_read_once_then_served_from_the_watch(api: FakeApi) -> None:
    watch = Watch()
    watch.sees(api)
    reads = reads_of(api, watch)
    views = [await reads.get_configmap(NS, "canopy-config") for _ in range(10)]
    assert api.calls == [f"get cm {NS}/canopy-config"]
    assert {v.resource_version for v in views} == {"1"}
    assert reads.gets == 1


async def test_a_hand_edit_seen_by_the_watch_is_read_at_the_next_pass(api: FakeApi) -> None:
    watch = Watch()
    watch.sees(api)
    reads = reads_of(api, watch)
    await reads.get_configmap(NS, "canopy-config")
    api.text, api.cm_rv = "summarize:\n  prompt: edited by hand\n", 2
    watch.sees(api)
    view = await reads.get_configmap(NS, "canopy-config")
    assert view.data["canopy-config.yaml"] == "summarize:\n  prompt: edited by hand\n"
    assert len(api.calls) == 2


async def test_without_a_watch_entry_every_read_goes_to_the_api_server(api: FakeApi) -> None:
    reads = reads_of(api, Watch())  # not (yet) seen, deleted, or two objects under one key
    for _ in range(3):
        await reads.get_configmap(NS, "canopy-config")
    assert len(api.calls) == 3


async def read_then_written(api: FakeApi) -> tuple[Watch, WatchedReads]:
    """The watch saw the ConfigMap; the experiment read it and then wrote ``prompt: b`` into it."""
    watch = Watch()
    watch.sees(api)
    reads = reads_of(api, watch)
    view = await reads.get_configmap(NS, "canopy-config")
    await reads.write_configmap_key(view, "canopy-config.yaml", "summarize:\n  prompt: b\n")
    return watch, reads


async def test_while_the_watch_lags_behind_its_own_write_the_written_object_is_served(api: FakeApi) -> None:
    """The watch still shows the version the write replaced (its precondition): it has not delivered the write,
    and shows nothing newer, so the written object is served without a read (issue #20: under a burst's load
    the watch lags, and this was one GET per start). Any other version the watch shows is read."""
    watch, reads = await read_then_written(api)
    fresh = await reads.get_configmap(NS, "canopy-config")  # the watch still says rv 1
    assert fresh.data["canopy-config.yaml"] == "summarize:\n  prompt: b\n"
    assert fresh.resource_version == "2"
    assert api.calls == [f"get cm {NS}/canopy-config", "patch cm canopy-config"]
    api.text, api.cm_rv = "summarize:\n  prompt: c\n", 3  # someone wrote after it; the watch shows that
    watch.sees(api)
    assert (await reads.get_configmap(NS, "canopy-config")).data["canopy-config.yaml"].endswith("c\n")
    assert api.calls[-1] == f"get cm {NS}/canopy-config"


async def test_without_a_watch_entry_a_written_object_is_not_served(api: FakeApi) -> None:
    watch, reads = await read_then_written(api)
    watch.seen.clear()  # deleted, or two objects under one key
    await reads.get_configmap(NS, "canopy-config")
    assert api.calls[-1] == f"get cm {NS}/canopy-config"


async def test_once_the_watch_shows_the_write_the_written_object_is_served_without_a_read(api: FakeApi) -> None:
    watch, reads = await read_then_written(api)
    watch.sees(api)  # the watch delivered the operator's own write
    kept = await reads.get_configmap(NS, "canopy-config")
    assert kept.data["canopy-config.yaml"] == "summarize:\n  prompt: b\n"
    assert kept.resource_version == str(api.cm_rv)
    assert api.calls == [f"get cm {NS}/canopy-config", "patch cm canopy-config"]
    api.text, api.cm_rv = "summarize:\n  prompt: c\n", api.cm_rv + 1  # and someone wrote after it
    watch.sees(api)
    assert (await reads.get_configmap(NS, "canopy-config")).data["canopy-config.yaml"].endswith("c\n")
    assert api.calls[-1] == f"get cm {NS}/canopy-config"


async def test_a_conflicting_write_forgets_the_kept_read(api: FakeApi) -> None:
    watch = Watch()
    watch.sees(api)
    reads = reads_of(api, watch)
    view = await reads.get_configmap(NS, "canopy-config")
    api.conflict_next = True
    with pytest.raises(Conflict):
        await reads.write_configmap_key(view, "canopy-config.yaml", "x: 1\n")
    await reads.get_configmap(NS, "canopy-config")
    assert api.calls[-1] == f"get cm {NS}/canopy-config"
    assert reads.gets == 2


async def test_a_deleted_configmap_is_not_kept(api: FakeApi) -> None:
    watch = Watch()
    watch.sees(api)
    reads = reads_of(api, watch)
    await reads.get_configmap(NS, "canopy-config")
    api.exists = False
    watch.seen.clear()  # the index drops a deleted object
    with pytest.raises(NotFound):
        await reads.get_configmap(NS, "canopy-config")
    with pytest.raises(NotFound):
        await reads.get_configmap(NS, "canopy-config")


async def test_another_configmap_name_is_read_and_replaces_the_kept_one(api: FakeApi) -> None:
    watch = Watch()
    watch.sees(api)
    watch.seen[("ConfigMap", NS, "other")] = "1"
    reads = reads_of(api, watch)
    await reads.get_configmap(NS, "canopy-config")
    await reads.get_configmap(NS, "other")
    await reads.get_configmap(NS, "canopy-config")
    assert len(api.calls) == 3  # one object kept per kind: memory stays one ConfigMap per experiment


async def test_rollout_is_served_from_the_watch_until_the_deployment_changes_or_rolls(api: FakeApi) -> None:
    watch = Watch()
    watch.sees(api)
    reads = reads_of(api, watch)
    for _ in range(3):
        await reads.get_rollout(NS, "canopy-backend")
    assert api.calls == [f"get dep {NS}/canopy-backend"]
    await reads.set_pod_template_annotation(NS, "canopy-backend", "k", "v")
    await reads.get_rollout(NS, "canopy-backend")  # the roll forgot the kept read
    assert api.calls[-2:] == ["patch dep canopy-backend", f"get dep {NS}/canopy-backend"]
    watch.sees(api)
    await reads.get_rollout(NS, "canopy-backend")
    assert len(api.calls) == 3
    assert await reads.get_pod_template_annotation(NS, "canopy-backend", "k") is None  # before a roll: always read
    assert api.calls[-1] == "get dep annotation canopy-backend"


class RolloutWatch:
    """What the Deployment index saw: the rollout fields of each Deployment, set by the test."""

    def __init__(self) -> None:
        self.seen: dict[tuple[str, str], RolloutView] = {}

    def __call__(self, namespace: str, name: str) -> RolloutView | None:
        return self.seen.get((namespace, name))

    def sees(self, generation: int, observed: int, rv: str, uid: str = "uid-1") -> None:
        view = RolloutView("canopy-backend", generation, observed, 1, 1, 1, 1, resource_version=rv, uid=uid)
        self.seen[(NS, "canopy-backend")] = view


async def test_the_rollout_comes_from_the_watch_without_any_read(api: FakeApi) -> None:
    rollouts = RolloutWatch()
    rollouts.sees(generation=1, observed=1, rv="10")
    reads = WatchedReads(cast(Gateway, api), Watch(), rollouts)
    views = [await reads.get_rollout(NS, "canopy-backend") for _ in range(5)]
    assert api.calls == []
    assert {v.pending() for v in views} == {None}


async def test_after_its_own_roll_a_watch_that_has_not_seen_the_roll_is_not_believed(api: FakeApi) -> None:
    """The watch still shows the finished rollout of the old template: believing it would verify the new config
    against old pods. Until the watch shows the roll's generation the rollout is pending (the controller cannot
    have finished a roll the watch has not even delivered), and nothing is read."""
    rollouts = RolloutWatch()
    rollouts.sees(generation=1, observed=1, rv="10")
    reads = WatchedReads(cast(Gateway, api), Watch(), rollouts)
    generation = await reads.set_pod_template_annotation(NS, "canopy-backend", "k", "v")
    assert generation == 2
    lagging = await reads.get_rollout(NS, "canopy-backend")
    assert lagging.pending() == "Deployment canopy-backend: the controller has not yet seen generation 2"
    rollouts.sees(generation=2, observed=1, rv="11")  # the watch delivered the roll, not yet rolled out
    view = await reads.get_rollout(NS, "canopy-backend")
    assert view.pending() is not None
    rollouts.sees(generation=2, observed=2, rv="12")
    assert (await reads.get_rollout(NS, "canopy-backend")).pending() is None
    assert api.calls == ["patch dep canopy-backend"]


async def test_the_annotation_its_own_roll_set_comes_from_the_watch_at_that_generation(api: FakeApi) -> None:
    """Each look at a rollout the experiment started checks the pod template's annotation (the ``reroll`` plan).
    While the watch shows the Deployment at exactly the generation of that roll (same uid), the template is the
    one the roll wrote: no read. Any other generation, another uid, or no view at all: read it."""
    rollouts = RolloutWatch()
    rollouts.sees(generation=1, observed=1, rv="10")
    reads = WatchedReads(cast(Gateway, api), Watch(), rollouts)
    await reads.set_pod_template_annotation(NS, "canopy-backend", "k", "sha-1")
    assert await reads.get_pod_template_annotation(NS, "canopy-backend", "k") is None  # the watch lags: read
    rollouts.sees(generation=2, observed=2, rv="12")
    assert await reads.get_pod_template_annotation(NS, "canopy-backend", "k") == "sha-1"
    assert await reads.get_pod_template_annotation(NS, "canopy-backend", "other") is None  # another key: read
    rollouts.sees(generation=3, observed=2, rv="13")  # someone changed the template since
    assert await reads.get_pod_template_annotation(NS, "canopy-backend", "k") is None
    rollouts.sees(generation=2, observed=2, rv="20", uid="uid-2")  # deleted and made again, same generation
    assert await reads.get_pod_template_annotation(NS, "canopy-backend", "k") is None
    reads.forget()
    rollouts.sees(generation=2, observed=2, rv="12")
    assert await reads.get_pod_template_annotation(NS, "canopy-backend", "k") is None
    assert api.calls == ["patch dep canopy-backend"] + ["get dep annotation canopy-backend"] * 5


async def test_a_roll_without_a_watched_view_always_reads_the_annotation(api: FakeApi) -> None:
    rollouts = RolloutWatch()
    reads = WatchedReads(cast(Gateway, api), Watch(), rollouts)
    await reads.set_pod_template_annotation(NS, "canopy-backend", "k", "sha-1")
    rollouts.sees(generation=2, observed=2, rv="12")
    assert await reads.get_pod_template_annotation(NS, "canopy-backend", "k") is None
    assert api.calls[-1] == "get dep annotation canopy-backend"
