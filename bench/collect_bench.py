"""Collection throughput: one backend poll of 100 000 A/B votes and 100 000 feedback entries, old and new reading.

Run from the repository root (not a test; not run in CI)::

    .venv/bin/python bench/collect_bench.py [--entries 100000] [--input-chars 800] [--new 10] [--dataset 0]

The bodies are exactly what the simulator answers (its ``json_response`` over entries shaped like the
backend's), served from files by a separate process (``static_server.py``), and read through the operator's
real client. Per store, in the same run:

- floors: the same body read over HTTP and thrown away (httpx, streamed), and parsed in memory by ``json.loads``
  and by ijson's C parser without building anything kept;
- the old reading (``CanopyClient.ab_feedback()``/``feedback()``: whole body, strict pydantic models, then
  ``to_entries()``) and the ingest (``core.collect``): the first poll (everything new) and the next ones;
- the new reading (``ab_log()``/``feedback_log()``: the body streamed and kept as read, one ijson pass keeping
  ids and the last entries, entries built when the ingest asks): the whole steady-state poll with nothing new
  and with ``--new`` entries above the read position, and the whole first poll;
- both stores read as ``CanopySource.read`` does (both bodies held until counted) and counted.

Times are medians of ``--repeat`` untraced runs (wall clock; CPU seconds of this process beside them); peak
memory is measured in a separate run of each step: ``tracemalloc`` (Python allocations above those before the
step, as the old figures were measured) and, with ``--rss`` (default on), the growth of the resident set's
high-water mark in a fresh process that runs only that step (what the C parser and pydantic's Rust core
allocate is only seen there).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
import ijson  # type: ignore[import-untyped]

from canopy_devkit.controlplane.processes import free_ports
from canopy_devkit.simulator.http import json_response
from canopy_operator.api.status import Collection, EpochPrompts, VoteCounts
from canopy_operator.core.collect import ingest_ab, ingest_feedback, text_hash
from canopy_operator.core.export import parse_export, render_export
from canopy_operator.sources.canopy.client import CanopyClient
from canopy_operator.sources.canopy.errors import BackendError
from canopy_operator.sources.canopy.source import CanopySource
from common import REPO_ROOT, load_average, machine, memory_kib

CHAMPION = "Summarize the following text in a clear and detailed manner:\n"
CHALLENGER = "Provide a brief, concise summary:\n"
WORDS = [
    "the",
    "model",
    "summary",
    "text",
    "article",
    "data",
    "result",
    "users",
    "policy",
    "change",
    "growth",
    "risk",
    "method",
    "trend",
    "claim",
]
NOW = datetime(2026, 11, 22, tzinfo=UTC)
PROMPTS = EpochPrompts(prompt=text_hash(CHAMPION), prompt_b=text_hash(CHALLENGER))
TLS = ssl.create_default_context()  # one trust store for every client, as the operator shares one


def _text(rng: Any, chars: int, prefix: str) -> str:
    words = [prefix]
    length = len(prefix)
    while length < chars:
        word = WORDS[rng.randrange(len(WORDS))]
        words.append(word)
        length += len(word) + 1
    return " ".join(words)[:chars]


def _timestamp(i: int) -> str:
    return (NOW + timedelta(microseconds=1 + 37 * i)).isoformat()


def ab_entries(n: int, input_chars: int, answer_chars: int, rng: Any) -> list[dict[str, Any]]:
    """Votes as the backend stores them: 45 % challenger, 45 % champion, 10 % ties, sides shuffled."""
    answers = [_text(rng, answer_chars, f"answer {k}") for k in range(1000)]
    out = []
    for i in range(n):
        mapping = {"a": "prompt", "b": "prompt_b"} if rng.random() < 0.5 else {"a": "prompt_b", "b": "prompt"}
        roll = rng.random()
        key = "prompt_b" if roll < 0.45 else "prompt"
        preference = "tie" if roll >= 0.9 else ("a" if mapping["a"] == key else "b")
        out.append(
            {
                "id": i + 1,
                "timestamp": _timestamp(i),
                "feature": "summarize",
                "preference": preference,
                "winning_prompt": mapping.get(preference),
                "prompt_mapping": mapping,
                "input_text": _text(rng, input_chars, f"article {i}:"),
                "response_a": answers[i % 1000],
                "response_b": answers[(i * 7 + 1) % 1000],
            }
        )
    return out


def feedback_entries(n: int, input_chars: int, answer_chars: int, rng: Any) -> list[dict[str, Any]]:
    """Thumbs as the backend stores them: 30 % thumbs_down, a comment on one in ten."""
    answers = [_text(rng, answer_chars, f"answer {k}") for k in range(1000)]
    return [
        {
            "id": i + 1,
            "timestamp": _timestamp(i),
            "feature": "summarize",
            "rating": "thumbs_down" if rng.random() < 0.3 else "thumbs_up",
            "input_text": _text(rng, input_chars, f"article {i}:"),
            "response_text": answers[i % 1000],
            "comment": "too long" if i % 10 == 0 else None,
        }
        for i in range(n)
    ]


def ab_body(entries: list[dict[str, Any]]) -> bytes:
    """``GET /feedback/ab`` exactly as the simulator encodes it."""
    content = {
        "total": len(entries),
        "prompt_a_wins": sum(1 for e in entries if e["winning_prompt"] == "prompt"),
        "prompt_b_wins": sum(1 for e in entries if e["winning_prompt"] == "prompt_b"),
        "ties": sum(1 for e in entries if e["preference"] == "tie"),
        "entries": entries,
    }
    return bytes(json_response(content).body)  # type: ignore[arg-type]  # a bytes payload


def feedback_body(entries: list[dict[str, Any]]) -> bytes:
    return bytes(json_response({"total": len(entries), "feedback": entries}).body)  # type: ignore[arg-type]


# ---- measuring -----------------------------------------------------------------------------------------------


@dataclass
class Row:
    step: str
    seconds: float
    cpu: float
    traced_mib: float
    rss_mib: float | None = None
    rss_key: str | None = None
    """The step's name for ``--rss-step`` (measured in a fresh process), or None."""


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, float, Any]:
    """Median wall seconds and median CPU seconds (this process) of ``repeat`` runs, and the last result."""
    walls, cpus, result = [], [], None
    for _ in range(repeat):
        result = None
        gc.collect()
        began, cpu = time.perf_counter(), time.process_time()
        result = fn()
        walls.append(time.perf_counter() - began)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus), result


