"""Backend faults under a running experiment: Degraded with a clear reason, no crash, bounded memory, recovery,
and every vote counted exactly once across each fault.

One operator process (a child process, so its memory is its own) runs one experiment whose test cannot
decide (minVotes 1000). Before each fault a fresh batch of votes is posted; then the simulator misbehaves
until the experiment reports Degraded, heals, and the counts must equal everything posted so far.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes_asyncio.client import ApiClient

from canopy_devkit.simulator.app import Faults
from tests.support.faults import (
    backend_scene,
    condition,
    counted,
    create_experiment,
    cut_connections_tolerated,
    experiment,
    phase_is,
    status_of,
    vote,
)
from tests.support.kopf_runner import wait_for
from tests.support.kubelet import FakeKubelet
from tests.support.operator_process import OperatorProcess

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]

BODY_CAP = 4 * 1024 * 1024  # CANOPY_MAX_BACKEND_BODY and CANOPY_MAX_BACKEND_LOG_BODY of the operator under test
FIFTY_MB = b'{"total": 1, "entries": "' + b"x" * (50 * 1024 * 1024) + b'"}'
MEMORY_BOUND = 40 * 1024 * 1024  # growth allowed over the whole run; holding one 50 MB body would exceed it
AB = frozenset({"/feedback/ab"})


@dataclass(frozen=True)
class Fault:
    name: str
    reason: str  # the Degraded condition's reason
    words: str  # what its message must say
    apply: Callable[[Faults], None]


def _set(**values: object) -> Callable[[Faults], None]:
    def apply(faults: Faults) -> None:
        for key, value in values.items():
            setattr(faults, key, value)

    return apply


FAULTS = [
    Fault("http 500", "BackendHTTPError", "500", _set(status=500)),
    Fault("timeout", "BackendUnreachable", "within 2s", _set(delay=4.0)),
    Fault("invalid JSON", "BackendProtocolError", "GET /feedback/ab", _set(garbage=b"<html>oops</html>", paths=AB)),
    Fault("truncated JSON", "BackendProtocolError", "GET /feedback/ab", _set(garbage=b'{"total": 2, "ent', paths=AB)),
    Fault(
        "wrong types",
        "BackendProtocolError",
        "GET /feedback/ab",
        _set(garbage=b'{"total": "two", "prompt_a_wins": [], "entries": {}}', paths=AB),
    ),
    Fault("50 MB body (declared)", "BackendProtocolError", f"over {BODY_CAP}", _set(garbage=FIFTY_MB, paths=AB)),
    Fault(
        "50 MB body (chunked)",
        "BackendProtocolError",
        f"over {BODY_CAP}",
        _set(garbage=FIFTY_MB, chunked=True, paths=AB),
    ),
    Fault("slow drip", "BackendUnreachable", "within 2s", _set(drip=0.5, paths=AB)),
]


class Run:
    """The experiment under faults: votes posted so far and figures for the report."""

    def __init__(self, api: ApiClient, namespace: str, kubelet: FakeKubelet, proc: OperatorProcess) -> None:
        self.api = api
        self.namespace = namespace
        self.kubelet = kubelet
        self.proc = proc
        self.posted = (0, 0, 0)
        self.batches = 0
        self.rss: list[int] = []
        self.recoveries: list[float] = []

    async def post_batch(self) -> None:
        self.batches += 1
        batch = (3, 2, 1)
        await vote(self.kubelet.url, *batch, seed=100 + self.batches)
        self.posted = (self.posted[0] + 3, self.posted[1] + 2, self.posted[2] + 1)

    async def all_counted(self) -> bool:
        status = await status_of(self.api, self.namespace)
        return status.get("phase") == "Running" and counted(status) == self.posted

    async def settle(self, what: str) -> None:
        started = time.monotonic()
        await wait_for(self.all_counted, timeout=90, what=f"every vote counted and Running after {what}")
        self.recoveries.append(time.monotonic() - started)
        self.sample()

    def sample(self) -> None:
        assert self.proc.returncode() is None, f"the operator died:\n{self.proc.tail()}"
        self.rss.append(self.proc.rss_bytes())

    async def degraded(self, fault: str) -> dict[str, str]:
        await wait_for(phase_is(self.api, self.namespace, "Degraded"), timeout=60, what=f"Degraded by {fault}")
        self.sample()
        return condition(await status_of(self.api, self.namespace), "Degraded")

    def config_path(self) -> Path:
        return self.kubelet.workdir / f"values-{self.kubelet.rollouts}.yaml"


async def test_backend_faults_degrade_clearly_and_lose_no_vote(
    admin_api: ApiClient, operator_kubeconfig: Path, namespace: str, tmp_path: Path
) -> None:
    with cut_connections_tolerated():
        run, seen, proc = await faulty_run(admin_api, operator_kubeconfig, namespace, tmp_path)
    check_run(run, seen, proc)


async def faulty_run(
    admin_api: ApiClient, operator_kubeconfig: Path, namespace: str, tmp_path: Path
) -> tuple[Run, dict[str, dict[str, str]], OperatorProcess]:
    async with backend_scene(admin_api, namespace, tmp_path) as kubelet:
        await create_experiment(admin_api, namespace, experiment(kubelet.url, min_votes=1000, maxVotes=5000))
        proc = OperatorProcess(
            operator_kubeconfig,
            namespace,
            tmp_path / "operator",
            env={"CANOPY_MAX_BACKEND_BODY": str(BODY_CAP), "CANOPY_MAX_BACKEND_LOG_BODY": str(BODY_CAP)},
        )
        proc.start()
        run = Run(admin_api, namespace, kubelet, proc)
        faults = kubelet.simulator.faults
        seen: dict[str, dict[str, str]] = {}
        try:
            await wait_for(phase_is(admin_api, namespace, "Running"), timeout=90, what="phase Running")
            await run.post_batch()
            await run.settle("start")
            for fault in FAULTS:
                await run.post_batch()  # not read yet: must survive the fault
                fault.apply(faults)
                seen[fault.name] = await run.degraded(fault.name)
                faults.clear()
                await run.settle(fault.name)

            # Connection refused: the backend is down (what it held is gone with it; everything was read).
            await run.post_batch()
            await run.settle("the last batch before the outage")
            await kubelet.simulator.stop()
            seen["connection refused"] = await run.degraded("connection refused")
            await kubelet.simulator.start(run.config_path())
            await run.post_batch()  # ids start again at 1 in the new process
            await run.settle("connection refused")

            # Restart mid-poll: the process is replaced while the operator's vote read is in flight.
            await run.post_batch()
            await run.settle("the last batch before the restart")
            hits = faults.hits
            _set(delay=1.5, paths=AB)(faults)
            await wait_for(lambda: faults.hits > hits, timeout=30, what="a vote read in flight")
            faults.clear()
            await kubelet.simulator.restart(run.config_path())
            await run.post_batch()
            await run.settle("a restart mid-poll")
            seen["restart mid-poll"] = condition(await status_of(admin_api, namespace), "Degraded")
        finally:
            code = proc.stop()
        assert code == 0, proc.tail()
    return run, seen, proc


def check_run(run: Run, seen: dict[str, dict[str, str]], proc: OperatorProcess) -> None:
    for fault in FAULTS:
        assert seen[fault.name]["reason"] == fault.reason, (fault.name, seen[fault.name])
        assert fault.words in seen[fault.name]["message"], (fault.name, seen[fault.name])
        assert run.kubelet.url in seen[fault.name]["message"], (fault.name, seen[fault.name])
    assert seen["connection refused"]["reason"] == "BackendUnreachable"
    assert seen["restart mid-poll"]["status"] == "False"  # healed: Degraded cleared
    assert run.posted == (3 * run.batches, 2 * run.batches, run.batches)
    growth = max(run.rss) - run.rss[0]
    print(
        f"\nresilience/backend: faults={len(FAULTS) + 2} batches={run.batches} posted={run.posted} "
        f"rss_first={run.rss[0] / 2**20:.1f}MiB rss_max={max(run.rss) / 2**20:.1f}MiB growth={growth / 2**20:.1f}MiB "
        f"recovery_max={max(run.recoveries):.1f}s"
    )
    assert growth < MEMORY_BOUND, f"RSS grew by {growth / 2**20:.1f} MiB"
    assert "Traceback" not in proc.log(), proc.tail(80)
