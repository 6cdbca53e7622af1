"""Collection throughput: one backend poll of 100 000 A/B votes and 100 000 feedback entries, and a dataset.

Run from the repository root (not a test; not run in CI)::

    .venv/bin/python bench/collect_bench.py [--entries 100000] [--input-chars 800] [--dataset 10000]

The bodies are exactly what the simulator answers (its ``json_response`` over entries shaped like the
backend's), served from files by a separate process (``static_server.py``), and read through the operator's
real client (``CanopyClient``: HTTP, size limit, strict pydantic parsing). Then the pure ``core.collect``
ingest runs on the parsed entries: the first poll (everything new) and the next one (nothing new, which is
what every idle poll of a backend holding that many entries costs). Times are medians of ``--repeat`` runs
without tracing; peak memory is measured in a separate run of each step under ``tracemalloc``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from canopy_devkit.controlplane.processes import free_ports
from canopy_devkit.simulator.http import json_response
from canopy_operator.api.status import Collection, EpochPrompts, VoteCounts
from canopy_operator.core.collect import ingest_ab, ingest_feedback, text_hash
from canopy_operator.core.export import parse_export, render_export
from canopy_operator.sources.canopy.client import CanopyClient
from canopy_operator.sources.canopy.errors import BackendError
from common import REPO_ROOT, load_average, machine

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


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """Median seconds of ``repeat`` runs and the last result."""
    durations, result = [], None
    for _ in range(repeat):
        began = time.perf_counter()
        result = fn()
        durations.append(time.perf_counter() - began)
    return statistics.median(durations), result


def peak_mib(fn: Callable[[], Any]) -> float:
    """Peak traced memory (MiB) allocated while ``fn`` runs, above what was allocated before."""
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        fn()
        return (tracemalloc.get_traced_memory()[1] - base) / 2**20
    finally:
        tracemalloc.stop()


def fetch(url: str, what: str, limit: int) -> Any:
    """One poll through the real client (its own event loop, as a reconcile pass has)."""

    async def go() -> Any:
        async with CanopyClient(url, timeout=300, max_body_bytes=limit) as client:
            return await (client.ab_feedback() if what == "ab" else client.feedback())

    return asyncio.run(go())


def start_server(directory: Path) -> tuple[subprocess.Popen[bytes], str]:
    (port,) = free_ports(1)
    script = REPO_ROOT / "bench" / "static_server.py"
    proc = subprocess.Popen([sys.executable, str(script), str(port), str(directory)], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    proc.stdout.readline()
    url = f"http://127.0.0.1:{port}"
    httpx.get(f"{url}/feedback", timeout=60, trust_env=False)  # warm the file cache
    return proc, url


def measure_polls(url: str, args: argparse.Namespace, rows: list[tuple[str, float, float]]) -> None:
    limit = args.limit_mib * 2**20
    prompts = EpochPrompts(prompt=text_hash(CHAMPION), prompt_b=text_hash(CHALLENGER))
    champion, challenger = text_hash(CHAMPION), text_hash(CHALLENGER)

    def ingest(entries: Any, collection: Collection) -> Any:
        return ingest_ab(collection, VoteCounts(), entries, len(entries), prompts, champion, challenger, 3, now=NOW)

    t_fetch, ab = timed(lambda: fetch(url, "ab", limit), args.repeat)
    t_conv, entries = timed(ab.to_entries, args.repeat)
    t_first, first = timed(lambda: ingest(entries, Collection()), args.repeat)
    t_idle, _ = timed(lambda: ingest(entries, first.collection), args.repeat)
    counted = first.votes
    rows += [
        (f"A/B: HTTP read + strict parse ({len(entries)} votes)", t_fetch, peak_mib(lambda: fetch(url, "ab", limit))),
        ("A/B: to_entries()", t_conv, peak_mib(ab.to_entries)),
        (
            f"A/B: ingest_ab, first poll (counted {counted.challenger_wins}/{counted.champion_wins}/{counted.ties})",
            t_first,
            peak_mib(lambda: ingest(entries, Collection())),
        ),
        ("A/B: ingest_ab, next poll (nothing new)", t_idle, peak_mib(lambda: ingest(entries, first.collection))),
        (
            "A/B: whole poll (read + parse + ingest)",
            t_fetch + t_conv + t_first,
            peak_mib(lambda: ingest(fetch(url, "ab", limit).to_entries(), Collection())),
        ),
    ]
    del ab, entries, first

    def ingest_fb(entries: Any, collection: Collection) -> Any:
        return ingest_feedback(collection, entries, len(entries), set(), now=NOW)

    t_fetch, fb = timed(lambda: fetch(url, "feedback", limit), args.repeat)
    t_conv, entries = timed(fb.to_entries, args.repeat)
    t_first, first = timed(lambda: ingest_fb(entries, Collection()), args.repeat)
    t_idle, _ = timed(lambda: ingest_fb(entries, first.collection), args.repeat)
    rows += [
        (
            f"feedback: HTTP read + strict parse ({len(entries)} entries)",
            t_fetch,
            peak_mib(lambda: fetch(url, "feedback", limit)),
        ),
        ("feedback: to_entries()", t_conv, peak_mib(fb.to_entries)),
        (
            f"feedback: ingest_feedback, first poll ({len(first.new_negatives)} new negatives)",
            t_first,
            peak_mib(lambda: ingest_fb(entries, Collection())),
        ),
        (
            "feedback: ingest_feedback, next poll (nothing new)",
            t_idle,
            peak_mib(lambda: ingest_fb(entries, first.collection)),
        ),
        (
            "feedback: whole poll (read + parse + ingest)",
            t_fetch + t_conv + t_first,
            peak_mib(lambda: ingest_fb(fetch(url, "feedback", limit).to_entries(), Collection())),
        ),
    ]


def measure_dataset(args: argparse.Namespace, rng: Any, rows: list[tuple[str, float, float]]) -> None:
    prompts = [_text(rng, args.input_chars, f"negative {i}:") for i in range(args.dataset)]
    t_render, text = timed(lambda: render_export(prompts), args.repeat)
    t_parse, parsed = timed(lambda: parse_export(text), args.repeat)
    assert parsed == prompts
    size = len(text.encode("utf-8")) / 2**20
    rows += [
        (
            f"dataset: render_export, {len(prompts)} negatives ({size:.1f} MiB YAML)",
            t_render,
            peak_mib(lambda: render_export(prompts)),
        ),
        (
            "dataset: parse_export (the client's check of /feedback/export)",
            t_parse,
            peak_mib(lambda: parse_export(text)),
        ),
    ]


def default_limit_check(url: str) -> str:
    """What a poll does with the client's default body limit (the operator's default setting)."""
    try:
        fetch(url, "ab", 32 * 2**20)
    except BackendError as exc:
        return f"fails: {exc}"
    return "succeeds"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--input-chars", type=int, default=800, help="input_text length (the contract's example: 812)")
    parser.add_argument("--answer-chars", type=int, default=140, help="answer length (the contract's example: 140)")
    parser.add_argument("--dataset", type=int, default=10_000, help="negative cases in the dataset")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--limit-mib", type=int, default=1024, help="the client's body limit for the measured polls")
    parser.add_argument("--seed", type=int, default=20261122)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    info = machine()
    with tempfile.TemporaryDirectory(prefix="canopy-collect-") as tmp:
        directory = Path(tmp)
        ab = ab_body(ab_entries(args.entries, args.input_chars, args.answer_chars, rng))
        fb = feedback_body(feedback_entries(args.entries, args.input_chars, args.answer_chars, rng))
        (directory / "ab.json").write_bytes(ab)
        (directory / "feedback.json").write_bytes(fb)
        proc, url = start_server(directory)
        try:
            rows: list[tuple[str, float, float]] = []
            limit_result = default_limit_check(url)
            measure_polls(url, args, rows)
            measure_dataset(args, rng, rows)
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    print(f"- Date: {info['date']}; machine: {info['cpu']}, {info['memory']}; Python {info['python']}")
    print(f"- Packages: {info['packages']}; load average at start {info['load']}, at the end {load_average()}")
    print(
        f"- Bodies: GET /feedback/ab {len(ab) / 2**20:.1f} MiB ({len(ab) / args.entries:.0f} B per vote), "
        f"GET /feedback {len(fb) / 2**20:.1f} MiB ({len(fb) / args.entries:.0f} B per entry); "
        f"input_text {args.input_chars} chars, answers {args.answer_chars} chars"
    )
    print(f"- With the operator's default body limit (32 MiB) the A/B poll {limit_result}")
    print("")
    print(f"| step | time s (median of {args.repeat}) | peak traced memory MiB |")
    print("|---|---|---|")
    for what, seconds, mib in rows:
        print(f"| {what} | {seconds:.3f} | {mib:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
