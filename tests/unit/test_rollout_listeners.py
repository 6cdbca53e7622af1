"""Services.listen: a Deployment change seen by the watch wakes exactly the daemons listening to it (issue #20:
a rollout is waited for by its watch, not by polling every 2 s)."""

from __future__ import annotations

from typing import cast

from canopy_operator.core.redact import Redactor
from canopy_operator.failpoints import Failpoints
from canopy_operator.gitops.repo import GitWorkspace
from canopy_operator.handlers.experiment import deployment_versions
from canopy_operator.k8s.gateway import Gateway
from canopy_operator.service.observe import Observer
from canopy_operator.service.services import Services
from canopy_operator.service.settings import Settings
from canopy_operator.service.wake import Wake
from canopy_operator.telemetry.metrics import Metrics


def services() -> Services:
    return Services(
        settings=Settings(),
        gateway=cast(Gateway, None),
        git=cast(GitWorkspace, None),
        observer=Observer(Metrics()),
        redactor=Redactor(),
        failpoint=Failpoints(),
    )


async def test_a_change_wakes_the_listeners_of_that_deployment_only() -> None:
    s = services()
    a, b, other_ns = Wake(), Wake(), Wake()
    s.listen("team-a", "canopy-backend", a)
    s.listen("team-a", "canopy-backend", b)
    s.listen("team-b", "canopy-backend", other_ns)
    s.deployment_changed("team-a", "canopy-backend")
    assert a.is_set()
    assert b.is_set()
    assert not other_ns.is_set()  # another namespace's Deployment of the same name
    s.deployment_changed("team-a", "unrelated")  # nobody listens: nothing happens


async def test_a_listener_that_stopped_is_not_woken_and_nothing_is_left_behind() -> None:
    s = services()
    wake = Wake()
    s.listen("team-a", "canopy-backend", wake)
    s.stop_listening("team-a", "canopy-backend", wake)
    s.stop_listening("team-a", "canopy-backend", wake)  # twice: harmless
    s.deployment_changed("team-a", "canopy-backend")
    assert not wake.is_set()
    assert s.rollout_waiters == {}


def deployment(generation: int, observed: int, updated: int = 1) -> dict[str, object]:
    return {
        "metadata": {"name": "canopy-backend", "generation": generation, "resourceVersion": str(10 + generation)},
        "spec": {"replicas": 1},
        "status": {"observedGeneration": observed, "replicas": 1, "updatedReplicas": updated, "availableReplicas": 1},
    }


async def test_only_a_finished_rollout_wakes_the_waiting_daemons() -> None:
    """The watch's events of a rollout still in progress (the roll itself, a replica still starting) give a
    waiting daemon nothing to act on: only the event that shows the rollout finished wakes it (issue #20)."""
    s = services()
    wake = Wake()
    s.listen("team-a", "canopy-backend", wake)
    memo = {"services": s}
    for body in (deployment(2, 1), deployment(2, 2, updated=0)):
        indexed = await deployment_versions(namespace="team-a", name="canopy-backend", body=body, memo=memo)
        assert indexed[("team-a", "canopy-backend")].generation == 2  # indexed all the same
        assert not wake.is_set()
    await deployment_versions(namespace="team-a", name="canopy-backend", body=deployment(2, 2), memo=memo)
    assert wake.is_set()
