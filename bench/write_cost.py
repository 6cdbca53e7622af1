"""What one write costs the API server and etcd: a ConfigMap patch against PromptExperiment status patches.

The burst of issue #20 is CPU-bound on two cores, and the API server spends more of it than the operator. This
measures, on a fresh envtest control plane with the operator's CRD, the API server's and etcd's CPU per merge
patch for (each over ``--objects`` objects, ``--concurrency`` in flight, no watchers):

- ``configmap``: one ConfigMap key set to a new values text (the floor's one write; the cost to compare with);
- ``status, small object``: ``status.message`` changed on an experiment whose status is only ``phase``
  (what the bare-Kopf floor's experiments hold);
- ``status, Running object``: ``status.message`` and ``status.progress`` changed on an experiment holding a
  Running status as the operator writes it (an idle pass's change);
- ``status, first write``: the whole Running status written onto an experiment without one (a new
  experiment's first writes).

    .venv/bin/python bench/write_cost.py [--objects 300] [--concurrency 8] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.config import new_client_from_config

from canopy_devkit.controlplane import ControlPlane
from canopy_operator.api.base import GROUP, PLURAL, VERSION
from cluster import create_namespace
from common import cpu_seconds, load_average, machine
from reconcile_bench import experiment

NAMESPACE = "write-cost"
MERGE = "application/merge-patch+json"
VALUES = "feedback:\n  enabled: true\nab_testing:\n  enabled: true\nsummarize:\n  prompt: |\n    Summarize.\n" * 4
CONDITION_TYPES = ("ConfigDrift", "Degraded", "Progressing", "Ready", "AwaitingApproval", "Decided", "Promoted")
RUNNING_STATUS: dict[str, Any] = {
    "phase": "Running",
    "message": "collecting: 0/30 decisive votes, CS [0.00, 1.00]",
    "progress": "0/30 votes",
    "observedGeneration": 1,
    "collection": {
        "abCursor": 0,
        "abFingerprint": "",
        "epoch": 1,
        "epochPrompts": {"prompt": "214119f1559b7d2e", "promptB": "36119e9894a57324"},
        "feedbackCursor": 0,
        "feedbackFingerprint": "",
        "restartsDetected": 0,
        "voteFingerprints": "",
    },
    "conditions": [
        {
            "type": kind,
            "status": "False",
            "reason": "AsExpected",
            "message": "the managed keys are as the experiment wants",
            "observedGeneration": 1,
            "lastTransitionTime": "2026-11-30T14:17:22.578122Z",
        }
        for kind in CONDITION_TYPES
    ],
    "delivery": {
        "appliedAt": "2026-11-30T14:17:22.577914Z",
        "appliedHash": "a52b68b931d723608da521ef40857e844256f6f446dc085435a446dc9c1a9ecc",
        "argoManaged": False,
        "desiredHash": "a52b68b931d723608da521ef40857e844256f6f446dc085435a446dc9c1a9ecc",
        "mode": "ConfigMap",
        "revision": "config-sha256:ea14bedae12d",
        "verifiedAt": "2026-11-30T14:17:22.699417Z",
    },
    "evaluations": [],
    "evidence": {
        "confidenceSequence": {"lower": 0, "upper": 1},
        "decision": "continue",
        "decisiveVotes": 0,
        "eValue": 1,
        "maxEValue": 1,
        "pValue": 1,
        "reason": "0 decisive votes, a decision needs at least 30",
    },
    "negatives": {"atLastEvaluation": 0, "awaitingReview": 0, "sinceLastEvaluation": 0, "total": 0, "trimmed": 0},
    "notifications": [],
    "original": {"abTestingEnabled": False, "feedbackEnabled": False, "prompt": "Summarize the text:\n"},
    "promotions": [],
    "test": {
        "alpha": 0.05,
        "challengerHash": "36119e9894a57324",
        "championHash": "214119f1559b7d2e",
        "championPrompt": "Summarize the text:\n",
        "id": "2291c29ea694",
        "maxVotes": 5000,
        "method": "betting",
        "methodVersion": 2,
        "minVotes": 30,
        "startedAt": "2026-11-30T14:17:22.464495Z",
        "tau": 0.1,
    },
    "testHistory": [],
    "trajectory": [{"at": "2026-11-30T14:17:22.714053Z", "decisiveVotes": 0, "lower": 0, "pValue": 1, "upper": 1}],
    "votes": {
        "challengerWins": 0,
        "championWins": 0,
        "duplicatesDropped": 0,
        "leftChallenger": 0,
        "ties": 0,
        "unattributed": 0,
    },
}
"""A Running experiment's status as the operator wrote it in a benchmark run (2.8 KB of JSON)."""


