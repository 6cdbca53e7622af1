"""The sharded negative-feedback ledger: adding 10 000 negatives and building their evaluation dataset.

Run from the repository root (not a test; not run in CI)::

    .venv/bin/python bench/ledger_bench.py [--negatives 10000] [--input-chars 800] [--polls 100] [--repeat 3]

What is timed is the operator's own code on the entries one poll hands it: ``core.ledger.add_entries`` and
``plan_write``, and the service's ``Evaluations.save`` / ``load`` (shards, manifest, base64, hash checks)
against an API server kept in memory (get/create/patch/delete by name, as the operator's RBAC allows), so
the network is left out; then ``core.evaluation.jobs.split_dataset`` and ``render_dataset_secrets``. Each is
set against a floor measured in the same run on the same data: ``json.dumps`` of the same entries for the
ledger, one ``render_export`` of all the prompts (the same PyYAML emitter, in one document) for the dataset.
Times are medians of ``--repeat`` runs without tracing (each floor in turns with the step it is the floor of, so
both see the same load); peak memory is a separate ``tracemalloc`` run.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import random
import statistics
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from canopy_operator.core.collect import FeedbackEntry, feedback_fingerprint
from canopy_operator.core.evaluation.jobs import (
    dataset_digest,
    dataset_part_key,
    dataset_secret_name,
    render_dataset_secrets,
    split_dataset,
)
from canopy_operator.core.evaluation.template import JUDGE_TEMPLATE, JUDGE_TEMPLATE_FILE
from canopy_operator.core.export import render_export
from canopy_operator.core.ledger import Layout, Ledger, add_entries, plan_write
from canopy_operator.evals.suites import load_suites
from canopy_operator.k8s.errors import Conflict, NotFound
from canopy_operator.k8s.gateway import Gateway, SecretView
from canopy_operator.service.evaluations import Evaluations
from canopy_operator.service.settings import Settings
from common import load_average, machine

WORDS = ["the", "model", "summary", "text", "article", "data", "result", "users", "policy", "change", "risk"]
NOW = datetime(2026, 11, 22, tzinfo=UTC)
OLD_CAP = 512 * 1024  # the single Secret's cap before the ledger was sharded


def _text(rng: random.Random, chars: int, prefix: str) -> str:
    words = [prefix]
    length = len(prefix)
    while length < chars:
        word = WORDS[rng.randrange(len(WORDS))]
        words.append(word)
        length += len(word) + 1
    return " ".join(words)[:chars]


def negatives(n: int, chars: int, rng: random.Random) -> list[FeedbackEntry]:
    """Thumbs-down entries as ``GET /feedback`` gives them (a comment on one in ten)."""
    return [
        FeedbackEntry(
            id=i + 1,
            timestamp=(NOW + timedelta(microseconds=1 + 37 * i)).isoformat(),
            feature="summarize",
            rating="thumbs_down",
            input_text=_text(rng, chars, f"negative {i}:"),
            response_text=f"an old summary {i}",
            comment="too long" if i % 10 == 0 else None,
        )
        for i in range(n)
    ]


class MemoryApi:
    """Secrets in memory, by name; create/patch/read/delete as the API server answers them (no list)."""

    def __init__(self) -> None:
        self.secrets: dict[str, dict[str, Any]] = {}
        self.version = 0
        self.calls = 0

    async def read_secret(self, namespace: str, name: str) -> SecretView:
        self.calls += 1
        if name not in self.secrets:
            raise NotFound(name)
        obj = self.secrets[name]
        data = {k: base64.b64decode(v).decode("utf-8", errors="replace") for k, v in obj["data"].items()}
        meta = obj["metadata"]
        return SecretView(name, namespace, data, meta["resourceVersion"], meta.get("labels", {}))

    async def create_secret(self, body: dict[str, Any]) -> None:
        self.calls += 1
        name = body["metadata"]["name"]
        if name in self.secrets:
            raise Conflict(name)
        self.version += 1
        self.secrets[name] = {**body, "metadata": {**body["metadata"], "resourceVersion": str(self.version)}}

    async def patch_secret(self, body: dict[str, Any]) -> str:
        self.calls += 1
        current = self.secrets[body["metadata"]["name"]]
        if body["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
            raise Conflict(body["metadata"]["name"])
        self.version += 1
        current["data"] = dict(body["data"])
        current["metadata"]["resourceVersion"] = str(self.version)
        return str(self.version)

    async def delete_secret(self, namespace: str, name: str) -> None:
        self.calls += 1
        self.secrets.pop(name)

    def sizes(self) -> dict[str, int]:
        return {name: sum(len(base64.b64decode(v)) for v in obj["data"].values()) for name, obj in self.secrets.items()}


def view(api: MemoryApi) -> Evaluations:
    """One reconcile pass's ledger (a fresh one per pass: it reads the manifest and every shard)."""
    return Evaluations(cast(Gateway, api), "bench", "exp", "uid-1", Settings())


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """Median seconds of ``repeat`` runs and the last result."""
    durations, result = [], None
    for _ in range(repeat):
        began = time.perf_counter()
        result = fn()
        durations.append(time.perf_counter() - began)
    return statistics.median(durations), result