def peak_mib(fn: Callable[[], Any]) -> float:
    """Peak traced memory (MiB) allocated while ``fn`` runs, above what was allocated before."""
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        fn()
        return (tracemalloc.get_traced_memory()[1] - base) / 2**20
    finally:
        tracemalloc.stop()


class Bench:
    """The steps, against the static server at ``url``."""

    def __init__(self, url: str, limit: int, new: int) -> None:
        self.url = url
        self.limit = limit
        self.new = new

    def client(self) -> CanopyClient:
        return CanopyClient(self.url, timeout=300, max_body_bytes=self.limit, tls=TLS)

    def run(self, work: Callable[[CanopyClient], Any]) -> Any:
        """One poll through the real client, on its own event loop (as a reconcile pass has)."""

        async def go() -> Any:
            async with self.client() as client:
                return await work(client)

        return asyncio.run(go())

    def http_floor(self, path: str) -> int:
        """The body read over HTTP, streamed and thrown away."""

        async def go() -> int:
            size = 0
            async with (
                httpx.AsyncClient(base_url=self.url, headers={"Accept-Encoding": "identity"}, verify=TLS) as c,
                c.stream("GET", path) as response,
            ):
                async for chunk in response.aiter_raw():
                    size += len(chunk)
            return size

        return asyncio.run(go())

    # Old reading: the whole body parsed into strict models, then entries.
    def old_ab(self) -> Any:
        return self.run(lambda c: c.ab_feedback())

    def old_feedback(self) -> Any:
        return self.run(lambda c: c.feedback())

    # New reading: the log.
    def new_ab(self) -> Any:
        return self.run(lambda c: c.ab_log())

    def new_feedback(self) -> Any:
        return self.run(lambda c: c.feedback_log())

    def ingest_ab(self, entries: Any, total: int, collection: Collection) -> Any:
        champion, challenger = text_hash(CHAMPION), text_hash(CHALLENGER)
        return ingest_ab(collection, VoteCounts(), entries, total, PROMPTS, champion, challenger, 3, now=NOW)

    def ingest_feedback(self, entries: Any, total: int, collection: Collection) -> Any:
        return ingest_feedback(collection, entries, total, set(), now=NOW)

    def source_read(self) -> Any:
        async def go() -> Any:
            source = CanopySource(self.client())
            try:
                return await source.read(None)  # type: ignore[arg-type]  # the Canopy source ignores the window
            finally:
                await source.aclose()

        return asyncio.run(go())