async def _each(count: int, concurrency: int, write: Callable[[int], Awaitable[Any]]) -> None:
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with gate:
            await write(i)

    await asyncio.gather(*(one(i) for i in range(count)))


async def _measure(
    plane: ControlPlane, count: int, concurrency: int, write: Callable[[int], Awaitable[Any]]
) -> dict[str, float]:
    pids = plane.pids
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    began = time.monotonic()
    await _each(count, concurrency, write)
    wall = time.monotonic() - began
    used = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
    return {
        "apiserver_ms": 1000 * used["kube-apiserver"] / count,
        "etcd_ms": 1000 * used["etcd"] / count,
        "wall_ms": 1000 * wall / count,
    }


async def run(args: argparse.Namespace, plane: ControlPlane) -> dict[str, list[dict[str, float]]]:
    api = await new_client_from_config(config_file=str(plane.admin_kubeconfig()))
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    n = args.objects

    def pe(prefix: str, i: int) -> dict[str, Any]:
        body = experiment(i, "http://127.0.0.1:1", "30s")
        body["metadata"]["name"] = f"{prefix}-{i}"
        return body

    async def status(name: str, patch: dict[str, Any]) -> Any:
        return await custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, NAMESPACE, PLURAL, name, {"status": patch}, _content_type=MERGE
        )

    try:
        for i in range(n):  # set up, not measured
            await core.create_namespaced_config_map(
                NAMESPACE, {"metadata": {"name": f"cm-{i}"}, "data": {"values.yaml": VALUES}}
            )
            for prefix in ("small", "running", "fresh"):
                await custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, pe(prefix, i))
            await status(f"small-{i}", {"phase": "Running"})
            await status(f"running-{i}", RUNNING_STATUS)
        cases: dict[str, Callable[[int, int], Awaitable[Any]]] = {
            "configmap": lambda r, i: core.patch_namespaced_config_map(
                f"cm-{i}", NAMESPACE, {"data": {"values.yaml": VALUES + f"# {r}\n"}}, _content_type=MERGE
            ),
            "status, small object": lambda r, i: status(f"small-{i}", {"message": f"round {r}"}),
            "status, Running object": lambda r, i: status(
                f"running-{i}", {"message": f"collecting, round {r}", "progress": f"{r}/30 votes"}
            ),
            "status, first write": lambda r, i: status(
                f"fresh-{i}", {**RUNNING_STATUS, "message": f"round {r}"} if r == 0 else {"message": f"round {r}"}
            ),
        }
        results: dict[str, list[dict[str, float]]] = {name: [] for name in cases}
        for r in range(args.rounds):
            names = list(cases) if r % 2 == 0 else list(reversed(cases))
            for name in names:
                if name == "status, first write" and r > 0:
                    continue  # only the first round is a first write
                write = cases[name]
                figures = await _measure(plane, n, args.concurrency, lambda i, write=write, r=r: write(r, i))
                results[name].append(figures)
        return results
    finally:
        await api.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--objects", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    plane = ControlPlane()
    plane.start()
    try:
        create_namespace(plane, NAMESPACE)
        load = load_average()
        results = asyncio.run(run(args, plane))
    finally:
        plane.stop()
    floor = sum(f["apiserver_ms"] for f in results["configmap"]) / len(results["configmap"])
    print(f"{args.objects} objects per case, {args.concurrency} writes in flight, load before {load}")
    print("| write | API server CPU ms / write (each round) | etcd CPU ms / write | wall ms / write | vs ConfigMap |")
    print("|---|---|---|---|---|")
    for name, runs in results.items():
        api_ms = [f["apiserver_ms"] for f in runs]
        mean = sum(api_ms) / len(api_ms)
        etcd = sum(f["etcd_ms"] for f in runs) / len(runs)
        wall = sum(f["wall_ms"] for f in runs) / len(runs)
        print(f"| {name} | {', '.join(f'{v:.2f}' for v in api_ms)} | {etcd:.2f} | {wall:.2f} | {mean / floor:.2f}x |")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump({"machine": machine(), "args": vars(args), "results": results}, out, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
