"""MLflow vote source: one poll over 10 000 A/B votes kept as MLflow assessments, on a real MLflow server.

Run from the repository root (not a test; not run in CI)::

    .venv/bin/python bench/mlflow_poll.py [--challenger 7000 --champion 3000 --old-votes 1000 --repeat 5]
                                          [--cold-assets] [--profile] [--write] [--json PATH]

What it does, every wait bounded and the server stopped (its whole process group) even on failure:

1. Times ``hack/servers-assets.sh`` warm (``mlflow`` and ``all``) and, with ``--cold-assets``, once cold: both
   envs built into an empty temporary ``CANOPY_CACHE_ROOT`` (removed afterwards), the cost the real-server tests
   add to a fresh CI machine.
2. Starts ``mlflow server`` as the tests do (``tests/support/mlflow_server.py`` over ``canopy_devkit.servers.mlflow``:
   SQLite store, one uvicorn worker, 127.0.0.1) and records its start time and RSS.
3. Checks the bulk seeder against the faithful one: one vote by ``tests/support/gen2_seed_mlflow.py`` and one by
   ``bench/mlflow_bulk_seed.py`` (same arms and back-dating) in an experiment of their own; the search answer of
   each winner and loser trace must have the same keys at every level and the same values, except the ids, the
   times and what names the writing program (``mlflow.source.name``, hence the trace's size metadata).
4. Seeds the experiment with ``bench/mlflow_bulk_seed.py`` (MLflow's own client and tracking store, in-process on
   the server's SQLite file): the window's votes in ``--blocks`` consecutive blocks (so windows of 1/10, 1/2 and
   all of them can be polled) and ``--old-votes`` a day before the window. About 70-90 ms a vote here.
5. Polls like the operator: ``MlflowVotes(MlflowClient(JsonApi(...)), experiment_id, where=url).read(Window(...))``
   with the operator's defaults (10 s request timeout, 32 MiB body cap); the counts must equal the seeded ones.
   The first poll uses a fresh client; then ``--repeat`` polls with one client (as the operator keeps one),
   each followed by the **floor**: the very request bodies of the operator's poll (recorded from its transport)
   replayed in the same order with plain httpx, the answers read and dropped, never parsed: what the server and
   the loopback cost; then the same with two requests in flight. A cProfile of one more poll says where its time
   goes (``--profile`` prints it). Peak Python memory of one poll is ``tracemalloc``'s (a separate run); its RSS
   peak comes from one poll in a fresh process of the project's venv (``VmHWM`` reset just before it).
6. Prints a Markdown section; ``--write`` puts it in ``bench/RESULTS.md`` (replacing an earlier one).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import json
import os
import pstats
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import httpx

from canopy_devkit.servers.process import child_env, group_pids
from canopy_operator.core.readings import Reading, VoteTally, Window
from canopy_operator.service.settings import DEFAULT_MAX_BACKEND_BODY
from canopy_operator.sources.http import JsonApi
from canopy_operator.sources.mlflow.client import DEFAULT_MAX_TRACES, PAGE_SIZE, SEARCH, MlflowClient
from canopy_operator.sources.mlflow.source import MlflowVotes
from common import REPO_ROOT, cpu_seconds, load_average, machine

if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))  # tests.support: the harness of the real-server tests

from tests.support.mlflow_server import MlflowServer

ASSETS_SCRIPT = REPO_ROOT / "hack" / "servers-assets.sh"
BULK_SEEDER = REPO_ROOT / "bench" / "mlflow_bulk_seed.py"
RESULTS = REPO_ROOT / "bench" / "RESULTS.md"
SECTION = "## MLflow vote source: one poll over 10 000 votes"
COMMAND = ".venv/bin/python bench/mlflow_poll.py"
TARGET_SECONDS = 5.0
#: The operator's defaults: ``spec.backend.requestTimeout`` and ``CANOPY_MAX_BACKEND_BODY``.
REQUEST_TIMEOUT = 10.0
POLL_TIMEOUT = 300.0
ASSETS_TIMEOUT = 1800.0
#: The window starts here; the older votes a day before. Fixed, so that every run seeds the same timestamps.
WINDOW_START = datetime(2026, 11, 29, tzinfo=UTC)
SPACING_MS = 20
_T = TypeVar("_T")


# ---------------------------------------------------------------------------------------------------------------
# hack/servers-assets.sh, warm and cold


def run_assets(which: str, env: dict[str, str] | None = None) -> tuple[float, str, str]:
    """Seconds, stdout and stderr of ``servers-assets.sh <which>``; fails on a non-zero exit."""
    began = time.perf_counter()
    result = subprocess.run(
        ["bash", str(ASSETS_SCRIPT), which],
        capture_output=True,
        text=True,
        env=env,
        timeout=ASSETS_TIMEOUT,
        check=False,
    )
    seconds = time.perf_counter() - began
    if result.returncode != 0:
        raise SystemExit(f"{ASSETS_SCRIPT.name} {which} exited {result.returncode}:\n{result.stderr[-3000:]}")
    return seconds, result.stdout, result.stderr


def mlflow_python() -> Path:
    """The MLflow env's Python (built here if the cache is cold, which is then not what the warm figures time)."""
    _, out, _ = run_assets("mlflow")
    lines = [line for line in out.splitlines() if line.startswith("MLFLOW_PYTHON=")]
    if not lines:
        raise SystemExit(f"{ASSETS_SCRIPT.name} printed no MLFLOW_PYTHON= line")
    return Path(lines[-1].removeprefix("MLFLOW_PYTHON="))