def positions(bench: Bench, entries: int) -> dict[str, Collection]:
    """Read positions: nothing read yet, everything read, all but the last ``--new`` entries read."""
    ab = bench.old_ab()
    ab_entries = ab.to_entries()
    first = bench.ingest_ab(ab_entries, ab.total, Collection()).collection
    fb = bench.old_feedback()
    fb_entries = fb.to_entries()
    fb_first = bench.ingest_feedback(fb_entries, fb.total, first).collection
    caught_up = fb_first.model_copy(update={"ab_fingerprint": first.ab_fingerprint})
    behind = caught_up.model_copy(
        update={"ab_cursor": entries - bench.new, "feedback_cursor": entries - bench.new, "last_poll_time": None}
    )
    return {"first": Collection(), "idle": caught_up, "behind": behind}


def steps(bench: Bench, at: dict[str, Collection], ab: bytes, fb: bytes) -> dict[str, Callable[[], Any]]:
    """Every measured step by name (a name is also what ``--rss-step`` runs in a fresh process)."""
    out: dict[str, Callable[[], Any]] = {}
    for store, body, path in (("ab", ab, "/feedback/ab"), ("feedback", fb, "/feedback")):
        ingest = bench.ingest_ab if store == "ab" else bench.ingest_feedback
        old = bench.old_ab if store == "ab" else bench.old_feedback
        new = bench.new_ab if store == "ab" else bench.new_feedback
        out |= {
            f"{store}.floor.http": lambda path=path: bench.http_floor(path),
            f"{store}.floor.json": lambda body=body: json.loads(body),
            f"{store}.floor.ijson": lambda body=body: sum(1 for _ in ijson.basic_parse(body)),
            f"{store}.old.read": old,
            f"{store}.old.poll.idle": lambda old=old, ingest=ingest: _old_poll(old, ingest, at["idle"]),
            f"{store}.old.poll.behind": lambda old=old, ingest=ingest: _old_poll(old, ingest, at["behind"]),
            f"{store}.old.poll.first": lambda old=old, ingest=ingest: _old_poll(old, ingest, at["first"]),
            f"{store}.new.read": new,
            f"{store}.new.poll.idle": lambda new=new, ingest=ingest: _new_poll(new, ingest, at["idle"]),
            f"{store}.new.poll.behind": lambda new=new, ingest=ingest: _new_poll(new, ingest, at["behind"]),
            f"{store}.new.poll.first": lambda new=new, ingest=ingest: _new_poll(new, ingest, at["first"]),
        }
    out["both.new.poll.behind"] = lambda: _both(bench, at["behind"])
    out["both.old.poll.behind"] = lambda: _both_old(bench, at["behind"])
    return out


def _old_poll(read: Callable[[], Any], ingest: Callable[..., Any], collection: Collection) -> Any:
    listing = read()
    return ingest(listing.to_entries(), listing.total, collection)


def _new_poll(read: Callable[[], Any], ingest: Callable[..., Any], collection: Collection) -> Any:
    log = read()
    return ingest(log.entries, log.total, collection)


def _both(bench: Bench, collection: Collection) -> Any:
    reading = bench.source_read()
    counted = bench.ingest_ab(reading.votes.entries, reading.votes.total, collection)
    return bench.ingest_feedback(reading.feedback.entries, reading.feedback.total, counted.collection)


def _both_old(bench: Bench, collection: Collection) -> Any:
    ab, fb = bench.old_ab(), bench.old_feedback()
    counted = bench.ingest_ab(ab.to_entries(), ab.total, collection)
    return bench.ingest_feedback(fb.to_entries(), fb.total, counted.collection)


