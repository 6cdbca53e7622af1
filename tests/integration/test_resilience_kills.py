"""Kill the operator process at every meaningful point of an experiment; after a restart nothing is lost or doubled.

Each case runs the whole story (A/B on, 25-5 votes with 2 ties, promotion) with the operator as a child
process whose ``CANOPY_FAILPOINTS`` makes it die (``os._exit(137)``, no cleanup) at one hit of one point,
then restarts it without the failpoint. Afterwards:

- the status counts are exactly the votes posted (none lost, none counted twice);
- exactly one PromotionRecord, for the challenger;
- exactly two writes of the ConfigMap key (A/B on, promotion) and two rollouts of the Deployment, counted
  through watches, so a write repeated after the restart would show.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import yaml
from kubernetes_asyncio.client import ApiClient

from canopy_devkit.controlplane import ControlPlane
from canopy_operator.failpoints import EXIT_CODE
from tests.support.envtest import namespace_name
from tests.support.faults import (
    CHALLENGER,
    WriteLog,
    backend_scene,
    counted,
    create_experiment,
    cut_connections_tolerated,
    experiment,
    run_until_concluded,
)
from tests.support.operator_process import OperatorProcess

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

VOTES = (25, 5, 2)  # challenger, champion, ties: promotes at exactly n = 30 = minVotes
STORY_TIMEOUT = 150.0

# (point, hit): hit 1 of a delivery point is the first delivery (A/B on); hit 2 is the promotion. The first
# delivery writes no status before it: its ConfigMap write carries the original config as the start record
# (core/startrecord), and the first status write is the pass that finds the rollout done (Running).
CASES = [
    ("reconcile-start", 1),
    ("after-source-read", 1),
    ("before-config-write", 1),  # nothing written yet, status empty
    ("before-configmap-write", 1),
    ("after-configmap-write", 1),  # ConfigMap and its start record written, Deployment not rolled, status empty
    ("before-roll", 1),
    ("after-roll", 1),
    ("after-config-write", 1),  # config written and rolled, status empty (it waits for the rollout)
    ("before-status-write", 1),  # Running about to be recorded: the original config only in the record
    ("after-status-write", 1),  # Running recorded
    ("after-status-write", 2),
    ("after-verify", 1),  # backend reports the config, status does not say so yet
    ("after-poll", 1),
    ("after-poll", 2),
    ("after-decision", 1),  # decided, decision not recorded
    ("before-config-write", 2),  # decision recorded, promotion not written
    ("after-configmap-write", 2),  # promotion written, not rolled
    ("after-roll", 2),
    ("after-config-write", 2),  # promotion written and rolled, status not written
    ("after-verify", 2),
    ("after-conclude", 1),  # promoted in memory, record not written
]


async def run_story(
    api: ApiClient, kubeconfig: Path, namespace: str, workdir: Path, failpoints: str
) -> tuple[list[int], dict[str, object], WriteLog, WriteLog, int]:
    """Create the experiment, vote once it runs, restart the operator whenever it dies; until Concluded."""
    workdir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - one local mkdir before the story starts
    async with backend_scene(api, namespace, workdir) as kubelet:
        cm_log, dep_log = WriteLog.configmap(api, namespace), WriteLog.deployment(api, namespace)
        await cm_log.start()
        await dep_log.start()
        await create_experiment(api, namespace, experiment(kubelet.url, min_votes=VOTES[0] + VOTES[1]))
        proc = OperatorProcess(kubeconfig, namespace, workdir / "operator", failpoints=failpoints)
        try:
            # 1 s of room for a duplicate write to show up in the watches.
            exits, status = await run_until_concluded(
                api, namespace, proc, kubelet.url, VOTES, within=STORY_TIMEOUT, settle=1.0
            )
        finally:
            await cm_log.stop()
            await dep_log.stop()
        return exits, status, cm_log, dep_log, kubelet.rollouts


def check_story(outcome: tuple[list[int], dict[str, object], WriteLog, WriteLog, int]) -> None:
    exits, status, cm_log, dep_log, rollouts = outcome
    assert exits == [EXIT_CODE], "the failpoint was not reached exactly once"
    assert counted(status) == VOTES, "votes lost or doubled"
    promotions = status["promotions"]
    assert isinstance(promotions, list)
    assert [p["outcome"] for p in promotions] == ["challenger"], "not exactly one promotion record"
    assert cm_log.changes == 2, f"ConfigMap writes: {cm_log.changes} (want 2: A/B on, promotion)"
    final = cm_log.values[-1]
    assert final is not None
    assert yaml.safe_load(final)["summarize"]["prompt"] == CHALLENGER
    assert dep_log.changes == 2, f"rollouts: {dep_log.changes} (want 2)"
    assert rollouts == 2, f"simulator restarts: {rollouts}"


BATCH = 7  # stories run side by side (each with its own namespace, simulator and operator process)
BATCHES = [CASES[i : i + BATCH] for i in range(0, len(CASES), BATCH)]


@pytest.mark.parametrize("cases", BATCHES, ids=[",".join(f"{p}:{h}" for p, h in b) for b in BATCHES])
async def test_kill_at_point_loses_no_vote_and_promotes_once(
    admin_api: ApiClient,
    operator_kubeconfig: Path,
    control_plane: ControlPlane,
    tmp_path: Path,
    cases: list[tuple[str, int]],
) -> None:
    names = [namespace_name(f"kill-{point}-{hit}") for point, hit in cases]
    with control_plane.admin_client() as admin:
        for name in names:
            admin.create_or_replace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}, "namespaces")
    try:
        with cut_connections_tolerated():
            outcomes = await asyncio.gather(
                *(
                    run_story(admin_api, operator_kubeconfig, name, tmp_path / name, f"{point}:{hit}")
                    for name, (point, hit) in zip(names, cases, strict=True)
                ),
                return_exceptions=True,
            )
    finally:
        with control_plane.admin_client() as admin:
            for name in names:
                admin.delete(f"/api/v1/namespaces/{name}")
    failures = []
    for (point, hit), outcome in zip(cases, outcomes, strict=True):
        try:
            if isinstance(outcome, BaseException):
                raise outcome
            check_story(outcome)
        except AssertionError as exc:
            failures.append(f"{point}:{hit}: {exc}")
    assert not failures, "\n\n".join(failures)