def warm_assets(repeat: int = 3) -> dict[str, float]:
    run_assets("all")  # so that "all" is warm too (builds Phoenix's env once if it is missing)
    return {which: statistics.median(run_assets(which)[0] for _ in range(repeat)) for which in ("mlflow", "all")}


def cold_assets() -> dict[str, Any]:
    """Both envs built into an empty temporary cache root: wall time, and each env's build time and size."""
    root = Path(tempfile.mkdtemp(prefix="canopy-cold-assets-"))
    try:
        env = {**os.environ, "CANOPY_CACHE_ROOT": str(root)}
        seconds, _, err = run_assets("all", env)
        envs = {
            m.group(1): {"seconds": int(m.group(2)), "size": m.group(3)}
            for m in re.finditer(r"built (\w+) in (\d+)s; (\S+) at", err)
        }
        return {"seconds": seconds, "envs": envs}
    finally:
        shutil.rmtree(root, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------------------
# seeding


def seed_plan(args: argparse.Namespace) -> list[dict[str, int]]:
    """The old votes, then the window's blocks, each block exactly its share of each arm, back to back."""
    start = int(WINDOW_START.timestamp() * 1000)
    groups = [
        {
            "challenger": args.old_votes // 2,
            "champion": args.old_votes - args.old_votes // 2,
            "start_time_ms": start - 86_400_000,
            "spacing_ms": SPACING_MS,
        }
    ]
    at = start
    for k in range(args.blocks):
        challenger = args.challenger * (k + 1) // args.blocks - args.challenger * k // args.blocks
        champion = args.champion * (k + 1) // args.blocks - args.champion * k // args.blocks
        groups.append({"challenger": challenger, "champion": champion, "start_time_ms": at, "spacing_ms": SPACING_MS})
        at += (challenger + champion) * SPACING_MS
    return groups


def bulk_seed(server: MlflowServer, experiment: str, groups: list[dict[str, Any]], seed: int) -> dict[str, Any]:
    """Run the bulk seeder in the MLflow env; its progress goes to stderr, its JSON result is returned."""
    assert server.python is not None
    assert server.tmp_dir is not None
    plan = {
        "tracking_uri": server.url,
        "store_uri": f"sqlite:///{server.tmp_dir}/mlflow.db",
        "experiment": experiment,
        "seed": seed,
        "groups": groups,
    }
    votes = sum(g["challenger"] + g["champion"] for g in groups)
    timeout = 300 + 0.5 * votes  # about 0.07 s a vote here; generous, still bounded
    result = subprocess.run(
        [str(server.python), "-I", str(BULK_SEEDER)],
        input=json.dumps(plan),
        stdout=subprocess.PIPE,
        text=True,
        cwd=server.tmp_dir,
        env=child_env({}),
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"{BULK_SEEDER.name} exited {result.returncode} (its stderr is above)")
    out: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return out


def search_all(url: str, experiment_id: str) -> list[dict[str, Any]]:
    """Every trace of a (small) experiment, as the REST search returns it."""
    body = {
        "locations": [{"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": experiment_id}}],
        "max_results": PAGE_SIZE,
        "order_by": ["timestamp_ms ASC"],
    }
    answer = httpx.post(f"{url}{SEARCH}", json=body, timeout=30, trust_env=False)
    answer.raise_for_status()
    traces: list[dict[str, Any]] = answer.json().get("traces", [])
    return traces


#: Paths (``.``-joined keys; ``[]`` for list items) whose values may differ between two writers of one vote.
EXPECTED_DIFFERENCES = {
    "trace_id",
    "trace_location.mlflow_experiment.experiment_id",  # each seeder writes to an experiment of its own
    "request_time",
    "tags.mlflow.artifactLocation",  # holds the trace id
    "trace_metadata.mlflow.source.name",  # the writing program's path
    "trace_metadata.mlflow.trace.sizeBytes",  # ... which is part of the trace's size
    "trace_metadata.mlflow.trace.sizeStats",
    "assessments[].assessment_id",
    "assessments[].trace_id",
    "assessments[].create_time",
    "assessments[].last_update_time",
}


def differences(a: Any, b: Any, path: str = "") -> tuple[list[str], list[str]]:
    """(paths whose keys or types differ, paths whose leaf values differ) between two JSON values."""
    if isinstance(a, dict) and isinstance(b, dict):
        shape: list[str] = []
        values: list[str] = []
        if a.keys() != b.keys():
            shape.append(f"{path or '<root>'}: keys {sorted(a.keys() ^ b.keys())}")
        for key in sorted(a.keys() & b.keys()):
            s, v = differences(a[key], b[key], f"{path}.{key}" if path else key)
            shape += s
            values += v
        return shape, values
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} vs {len(b)} items"], []
        shape, values = [], []
        for x, y in zip(a, b, strict=True):
            s, v = differences(x, y, f"{path}[]")
            shape += s
            values += v
        return shape, values
    if type(a) is not type(b):
        return [f"{path}: {type(a).__name__} vs {type(b).__name__}"], []
    return [], ([] if a == b else [path])