LABELS = {
    "floor.http": "floor: the body over HTTP, streamed and dropped (httpx)",
    "floor.json": "floor: `json.loads` of the body (in memory)",
    "floor.ijson": "floor: ijson (yajl C) parse events of the body, nothing kept (in memory)",
    "old.read": "old: HTTP read + strict parse of every entry (`ab_feedback()`/`feedback()`)",
    "old.poll.idle": "**old: whole poll, nothing new** (read + parse + `to_entries` + ingest)",
    "old.poll.behind": "old: whole poll, {new} new (read + parse + `to_entries` + ingest)",
    "old.poll.first": "old: whole first poll (everything new)",
    "new.read": "new: HTTP read streamed + one ijson pass (`ab_log()`/`feedback_log()`)",
    "new.poll.idle": "**new: whole poll, nothing new** (read + pass + ingest)",
    "new.poll.behind": "**new: whole poll, {new} new** (read + pass + ingest, {new} entries built and checked)",
    "new.poll.first": "new: whole first poll (everything new: every entry built and checked)",
}


def measure(bench: Bench, named: dict[str, Callable[[], Any]], repeat: int, rss: bool, order: list[str]) -> list[Row]:
    rows = []
    for key in order:
        fn = named[key]
        wall, cpu, _ = timed(fn, repeat)
        traced = peak_mib(fn)
        rows.append(Row(key, wall, cpu, traced, _rss_of(key) if rss else None, key))
    return rows


ARGS: argparse.Namespace


def _rss_of(key: str) -> float:
    """Peak resident-set growth (MiB) of a fresh process running only step ``key`` once."""
    command = [sys.executable, __file__, "--rss-step", key, "--url", URL]
    command += ["--entries", str(ARGS.entries), "--new", str(ARGS.new), "--limit-mib", str(ARGS.limit_mib)]
    command += ["--bodies", str(BODIES)]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


URL = ""
BODIES = Path()


def rss_step(args: argparse.Namespace) -> int:
    """Run one step once in this fresh process; print the growth of the RSS high-water mark in MiB."""
    bench = Bench(args.url, args.limit_mib * 2**20, args.new)
    saved = json.loads((args.bodies / "positions.json").read_text(encoding="utf-8"))
    at = {name: Collection.model_validate(value) for name, value in saved.items()}
    ab = (args.bodies / "ab.json").read_bytes() if args.rss_step.startswith("ab.floor") else b""
    fb = (args.bodies / "feedback.json").read_bytes() if args.rss_step.startswith("feedback.floor") else b""
    fn = steps(bench, at, ab, fb)[args.rss_step]
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5", encoding="ascii")  # reset VmHWM to the current RSS
    before = memory_kib(os.getpid())["rss"]
    fn()
    print(f"{(memory_kib(os.getpid())['hwm'] - before) / 1024:.1f}")
    return 0


def measure_dataset(args: argparse.Namespace, rng: Any) -> list[Row]:
    prompts = [_text(rng, args.input_chars, f"negative {i}:") for i in range(args.dataset)]
    wall, cpu, text = timed(lambda: render_export(prompts), args.repeat)
    p_wall, p_cpu, parsed = timed(lambda: parse_export(text), args.repeat)
    assert parsed == prompts
    size = len(text.encode("utf-8")) / 2**20
    return [
        Row(
            f"dataset: render_export, {len(prompts)} negatives ({size:.1f} MiB YAML)",
            wall,
            cpu,
            peak_mib(lambda: render_export(prompts)),
        ),
        Row(
            "dataset: parse_export (the client's check of /feedback/export)",
            p_wall,
            p_cpu,
            peak_mib(lambda: parse_export(text)),
        ),
    ]


