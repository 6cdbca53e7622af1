"""Reconcile latency and steady-state cost of the operator against a bare-Kopf floor, on a real API server.

Run from the repository root (not a test; not run in CI)::

    .venv/bin/python bench/reconcile_bench.py --scales 1,100,500 [--window 120] [--interval 30s] [--only floor]

For each scale N and each subject, the bare-Kopf floor (``bench/floor_operator.py``) and then the operator, a
fresh control plane (etcd + kube-apiserver) gets the shipped RBAC; N backends (ConfigMap, Deployment,
simulator on its own port, restarted on rollout) are created in one namespace; the subject runs as a separate
process (``canopy-operator run --all-namespaces``, or ``kopf run --all-namespaces bench/floor_operator.py``) as
the operator's ServiceAccount user. Then, for each subject alike:

1. round trip: 50 sequential ConfigMap merge patches (one API round trip each) with the same client library;
2. burst: N PromptExperiments created at once; per experiment, the time from its creation (the create call
   returned) to its ConfigMap holding the experiment's config, and to status.phase Running; the round trip is
   sampled every 0.25 s during the burst as well; the subject's CPU from before the burst to all Running;
3. idle: after one poll interval of settling, a window in which nothing changes: apiserver_request_total
   deltas by verb and resource, backend requests by path, the subject's CPU and memory.

Every table reports the operator's figure, the floor's and their ratio, measured in the same run.
Output: a Markdown report on stdout and the raw figures of both subjects as JSON (``--json``).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import hashlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client

from canopy_devkit.controlplane import ControlPlane
from canopy_operator.api.base import GROUP, PLURAL, VERSION, parse_duration
from canopy_operator.k8s.client import api_client
from cluster import (
    WRITE_VERBS,
    FloorProcess,
    OperatorProcess,
    apiserver_requests,
    apply_operator_rbac,
    create_namespace,
    wait_watching,
)
from common import cpu_seconds, load_average, machine, memory_kib, summary
from fleet import KEY, Fleet, configmap_name, deployment_name
from observe import FloorUnderLoad, Observer, create_configmap, patch_round_trips
from report import render

CHALLENGER = "Provide a brief, concise summary:\n"
SUBJECTS = ("floor", "operator")
"""Run at every scale in this order, each on a fresh control plane: the bare-Kopf floor, then the operator."""


def experiment(i: int, url: str, interval: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "PromptExperiment",
        "metadata": {"name": f"exp-{i}"},
        "spec": {
            "backend": {"url": url},
            "challenger": {"prompt": CHALLENGER},
            "analysis": {"interval": interval},
            "delivery": {"configMap": {"name": configmap_name(i), "deployment": deployment_name(i)}},
        },
    }


def process_usage(pids: dict[str, int]) -> dict[str, float]:
    return {name: cpu_seconds(pid) for name, pid in pids.items()}


async def wait_until(predicate: Any, timeout: float, poll: float = 0.5) -> bool:  # noqa: ASYNC109 - a deadline
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(poll)
    return True


async def burst(
    api: client.ApiClient, fleet: Fleet, observer: Observer, namespace: str, interval: str, limit: float
) -> dict[str, Any]:
    """Create every experiment at once; return per-experiment latencies (seconds) and what did not finish."""
    custom = client.CustomObjectsApi(api)
    n = len(fleet.backends)
    created: dict[int, float] = {}

    async def create(i: int) -> None:
        body = experiment(i, fleet.backends[i].url, interval)
        await custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
        created[i] = time.monotonic()

    # A dry run first: the harness's first create of the process otherwise takes about 2 s of its own.
    await custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, experiment(0, fleet.backends[0].url, interval), dry_run="All"
    )
    began = time.monotonic()
    await asyncio.gather(*(create(i) for i in range(n)))
    creation_spread = max(created.values()) - began
    finished = await wait_until(lambda: observer.count_in_phase("Running") >= n, limit)
    config = [
        observer.config_written[configmap_name(i)] - created[i]
        for i in range(n)
        if configmap_name(i) in observer.config_written
    ]
    running = [
        observer.phases[f"exp-{i}"]["Running"] - created[i]
        for i in range(n)
        if "Running" in observer.phases.get(f"exp-{i}", {})
    ]
    rollout = [fleet.rollouts[i][0] - created[i] for i in range(n) if fleet.rollouts.get(i)]
    stuck = collections.Counter(
        max(seen, key=seen.__getitem__) for name, seen in observer.phases.items() if "Running" not in seen
    )
    return {
        "finished": finished,
        "creation_spread": creation_spread,
        "config": config,
        "running": running,
        "rollout": rollout,
        "wall": time.monotonic() - began,
        "not_running": dict(stuck) | ({"no status": n - len(observer.phases)} if len(observer.phases) < n else {}),
    }


SETTLE_QUIET = 1.0
SETTLE_LIMIT = 60.0


def wait_writes_settled(plane: ControlPlane) -> float:
    """Seconds from now until the API server has seen no write (leases aside) for ``SETTLE_QUIET`` seconds, at
    most ``SETTLE_LIMIT``: work a subject leaves for after its last experiment is Running (the operator's events,
    posted in the background) counts in the burst's CPU, not in the idle window's."""

    def writes() -> int:
        counts = apiserver_requests(plane)
        mutating = ("POST", "PUT", "PATCH", "DELETE", "APPLY")
        return sum(
            v for (verb, resource, _sub, _code), v in counts.items() if verb in mutating and resource != "leases"
        )

    began = time.monotonic()
    last, quiet_since = writes(), time.monotonic()
    while time.monotonic() - began < SETTLE_LIMIT:
        time.sleep(0.25)
        now = writes()
        if now != last:
            last, quiet_since = now, time.monotonic()
        elif time.monotonic() - quiet_since >= SETTLE_QUIET:
            break
    return quiet_since - began


async def idle_window(
    plane: ControlPlane, fleet: Fleet, subject: str, process: OperatorProcess, window: float
) -> dict[str, Any]:
    """Counts over ``window`` seconds in which no experiment has anything to do."""
    pids = {subject: process.pid, **plane.pids, "harness": os.getpid()}
    before_req = await asyncio.to_thread(apiserver_requests, plane)
    before_backend = collections.Counter(fleet.counts)
    before_cpu = process_usage(pids)
    rss_samples: list[int] = []
    began = time.monotonic()
    while time.monotonic() - began < window:
        rss_samples.append(memory_kib(process.pid)["rss"])
        await asyncio.sleep(min(5.0, window / 10))
    elapsed = time.monotonic() - began
    after_req = await asyncio.to_thread(apiserver_requests, plane)
    after_cpu = process_usage(pids)
    requests = {"/".join(p for p in k if p): v for k, v in (after_req - before_req).items() if v}
    return {
        "seconds": elapsed,
        "requests": requests,
        "writes": {k: v for k, v in requests.items() if k.split("/")[0] in WRITE_VERBS},
        "backend": dict(collections.Counter(fleet.counts) - before_backend),
        "cpu": {name: after_cpu[name] - before_cpu[name] for name in pids},
        "memory_kib": {**memory_kib(process.pid), "rss_max_in_window": max(rss_samples)},
    }


async def run_scale(n: int, subject: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """One subject (the operator or the floor) at one scale, on a control plane of its own, started fresh."""
    namespace = f"bench-{n}"
    plane = ControlPlane()
    await asyncio.to_thread(plane.start)
    try:
        await asyncio.to_thread(apply_operator_rbac, plane)
        await asyncio.to_thread(create_namespace, plane, namespace)
        # The operator's own client (no proxy and .netrc lookups in a worker thread per request): the harness
        # shares the two cores with the subject.
        api = await api_client(str(plane.admin_kubeconfig()))
        try:
            return await _measure(n, subject, args, workdir, plane, api, namespace)
        finally:
            await api.close()
    finally:
        await asyncio.to_thread(plane.stop)


def subject_process(
    subject: str, plane: ControlPlane, n: int, args: argparse.Namespace, workdir: Path
) -> OperatorProcess:
    log = workdir / f"{subject}-{n}.log"
    profile = Path(args.profile_dir) / f"{subject}-{n}.prof" if args.profile_dir else None
    heap = Path(args.heap_dir) / f"{subject}-{n}.snapshot" if args.heap_dir else None
    if args.trim_probe_dir:
        heap = Path(args.trim_probe_dir) / f"{subject}-{n}.trim.json"
    kind = FloorProcess if subject == "floor" else OperatorProcess
    return kind(plane.operator_kubeconfig(), log, profile=profile, heap=heap)


async def _measure(
    n: int,
    subject: str,
    args: argparse.Namespace,
    workdir: Path,
    plane: ControlPlane,
    api: client.ApiClient,
    namespace: str,
) -> dict[str, Any]:
    fleet = Fleet(api, namespace, workdir, n)
    await fleet.start()
    observer = Observer(api, namespace)
    process = subject_process(subject, plane, n, args, workdir)
    await asyncio.to_thread(process.start)
    try:
        watch_wait = await asyncio.to_thread(wait_watching, plane, PLURAL)
        await create_configmap(api, namespace, "round-trip")
        round_trip = await patch_round_trips(api, namespace, "round-trip", args.round_trips)
        await observer.start()
        under_load = FloorUnderLoad(api, namespace)
        await under_load.start()
        pids = {subject: process.pid, **plane.pids, "harness": os.getpid()}
        cpu_before = process_usage(pids)
        load_before = load_average()
        requests_before = await asyncio.to_thread(apiserver_requests, plane)
        result = await burst(api, fleet, observer, namespace, args.interval, args.timeout)
        await under_load.stop()  # its round-trip patches would keep the writes from settling
        result["settled_after"] = await asyncio.to_thread(wait_writes_settled, plane)
        cpu_burst = {k: v - cpu_before[k] for k, v in process_usage(pids).items()}
        requests_after = await asyncio.to_thread(apiserver_requests, plane)
        burst_requests = {"/".join(p for p in k if p): v for k, v in (requests_after - requests_before).items() if v}
        written = await client.CoreV1Api(api).read_namespaced_config_map(configmap_name(0), namespace)
        await asyncio.sleep(parse_duration(args.interval) + 5)
        observer.status_changes.clear()
        observer.track_changes = True
        idle = await idle_window(plane, fleet, subject, process, args.window)
        idle["status_changes"] = dict(observer.status_changes.most_common(20))
        await observer.stop()
        await asyncio.to_thread(process.heap_snapshot)
        return {
            "subject": subject,
            "n": n,
            "load_before_burst": load_before,
            "watch_wait": watch_wait,
            "round_trip_quiet": round_trip,
            "round_trip_under_load": under_load.samples,
            **result,
            "cpu_burst": cpu_burst,
            "burst_requests": burst_requests,
            "config_text_sha256": hashlib.sha256((written.data or {}).get(KEY, "").encode()).hexdigest(),
            "idle": idle,
            "rollouts_total": sum(len(v) for v in fleet.rollouts.values()),
            "interval": parse_duration(args.interval),
        }
    finally:
        await asyncio.to_thread(process.stop)
        await fleet.stop()


async def main_async(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    # SIGTERM (a timeout, a kill) cancels the run like Ctrl-C: the subject, the fleet and the control plane are
    # stopped by the finally blocks on the way out, nothing is left running.
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    results: list[dict[str, Any]] = []
    info = machine()
    for n in args.scales:
        scale: dict[str, Any] = {"n": n}
        results.append(scale)
        for subject in args.subjects:
            began = time.monotonic()
            result = await run_scale(n, subject, args, workdir)
            result["seconds_total"] = time.monotonic() - began
            result["load_after"] = load_average()
            scale[subject] = result
            if args.json:  # after every run, so a failure at a larger scale keeps the smaller ones' figures
                text = json.dumps({"machine": info, "args": vars(args), "results": results}, indent=1, default=str)
                await asyncio.to_thread(Path(args.json).write_text, text, encoding="utf-8")
            print(f"scale {n}, {subject}: done in {result['seconds_total']:.0f}s", file=sys.stderr, flush=True)
    return {"machine": info, "load_after": load_average(), "args": vars(args), "results": results}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--scales", type=lambda s: [int(x) for x in s.split(",")], default=[1, 100, 500])
    parser.add_argument("--interval", default="30s", help="spec.analysis.interval of every experiment")
    parser.add_argument("--window", type=float, default=120.0, help="seconds of the idle window")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for every experiment")
    parser.add_argument(
        "--only",
        choices=SUBJECTS,
        help="run only the operator or only the bare-Kopf floor (development; the report then has no ratios)",
    )
    parser.add_argument("--round-trips", type=int, default=50, help="sequential ConfigMap patches timed")
    parser.add_argument("--json", help="also write the raw figures here")
    parser.add_argument("--profile-dir", help="run the operator under cProfile, statistics here")
    parser.add_argument(
        "--trim-probe-dir",
        help="after the idle window, the subject's RSS before/after gc.collect() and malloc_trim(0), as JSON here",
    )
    parser.add_argument(
        "--heap-dir", help="run the subject under tracemalloc; a heap snapshot after the idle window is written here"
    )
    parser.add_argument("--keep-workdir", action="store_true", help="keep the operator logs")
    args = parser.parse_args()
    args.subjects = [args.only] if args.only else list(SUBJECTS)
    for directory in (args.profile_dir, args.heap_dir, args.trim_probe_dir):
        if directory:  # made now: the subject writes into it from a signal handler, which must not fail
            Path(directory).mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="canopy-bench-"))
    report = asyncio.run(main_async(args, workdir))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, default=str), encoding="utf-8")
    print(render(report, summary))
    if args.keep_workdir:
        print(f"work dir (operator and floor logs): {workdir}", file=sys.stderr)
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    runs = [scale[s] for scale in report["results"] for s in args.subjects]
    return 0 if all(r["finished"] for r in runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