def _role(trace: dict[str, Any]) -> str:
    value = trace["assessments"][0]["feedback"]["value"]
    return f"{trace['tags']['mlflow.traceName']}/{'winner' if value else 'loser'}"


def check_shape(server: MlflowServer) -> dict[str, Any]:
    """One vote by each seeder (challenger on screen position a, preferred), compared trace by trace."""
    start = int((WINDOW_START - timedelta(days=2)).timestamp() * 1000)
    faithful = server.seed(
        [
            {
                "op": "ab_vote",
                "preference": "a",
                "prompt_mapping": {"a": "challenger", "b": "champion"},
                "start_time_ms": start,
            }
        ],
        experiment="shape-gen2-seeder",
    )
    group: dict[str, Any] = {"challenger": 1, "champion": 0, "start_time_ms": start, "champion_position": "b"}
    bulk = bulk_seed(server, "shape-bulk-seeder", [group], 1)
    ours = {_role(t): t for t in search_all(server.url, bulk["experiment_id"])}
    theirs = {_role(t): t for t in search_all(server.url, faithful["experiment_id"])}
    if ours.keys() != theirs.keys():
        raise SystemExit(f"shape check: the seeders wrote different traces: {sorted(ours)} vs {sorted(theirs)}")
    shape: list[str] = []
    values: set[str] = set()
    for role in sorted(ours):
        s, v = differences(theirs[role], ours[role])
        shape += [f"{role}: {x}" for x in s]
        values.update(v)
    unexpected = values - EXPECTED_DIFFERENCES
    if shape or unexpected:
        raise SystemExit(f"shape check failed: shape {shape}, unexpected value differences {sorted(unexpected)}")
    example = ours[next(iter(sorted(ours)))]
    return {"traces": sorted(ours), "differing": sorted(values), "keys": sorted(example)}


# ---------------------------------------------------------------------------------------------------------------
# polls


class RecordingTransport(httpx.AsyncBaseTransport):
    """httpx's own transport, keeping the body of every request (to replay the operator's poll as the floor)."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.bodies: list[bytes] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.bodies.append(request.content)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def operator_api(url: str, transport: httpx.AsyncBaseTransport | None = None) -> JsonApi:
    return JsonApi("MLflow", url, REQUEST_TIMEOUT, DEFAULT_MAX_BACKEND_BODY, transport=transport)


async def operator_poll(api: JsonApi, experiment_id: str, window: Window) -> Reading:
    votes = MlflowVotes(MlflowClient(api), experiment_id, where=api.base_url)
    async with asyncio.timeout(POLL_TIMEOUT):
        return await votes.read(window)


async def floor_poll(client: httpx.AsyncClient, bodies: list[bytes], in_flight: int = 1) -> int:
    """The operator's requests (its page tokens included), ``in_flight`` at a time, in its order; each answer read
    to the end and dropped, never parsed. Bytes read."""
    gate = asyncio.Semaphore(in_flight)

    async def one(body: bytes) -> int:
        size = 0
        async with gate, client.stream("POST", SEARCH, content=body) as answer:
            if answer.status_code != 200:
                raise SystemExit(f"floor: {SEARCH} answered {answer.status_code}")
            async for chunk in answer.aiter_raw():
                size += len(chunk)
        return size

    async with asyncio.timeout(POLL_TIMEOUT):
        if in_flight == 1:
            return sum([await one(body) for body in bodies])
        return sum(await asyncio.gather(*(one(body) for body in bodies)))


def floor_client(url: str) -> httpx.AsyncClient:
    headers = {"Accept": "application/json", "Accept-Encoding": "identity", "Content-Type": "application/json"}
    return httpx.AsyncClient(base_url=url, headers=headers, timeout=httpx.Timeout(REQUEST_TIMEOUT), trust_env=False)


def rss_kib() -> tuple[int, int]:
    """This process's (VmRSS, VmHWM) in KiB."""
    rss = hwm = 0
    for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
        elif line.startswith("VmHWM:"):
            hwm = int(line.split()[1])
    return rss, hwm


def reset_hwm() -> None:
    """Reset this process's peak RSS to its current RSS (Linux >= 4.0; left as it is where refused)."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5", encoding="ascii")


async def one_poll_rss(url: str, experiment_id: str, started_ms: int) -> dict[str, int]:
    """In a fresh process (``--one-poll``): RSS before one poll, its peak during the poll (``VmHWM`` reset to the
    RSS first, Linux >= 4.0; without the reset, the process's peak so far) and RSS after, in KiB."""
    window = Window(started_at=datetime.fromtimestamp(started_ms / 1000, tz=UTC))
    async with operator_api(url) as api:
        before, _ = rss_kib()
        reset_hwm()
        reading = await operator_poll(api, experiment_id, window)
        after, peak = rss_kib()
    tally = reading.votes
    assert isinstance(tally, VoteTally)
    return {"rss_before_kib": before, "rss_peak_kib": peak, "rss_after_kib": after, **vars(tally)}


def rss_of_one_poll(url: str, experiment_id: str, window: Window, expected: VoteTally) -> dict[str, int]:
    """One poll in a fresh Python process of the project's venv (this script, ``--one-poll``), bounded."""
    started_ms = int(window.started_at.timestamp() * 1000)
    result = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--one-poll", f"{url},{experiment_id},{started_ms}"],
        capture_output=True,
        text=True,
        timeout=POLL_TIMEOUT + 60,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"--one-poll exited {result.returncode}:\n{result.stderr[-3000:]}")
    out: dict[str, int] = json.loads(result.stdout)
    counted = VoteTally(out["challenger_wins"], out["champion_wins"], out["ties"])
    if counted != expected:
        raise AssertionError(f"the fresh process counted {counted}, the seeded window holds {expected}")
    return out