def start_server(directory: Path) -> tuple[subprocess.Popen[bytes], str]:
    (port,) = free_ports(1)
    script = REPO_ROOT / "bench" / "static_server.py"
    proc = subprocess.Popen([sys.executable, str(script), str(port), str(directory)], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    proc.stdout.readline()
    url = f"http://127.0.0.1:{port}"
    httpx.get(f"{url}/feedback", timeout=60, trust_env=False)  # warm the file cache
    return proc, url


def default_limit_check(bench: Bench) -> str:
    """What a poll does with the client's default body limit (the operator's default setting)."""
    small = Bench(bench.url, 32 * 2**20, bench.new)
    try:
        small.new_ab()
    except BackendError as exc:
        return f"fails: {exc}"
    return "succeeds"


def check_same_entries(bench: Bench) -> str:
    """The new reading builds exactly the old reading's entries (every entry, both stores)."""
    for old, new in ((bench.old_ab, bench.new_ab), (bench.old_feedback, bench.new_feedback)):
        listing, log = old(), new()
        assert (log.total, list(log.entries)) == (listing.total, listing.to_entries())
    return "identical entries and totals (both stores, every entry)"


def main() -> int:
    global ARGS, URL, BODIES
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--input-chars", type=int, default=800, help="input_text length (the contract's example: 812)")
    parser.add_argument("--answer-chars", type=int, default=140, help="answer length (the contract's example: 140)")
    parser.add_argument("--new", type=int, default=10, help="entries above the read position in the 'behind' poll")
    parser.add_argument("--dataset", type=int, default=0, help="negative cases in the dataset (0: not measured)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--limit-mib", type=int, default=1024, help="the client's body limit for the measured polls")
    parser.add_argument("--seed", type=int, default=20261122)
    parser.add_argument("--no-rss", dest="rss", action="store_false", help="skip the fresh-process RSS column")
    parser.add_argument("--rss-step", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--bodies", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_step:
        return rss_step(args)
    ARGS = args
    rng = random.Random(args.seed)
    info = machine()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="canopy-collect-") as tmp:
        BODIES = Path(tmp)
        ab = ab_body(ab_entries(args.entries, args.input_chars, args.answer_chars, rng))
        fb = feedback_body(feedback_entries(args.entries, args.input_chars, args.answer_chars, rng))
        (BODIES / "ab.json").write_bytes(ab)
        (BODIES / "feedback.json").write_bytes(fb)
        proc, URL = start_server(BODIES)
        try:
            bench = Bench(URL, args.limit_mib * 2**20, args.new)
            limit_result = default_limit_check(bench)
            same = check_same_entries(bench)
            at = positions(bench, args.entries)
            saved = {name: collection.model_dump(mode="json") for name, collection in at.items()}
            (BODIES / "positions.json").write_text(json.dumps(saved), encoding="utf-8")
            named = steps(bench, at, ab, fb)
            order = [f"{s}.{k}" for s in ("ab", "feedback") for k in LABELS] + [
                "both.new.poll.behind",
                "both.old.poll.behind",
            ]
            rows = measure(bench, named, args.repeat, args.rss, order)
            rows += measure_dataset(args, rng) if args.dataset else []
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    report(args, info, ab, fb, rows, limit_result, same, time.monotonic() - started)
    return 0


def report(
    args: argparse.Namespace,
    info: dict[str, str],
    ab: bytes,
    fb: bytes,
    rows: list[Row],
    limit_result: str,
    same: str,
    wall: float,
) -> None:
    versions = f"ijson {metadata.version('ijson')} ({ijson.backend})"
    print(f"- Date: {info['date']}; machine: {info['cpu']}, {info['memory']}; {info['os']}; Python {info['python']}")
    print(f"- Packages: {info['packages']}, {versions}")
    print(f"- Load average at start {info['load']}, at the end {load_average()}; wall time {wall / 60:.1f} min")
    print(
        f"- Bodies: GET /feedback/ab {len(ab) / 2**20:.1f} MiB ({len(ab) / args.entries:.0f} B per vote), "
        f"GET /feedback {len(fb) / 2**20:.1f} MiB ({len(fb) / args.entries:.0f} B per entry); "
        f"input_text {args.input_chars} chars, answers {args.answer_chars} chars"
    )
    print(f"- With the operator's default body limit (32 MiB) the A/B poll {limit_result}")
    print(f"- New reading vs old: {same}")
    print("")
    by_key = {row.rss_key: row for row in rows if row.rss_key}
    print(
        f"| step | time s (median of {args.repeat}) | CPU s | x HTTP floor | x json.loads | "
        "peak traced MiB | peak RSS growth MiB (fresh process) |"
    )
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        store = row.step.split(".", 1)[0]
        label = row.step
        if row.rss_key and "." in row.step:
            key = row.step.split(".", 1)[1]
            label = f"{store}: " + LABELS.get(key, key).format(new=args.new)
        http = by_key.get(f"{store}.floor.http")
        loads = by_key.get(f"{store}.floor.json")
        ratio = f"{row.seconds / http.seconds:.1f}" if http else ""
        ratio_json = f"{row.seconds / loads.seconds:.1f}" if loads else ""
        rss = f"{row.rss_mib:.0f}" if row.rss_mib is not None else ""
        print(
            f"| {label} | {row.seconds:.3f} | {row.cpu:.3f} | {ratio} | {ratio_json} | {row.traced_mib:.0f} | {rss} |"
        )


if __name__ == "__main__":
    raise SystemExit(main())