def interleaved(first: Callable[[], Any], second: Callable[[], Any], repeat: int) -> tuple[float, float, Any]:
    """Median seconds of ``first`` and of ``second`` run in turns (a step and its floor see the same load),
    and the last result of ``second``."""
    times: tuple[list[float], list[float]] = ([], [])
    result = None
    for _ in range(repeat):
        for index, fn in enumerate((first, second)):
            began = time.perf_counter()
            value = fn()
            times[index].append(time.perf_counter() - began)
            result = value if index else result
    return statistics.median(times[0]), statistics.median(times[1]), result


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


def save_all(entries: list[FeedbackEntry], fingerprints: list[str]) -> MemoryApi:
    """One poll bringing every entry: a pass reads the (empty) ledger, adds, writes shards and manifest."""
    api = MemoryApi()

    async def go() -> None:
        ledger = view(api)
        await ledger.save(add_entries(await ledger.load(), entries, fingerprints))

    asyncio.run(go())
    return api


def polls(entries: list[FeedbackEntry], fingerprints: list[str], count: int) -> tuple[MemoryApi, list[float]]:
    """The same entries over ``count`` polls, each a new pass (load everything, add, save); seconds per poll."""
    api, step, seconds = MemoryApi(), max(1, len(entries) // count), []

    async def go() -> None:
        for start in range(0, len(entries), step):
            began = time.perf_counter()
            ledger = view(api)
            await ledger.save(
                add_entries(await ledger.load(), entries[start : start + step], fingerprints[start : start + step])
            )
            seconds.append(time.perf_counter() - began)

    asyncio.run(go())
    return api, seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--negatives", type=int, default=10_000)
    parser.add_argument("--input-chars", type=int, default=800, help="input_text length (the contract's example)")
    parser.add_argument("--polls", type=int, default=100, help="polls the negatives arrive over, for the per-poll cost")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=20261130)
    args = parser.parse_args()
    info = machine()
    wall = time.perf_counter()
    entries = negatives(args.negatives, args.input_chars, random.Random(args.seed))
    fingerprints = [feedback_fingerprint(e) for e in entries]
    rows: list[tuple[str, float, float | None]] = []

    # -- the ledger ---------------------------------------------------------------------------------------
    pairs = zip(entries, fingerprints, strict=True)
    plain = [{"fingerprint": f, "timestamp": e.timestamp, "input": e.input_text} for e, f in pairs]
    t_floor, t_add, ledger = interleaved(
        lambda: json.dumps(plain, ensure_ascii=False, separators=(",", ":")),
        lambda: add_entries(Ledger(), entries, fingerprints),
        args.repeat,
    )
    t_plan, plan = timed(lambda: plan_write(Layout(), Ledger(), ledger), args.repeat)
    t_save, api = timed(lambda: save_all(entries, fingerprints), args.repeat)
    t_load, loaded = timed(lambda: asyncio.run(view(api).load()), args.repeat)
    assert loaded == ledger
    assert (len(loaded.entries), loaded.trimmed) == (args.negatives, 0)
    _, per_poll = polls(entries, fingerprints, args.polls)
    t_digest, digest = timed(lambda: dataset_digest(ledger.prompts()), args.repeat)
    old = add_entries(Ledger(), entries, fingerprints, max_bytes=OLD_CAP)
    rows += [
        ("floor: `json.dumps` of the same entries (one document)", t_floor, peak_mib(lambda: json.dumps(plain))),
        (f"`add_entries`: {args.negatives} new negatives in one poll", t_add, None),
        (f"`plan_write`: seal {len(plan.create)} shards + the manifest", t_plan, None),
        (
            "`Evaluations.save` (read, add, shards, manifest), one poll, in-memory API",
            t_save,
            peak_mib(lambda: save_all(entries, fingerprints)),
        ),
        ("`Evaluations.load` (manifest + every shard, hashes checked)", t_load, None),
        (
            f"the last of {len(per_poll)} polls of {args.negatives // args.polls} new (a new pass: load, add, save)",
            per_poll[-1],
            None,
        ),
        ("`dataset_digest` (the dataset name each poll writes to status)", t_digest, None),
    ]
    sizes = api.sizes()
    shards = {k: v for k, v in sizes.items() if k != "exp-negatives"}

    # -- the dataset --------------------------------------------------------------------------------------
    prompts = ledger.prompts()
    whole = render_export(prompts)
    t_whole, t_split, parts = interleaved(lambda: render_export(prompts), lambda: split_dataset(prompts), args.repeat)
    name = dataset_secret_name("exp", digest)
    t_secrets, secrets = timed(lambda: render_dataset_secrets("bench", "exp", "uid-1", name, parts), args.repeat)
    part_sizes = [sum(len(base64.b64decode(v)) for v in s["data"].values()) for s in secrets]
    with tempfile.TemporaryDirectory(prefix="canopy-ledger-") as tmp:
        folder = Path(tmp)
        for index, part in enumerate(parts):
            (folder / dataset_part_key(index)).write_text(part, encoding="utf-8")
        (folder / JUDGE_TEMPLATE_FILE).write_text(JUDGE_TEMPLATE, encoding="utf-8")
        t_suites, suites = timed(lambda: load_suites(folder), args.repeat)
        suites_mib = peak_mib(lambda: load_suites(folder))
    assert [case.prompt for suite in suites for case in suite.tests] == prompts
    rows += [
        (
            f"floor: `render_export` of all {len(prompts)} prompts (one document, {len(whole) / 2**20:.1f} MiB)",
            t_whole,
            peak_mib(lambda: render_export(prompts)),
        ),
        (f"`split_dataset`: {len(parts)} parts", t_split, peak_mib(lambda: split_dataset(prompts))),
        ("`render_dataset_secrets` (base64, labels)", t_secrets, None),
        ("the runner's `load_suites` of the mounted folder (libyaml)", t_suites, suites_mib),
    ]

    print(f"- Date: {info['date']}; machine: {info['cpu']}, {info['memory']}, {info['os']}; Python {info['python']}")
    print(f"- Packages: {info['packages']}; load average at start {info['load']}, at the end {load_average()}")
    print(f"- Wall time {time.perf_counter() - wall:.0f} s; {args.negatives} negatives of {args.input_chars} chars")
    print(
        f"- Ledger: {len(ledger.entries)} of {args.negatives} kept, {ledger.trimmed} trimmed "
        f"(the single 512 KiB Secret kept {len(old.entries)}); {len(shards)} shards of at most "
        f"{max(shards.values(), default=0) / 1024:.0f} KiB, manifest {sizes['exp-negatives'] / 1024:.0f} KiB, "
        f"{sum(sizes.values()) / 2**20:.1f} MiB in all; {api.calls} API calls for one save + {args.repeat} loads"
    )
    print(
        f"- Dataset: {len(parts)} Secrets of at most {max(part_sizes) / 1024:.0f} KiB "
        f"(YAML and judge template), {sum(part_sizes) / 2**20:.1f} MiB in all; one document would be "
        f"{len(whole.encode()) / 2**20:.1f} MiB; union of the parts == all prompts: checked"
    )
    print(
        f"- Per poll over {len(per_poll)} polls: median {statistics.median(per_poll) * 1000:.0f} ms, "
        f"first {per_poll[0] * 1000:.0f} ms, last {per_poll[-1] * 1000:.0f} ms"
    )
    print("")
    print(f"| step | time s (median of {args.repeat}) | ratio to its floor | peak traced memory MiB |")
    print("|---|---|---|---|")
    ledger_floor, dataset_floor = rows[0][1], rows[7][1]
    for index, (what, seconds, mib) in enumerate(rows):
        floor = ledger_floor if index < 7 else dataset_floor
        ratio = f"{seconds / floor:.2f}" if floor > 0 else "n/a"
        print(f"| {what} | {seconds:.3f} | {ratio} | {'' if mib is None else f'{mib:.0f}'} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