def server_cpu(server: MlflowServer) -> float:
    assert server.process is not None
    total = 0.0
    for pid in server.process.pids():
        with contextlib.suppress(OSError):
            total += cpu_seconds(pid)
    return total


@dataclass
class WindowResult:
    votes: int
    expected: VoteTally
    counted: VoteTally | None = None
    first_s: float = 0.0
    operator_s: list[float] = field(default_factory=list)
    floor_s: list[float] = field(default_factory=list)
    floor2_s: list[float] = field(default_factory=list)
    """The floor with two requests in flight (what concurrent paging could reach on this server)."""
    operator_cpu_s: float = 0.0
    """The benchmark process's CPU per poll (the operator's side: HTTP client, JSON, parsing, counting)."""
    server_cpu_op_s: float = 0.0
    server_cpu_floor_s: float = 0.0
    requests: int = 0
    body_bytes: int = 0
    peak_traced: int = 0
    rss: dict[str, int] = field(default_factory=dict)
    """A fresh process's RSS before, at the peak of and after one poll (KiB)."""

    def summary(self) -> dict[str, Any]:
        op, fl = statistics.median(self.operator_s), statistics.median(self.floor_s)
        return {
            "votes": self.votes,
            "expected": vars(self.expected),
            "counted": vars(self.counted) if self.counted else None,
            "first_s": self.first_s,
            "operator_median_s": op,
            "operator_max_s": max(self.operator_s),
            "floor_median_s": fl,
            "floor_max_s": max(self.floor_s),
            "floor2_median_s": statistics.median(self.floor2_s),
            "floor2_max_s": max(self.floor2_s),
            "ratio": op / fl,
            "operator_cpu_s": self.operator_cpu_s,
            "server_cpu_op_s": self.server_cpu_op_s,
            "server_cpu_floor_s": self.server_cpu_floor_s,
            "requests": self.requests,
            "body_bytes": self.body_bytes,
            "peak_traced_bytes": self.peak_traced,
            "rss": self.rss,
            "operator_s": self.operator_s,
            "floor_s": self.floor_s,
            "floor2_s": self.floor2_s,
        }


def check_counts(reading: Reading, expected: VoteTally) -> VoteTally:
    tally = reading.votes
    if not isinstance(tally, VoteTally) or tally != expected:
        raise AssertionError(f"the poll counted {tally}, the seeded window holds {expected}")
    if reading.feedback.total != 0:
        raise AssertionError(f"the poll found {reading.feedback.total} thumbs-down, none were seeded")
    return tally


async def _timed(work: Awaitable[_T]) -> tuple[float, _T]:
    began = time.perf_counter()
    result = await work
    return time.perf_counter() - began, result


async def measure_window(
    server: MlflowServer, experiment_id: str, window: Window, expected: VoteTally, repeat: int
) -> WindowResult:
    result = WindowResult(votes=expected.challenger_wins + expected.champion_wins, expected=expected)
    # First poll: a fresh client (new connection), its requests recorded for the floor.
    recorder = RecordingTransport()
    async with operator_api(server.url, recorder) as api:
        result.first_s, reading = await _timed(operator_poll(api, experiment_id, window))
    result.counted = check_counts(reading, expected)
    del reading
    bodies = recorder.bodies
    result.requests = len(bodies)
    # Then the operator's steady state (one client kept) and the floor, interleaved (the load drifts).
    op_cpu = srv_op = srv_floor = 0.0
    async with operator_api(server.url) as api, floor_client(server.url) as raw:
        await floor_poll(raw, bodies, 2)  # opens the floor's connections outside the timed runs
        for _ in range(repeat):
            cpu0, srv0 = time.process_time(), server_cpu(server)
            seconds, reading = await _timed(operator_poll(api, experiment_id, window))
            op_cpu += time.process_time() - cpu0
            srv_op += server_cpu(server) - srv0
            check_counts(reading, expected)
            del reading
            result.operator_s.append(seconds)
            srv0 = server_cpu(server)
            seconds, result.body_bytes = await _timed(floor_poll(raw, bodies))
            srv_floor += server_cpu(server) - srv0
            result.floor_s.append(seconds)
            result.floor2_s.append((await _timed(floor_poll(raw, bodies, 2)))[0])
        result.operator_cpu_s = op_cpu / repeat
        result.server_cpu_op_s = srv_op / repeat
        result.server_cpu_floor_s = srv_floor / repeat
        # Peak Python memory of one poll (tracemalloc slows it: not timed).
        tracemalloc.start()
        try:
            base_traced = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            check_counts(await operator_poll(api, experiment_id, window), expected)
            result.peak_traced = tracemalloc.get_traced_memory()[1] - base_traced
        finally:
            tracemalloc.stop()
    result.rss = await asyncio.to_thread(rss_of_one_poll, server.url, experiment_id, window, expected)
    return result


#: Where one poll's time goes, by the functions of a cProfile (cumulative seconds, the event loop's thread only).
PROFILED = {
    "waiting": "<method 'poll' of 'select.epoll' objects>",  # the server, and JSON decoded in a worker thread
    "parse_trace": "parse_trace",
    "count_mlflow_votes": "count_mlflow_votes",
    "JsonApi.call": "call",
}


async def profile_poll(url: str, experiment_id: str, window: Window) -> dict[str, Any]:
    """A cProfile of one operator poll (one client warmed by a first poll): its top 30 and the PROFILED times."""
    async with operator_api(url) as api:
        await operator_poll(api, experiment_id, window)
        profiler = cProfile.Profile()
        began = time.perf_counter()
        profiler.enable()
        try:
            await operator_poll(api, experiment_id, window)
        finally:
            profiler.disable()
        wall = time.perf_counter() - began
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("cumulative").print_stats(30)
    found: dict[str, float] = {}
    for (filename, _, name), (_, _, _, cumulative, _) in stats.stats.items():  # type: ignore[attr-defined]
        for label, wanted in PROFILED.items():
            in_operator = "canopy_operator" in filename or filename == "~"
            if name == wanted and in_operator:
                found[label] = found.get(label, 0.0) + cumulative
    return {"wall_s": wall, "seconds": found, "listing": out.getvalue()}


# ---------------------------------------------------------------------------------------------------------------
# report


def _mib(n: float) -> str:
    return f"{n / 2**20:.1f}"


def _s(seconds: float) -> str:
    return f"{seconds:.2f}" if seconds < 10 else f"{seconds:.1f}"


def render(report: dict[str, Any]) -> str:
    info, args = report["machine"], report["args"]
    full, small = report["windows"][-1], report["windows"][max(len(report["windows"]) - 2, 0)]
    seeded, shape, server = report["seeded"], report["shape"], report["server"]
    n = full["votes"]
    met = full["operator_max_s"] <= TARGET_SECONDS
    flags = f"--challenger {args['challenger']} --champion {args['champion']} --old-votes {args['old_votes']} "
    flags += f"--blocks {args['blocks']} --repeat {args['repeat']} --seed {args['seed']}"
    lines = [
        SECTION,
        "",
        "One poll of the operator's MLflow vote source (`sources/mlflow/source.py`: `MlflowVotes.read`, which pages "
        f"`POST {SEARCH}` {PAGE_SIZE} traces at a time through `JsonApi`, parses every trace, counts with "
        "`core.tallies.count_mlflow_votes`, then searches the thumbs-down) against a real `mlflow server` 3.17.2 "
        "(SQLite store, one uvicorn worker, 127.0.0.1: `canopy_devkit.servers.mlflow`, as in the tests) holding "
        f"{n:,} A/B votes in the test's window ({full['expected']['challenger_wins']:,} won by the challenger, "
        f"{full['expected']['champion_wins']:,} by the champion: {2 * n:,} traces and as many `ab_preference` "
        f"assessments) and {args['old_votes']:,} older votes outside it.",
        "",
        f"- Command: `{COMMAND}{' --cold-assets' if report.get('cold') else ''} --write` (defaults: `{flags}`)",
        f"- Date: {info['date']}; machine: {info['cpu']} (shared with other engineers' test runs), "
        f"{info['memory']}, {info['os']}; Python {info['python']}; {info['packages']}.",
        f"- Load average (`uptime`): {info['load']} at the start, {report['load_after']} at the end. "
        f"Wall time {report['wall_s'] / 60:.1f} min.",
        "- Seeding: `bench/mlflow_bulk_seed.py` (in the MLflow env) runs MLflow's own client code, "
        "`mlflow.start_span_no_context` → V3 exporter → `SqlAlchemyStore.log_spans` / `start_trace`, and "
        "`mlflow.log_feedback` → `create_assessment`, in-process on the server's SQLite file (the REST handlers "
        f"call the same store methods): {seeded['votes']:,} votes in {seeded['seconds']:.0f} s "
        f"({1000 * seeded['seconds'] / seeded['votes']:.0f} ms a vote; {seeded['traces']:,} traces, "
        f"{seeded['assessments']:,} assessments); database {_mib(seeded['db_bytes'])} MiB.",
        "- Shape check (every run): one vote by `tests/support/gen2_seed_mlflow.py` and one by the bulk seeder; "
        f"the search answers of their {len(shape['traces'])} traces ({', '.join(shape['traces'])}) have the same "
        "keys at every level and the same values except "
        + ", ".join(f"`{p}`" for p in shape["differing"])
        + " (ids, times, the experiment, and the writing program's path with the size it adds).",
        "- Times: the first poll with a fresh client, then "
        f"{args['repeat']} polls with one client (the operator keeps one), each followed by the floor: the very "
        "requests of the operator's poll (page tokens included) sent with plain httpx, answers read and dropped, "
        "never parsed, one at a time and then two in flight. Memory from separate runs: `tracemalloc` (Python "
        "allocations above those before the poll) and one poll in a fresh process of the project's venv (`VmHWM` "
        "reset to the RSS just before it).",
        "",
        f"### {n:,} votes in the window: ≤ {TARGET_SECONDS:g} s **{'met' if met else 'missed'}**",
        "",
        "| measured | value |",
        "|---|---|",
        f"| operator's poll, median / max of {args['repeat']} | **{_s(full['operator_median_s'])} s** / "
        f"{_s(full['operator_max_s'])} s |",
        f"| first poll (fresh client) | {_s(full['first_s'])} s |",
        f"| floor: the same {full['requests']} requests, one at a time (median / max) | "
        f"{_s(full['floor_median_s'])} s / {_s(full['floor_max_s'])} s |",
        f"| **ratio operator / floor** (medians) | **{full['ratio']:.2f}** |",
        f"| floor with two requests in flight (median / max) | {_s(full['floor2_median_s'])} s / "
        f"{_s(full['floor2_max_s'])} s |",
        f"| operator's CPU per poll (HTTP client, JSON, parse, count) | {_s(full['operator_cpu_s'])} s |",
        f"| server's CPU per poll: operator's / floor's | {_s(full['server_cpu_op_s'])} s / "
        f"{_s(full['server_cpu_floor_s'])} s |",
        f"| cProfile of one poll (event loop's thread) | {_profile(report['profile'])} |",
        f"| answers per poll | {full['requests']} requests, {_mib(full['body_bytes'])} MiB "
        f"({full['body_bytes'] / max(n, 1):,.0f} B per vote) |",
        f"| peak traced Python memory of one poll | {_mib(full['peak_traced_bytes'])} MiB |",
        f"| RSS of a fresh process polling once: before / peak / after | {_rss(full['rss'])} |",
        f"| counted (challenger / champion / ties) | {full['counted']['challenger_wins']:,} / "
        f"{full['counted']['champion_wins']:,} / {full['counted']['ties']} (= seeded) |",
        "",
        "Scaling with the window (same server, same run; medians):",
        "",
        "| votes in window | operator s | floor s | ratio | floor, 2 in flight s | peak traced MiB "
        "| RSS peak growth MiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for w in report["windows"]:
        lines.append(
            f"| {w['votes']:,} | {_s(w['operator_median_s'])} | {_s(w['floor_median_s'])} | {w['ratio']:.2f} | "
            f"{_s(w['floor2_median_s'])} | {_mib(w['peak_traced_bytes'])} | "
            f"{(w['rss']['rss_peak_kib'] - w['rss']['rss_before_kib']) / 1024:.1f} |"
        )
    lines += ["", "### Targets and causes", ""]
    lines += _verdicts(full, small)
    lines += ["", "### What these servers cost CI", "", "| measured | value |", "|---|---|"]
    cold = report.get("cold")
    if cold:
        per_env = ", ".join(f"{name} {e['seconds']} s ({e['size']})" for name, e in sorted(cold["envs"].items()))
        lines.append(
            f"| `hack/servers-assets.sh` cold (both envs, empty temporary `CANOPY_CACHE_ROOT`, downloads included) "
            f"| {cold['seconds']:.0f} s: {per_env} |"
        )
    else:
        lines.append("| `hack/servers-assets.sh` cold | not measured in this run (`--cold-assets`) |")
    warm = report["warm"]
    lines += [
        f"| `hack/servers-assets.sh` warm (`mlflow` / `all`, median of 3) | {warm['mlflow']:.3f} s / "
        f"{warm['all']:.3f} s |",
        f"| `mlflow server` start (until `/health` answers) | {server['startup_s']:.1f} s |",
        f"| server RSS: idle / after seeding / after the polls | {_mib(server['rss_idle'])} / "
        f"{_mib(server['rss_seeded'])} / {_mib(server['rss_after'])} MiB |",
        f"| server stop (process group, SIGTERM) | {server['stop_s']:.1f} s; processes left: "
        f"{server['left_after_stop']} |",
        "",
        "So a fresh CI machine pays the cold build once"
        + (f" ({cold['seconds']:.0f} s here, downloads included)" if cold else "")
        + f"; warm, the assets script costs {warm['all']:.3f} s; each real server the tests start adds its start "
        f"({server['startup_s']:.1f} s) and about {_mib(server['rss_idle'])} MiB of RSS while it runs.",
        "",
    ]
    return "\n".join(_wrap(line) for line in lines)


def _profile(profile: dict[str, Any]) -> str:
    seconds = profile["seconds"]
    parts = [f"{label} {seconds[label]:.2f} s" for label in PROFILED if label in seconds]
    return f"{profile['wall_s']:.2f} s in all: " + ", ".join(parts)


def _verdicts(full: dict[str, Any], small: dict[str, Any]) -> list[str]:
    """The two targets, each met or missed with its measured cause (and, when missed, the fix)."""
    out = []
    own = full["operator_median_s"] - full["floor_median_s"]
    if full["operator_max_s"] <= TARGET_SECONDS:
        out.append(
            f"- **Time: met.** Every poll over {full['votes']:,} votes took at most {_s(full['operator_max_s'])} s. "
            f"Most of it is the server's: the floor takes {_s(full['floor_median_s'])} s (max "
            f"{_s(full['floor_max_s'])} s), {_s(full['server_cpu_floor_s'])} s of the server's CPU "
            f"({1000 * full['server_cpu_floor_s'] / max(full['votes'], 1):.2f} ms a trace); the operator adds "
            f"{_s(own)} s ({full['operator_cpu_s']:.2f} s of CPU), since it waits for each page before asking for "
            "the next one. The margin therefore depends on the CPU the server gets: with two requests in flight "
            f"the floor is {_s(full['floor2_median_s'])} s."
        )
    else:
        floor_misses = full["floor_median_s"] > TARGET_SECONDS or full["floor_max_s"] > TARGET_SECONDS
        text = (
            f"- **Time: missed** (median {_s(full['operator_median_s'])} s, max {_s(full['operator_max_s'])} s). "
            f"The server is most of it: the floor, the same requests with nothing parsed, takes "
            f"{_s(full['floor_median_s'])} s (max {_s(full['floor_max_s'])} s) and {_s(full['server_cpu_floor_s'])} s "
            f"of the server's CPU ({1000 * full['server_cpu_floor_s'] / max(full['votes'], 1):.2f} ms a trace). "
            f"The operator adds {_s(own)} s ({full['operator_cpu_s']:.2f} s of CPU): it waits for each page "
            "before asking for the next one and parses in between. "
        )
        if floor_misses:
            text += "No change to the parsing can reach the target while pages are asked for one at a time. "
        if full["floor2_max_s"] <= TARGET_SECONDS:
            text += (
                "Asking for pages concurrently does: with two requests in flight the floor is "
                f"{_s(full['floor2_median_s'])} s (max {_s(full['floor2_max_s'])} s). "
            )
        else:
            text += (
                f"With two requests in flight the floor is {_s(full['floor2_median_s'])} s (max "
                f"{_s(full['floor2_max_s'])} s). "
            )
        text += (
            'MLflow\'s page token is an offset (base64 of `{"offset": N}`), so `MlflowClient.search` could keep the '
            "next page requested while it parses one; or, without reading the token, split the window into "
            "`trace.timestamp_ms` slices searched side by side (the de-duplication by `trace_id` stays). MLflow's "
            "own default is 4 uvicorn workers; the tests' server runs 1."
        )
        out.append(text)
    slope = (full["peak_traced_bytes"] - small["peak_traced_bytes"]) / max(full["votes"] - small["votes"], 1)
    at_cap = full["peak_traced_bytes"] + slope * (DEFAULT_MAX_TRACES - full["votes"])
    if slope < 256:
        out.append(
            f"- **Memory: bounded.** The peak does not grow with the window ({_mib(small['peak_traced_bytes'])} "
            f"MiB at {small['votes']:,} votes, {_mib(full['peak_traced_bytes'])} MiB at {full['votes']:,})."
        )
    else:
        out.append(
            f"- **Memory: bounded only by the trace cap, not by the page.** The peak grows by {slope / 1024:.2f} "
            f"KiB per vote ({_mib(small['peak_traced_bytes'])} MiB at {small['votes']:,} votes, "
            f"{_mib(full['peak_traced_bytes'])} MiB at {full['votes']:,}; about {_mib(at_cap)} MiB at "
            f"`DEFAULT_MAX_TRACES` = {DEFAULT_MAX_TRACES:,}, where the poll fails rather than reads more). "
            "`MlflowVotes.read` keeps every parsed `MlflowTrace` of the window in a list (`votes = [t async for t "
            "in ...]`) and counts only then. Counting page by page (`count_mlflow_votes` per page of 500, the "
            "`SourceCount`s added; each trace counts on its own, so the sum is exact) keeps one page plus the "
            "`trace_id`s `search` de-duplicates by (about 130 B each)."
        )
    return out


def _wrap(line: str, width: int = 112) -> str:
    """Prose and bullets wrapped like the rest of RESULTS.md; tables and headings as they are."""
    if not line or line.startswith(("|", "#")):
        return line
    indent = "  " if line.startswith("- ") else ""
    return textwrap.fill(line, width, subsequent_indent=indent, break_long_words=False, break_on_hyphens=False)


def _rss(rss: dict[str, int]) -> str:
    before, peak, after = (rss[k] / 1024 for k in ("rss_before_kib", "rss_peak_kib", "rss_after_kib"))
    return f"{before:.1f} / {peak:.1f} / {after:.1f} MiB (peak {peak - before:+.1f} MiB)"


def write_section(text: str) -> None:
    """Replace the section in RESULTS.md (up to the next ``## ``), or append it."""
    current = RESULTS.read_text(encoding="utf-8")
    start = current.find(SECTION + "\n")
    if start < 0:
        RESULTS.write_text(current.rstrip("\n") + "\n\n" + text.rstrip("\n") + "\n", encoding="utf-8")
        return
    end = current.find("\n## ", start + len(SECTION))
    tail = "" if end < 0 else current[end + 1 :]
    RESULTS.write_text(current[:start] + text.rstrip("\n") + "\n" + ("\n" + tail if tail else ""), encoding="utf-8")


# ---------------------------------------------------------------------------------------------------------------


def _terminate(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(f"stopped by signal {signum}")  # unwinds the `with`: the server is stopped


def windows_to_poll(blocks: list[dict[str, int]]) -> list[tuple[Window, VoteTally]]:
    """Windows starting at the last block, at the middle one and at the first (the whole window)."""
    out = []
    for k in sorted({len(blocks) - 1, len(blocks) // 2, 0}, reverse=True):
        started = datetime.fromtimestamp(blocks[k]["first_timestamp_ms"] / 1000, tz=UTC)
        tally = VoteTally(
            challenger_wins=sum(b["challenger"] for b in blocks[k:]),
            champion_wins=sum(b["champion"] for b in blocks[k:]),
        )
        out.append((Window(started_at=started), tally))
    return out


def run(args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    began = time.perf_counter()
    info = machine()
    report: dict[str, Any] = {"machine": info, "args": vars(args)}
    python = mlflow_python()
    if args.cold_assets:
        log("cold build of both server envs into an empty temporary cache root (1-5 minutes)")
        report["cold"] = cold_assets()
    log("timing the warm assets script")
    report["warm"] = warm_assets()
    with MlflowServer(python) as server:
        assert server.process is not None
        assert server.tmp_dir is not None
        report["server"] = {"startup_s": server.startup_seconds, "rss_idle": server.rss_bytes()}
        log(f"server ready in {server.startup_seconds:.1f}s at {server.url}; checking the bulk seeder's shape")
        report["shape"] = check_shape(server)
        groups = seed_plan(args)
        votes = sum(g["challenger"] + g["champion"] for g in groups)
        log(f"seeding {votes} votes (about {votes * 0.07 / 60:.0f} min)")
        seeded = bulk_seed(server, "canopy-backend", groups, args.seed)
        seeded["votes"] = votes
        seeded["db_bytes"] = (server.tmp_dir / "mlflow.db").stat().st_size
        report["seeded"] = seeded
        report["server"]["rss_seeded"] = server.rss_bytes()
        experiment_id = seeded["experiment_id"]
        results = []
        for window, expected in windows_to_poll(seeded["groups"][1:]):
            n = expected.challenger_wins + expected.champion_wins
            repeat = args.repeat if n == args.challenger + args.champion else 3
            log(f"polling a window of {n} votes ({repeat} times, and the floor)")
            result = asyncio.run(measure_window(server, experiment_id, window, expected, repeat))
            results.append(result.summary())
            s = results[-1]
            log(
                f"  operator {s['operator_median_s']:.2f}s (max {s['operator_max_s']:.2f}), floor "
                f"{s['floor_median_s']:.2f}s, ratio {s['ratio']:.2f}, peak traced {_mib(s['peak_traced_bytes'])} MiB"
            )
        report["windows"] = results
        window, _ = windows_to_poll(seeded["groups"][1:])[-1]
        report["profile"] = asyncio.run(profile_poll(server.url, experiment_id, window))
        if args.profile:
            log(report["profile"]["listing"])
        report["server"]["rss_after"] = server.rss_bytes()
        pgid = server.process.pgid
        stopping = time.perf_counter()
        server.close()
        report["server"]["stop_s"] = time.perf_counter() - stopping
        report["server"]["left_after_stop"] = len(group_pids(pgid))
    report["load_after"] = load_average()
    report["wall_s"] = time.perf_counter() - began
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--challenger", type=int, default=7000, help="votes won by the challenger in the window")
    parser.add_argument("--champion", type=int, default=3000, help="votes won by the champion in the window")
    parser.add_argument("--old-votes", type=int, default=1000, help="votes a day before the window (not counted)")
    parser.add_argument("--blocks", type=int, default=10, help="blocks of the window (smaller windows are polled)")
    parser.add_argument("--repeat", type=int, default=5, help="timed polls of the whole window")
    parser.add_argument("--seed", type=int, default=20261129)
    parser.add_argument("--cold-assets", action="store_true", help="also time a cold build of the server envs")
    parser.add_argument("--profile", action="store_true", help="print the cProfile listing of one poll (stderr)")
    parser.add_argument("--write", action="store_true", help=f"put the section in {RESULTS.relative_to(REPO_ROOT)}")
    parser.add_argument("--json", type=Path, help="also write every figure here")
    parser.add_argument("--one-poll", help=argparse.SUPPRESS)  # URL,EXPERIMENT_ID,WINDOW_START_MS: internal
    parser.add_argument("--render", type=Path, help="no run: print (and --write) the section of a --json report")
    args = parser.parse_args()
    if args.one_poll:
        url, experiment_id, started_ms = args.one_poll.split(",")
        print(json.dumps(asyncio.run(one_poll_rss(url, experiment_id, int(started_ms)))))
        return 0
    if args.blocks < 1 or args.challenger + args.champion < args.blocks or args.repeat < 1:
        parser.error("need at least one vote per block and one repeat")
    signal.signal(signal.SIGTERM, _terminate)

    def log(text: str) -> None:
        print(f"mlflow_poll: {text}", file=sys.stderr, flush=True)

    report = json.loads(args.render.read_text(encoding="utf-8")) if args.render else run(args, log)
    text = render(report)
    print(text)
    if args.json and not args.render:
        args.json.write_text(json.dumps(report, indent=1, default=str), encoding="utf-8")
    if args.write:
        write_section(text)
        log(f"wrote the section to {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
