"""Idle polling with and without daemons waking on a shared tick: the CPU of the event loop alone.

N pollers in one asyncio process, each with its own aiohttp session (at most four connections, as the
operator's Canopy wire), poll a local aiohttp server (a separate process on 127.0.0.1) with two GETs every
interval, +-5 % jitter, as the operator's idle daemons do. The same run is made twice per round: waking when
each poller's pause ends (the floor of this comparison) and with the pause passed through the operator's own
``core.status.aligned_pause``. Each run measures its process's CPU (user + system) over a window after the
pollers have spread out; rounds alternate the order to cancel drift. Nothing of the operator runs but the
one function, so the figure is what aligning wake-ups saves the loop, not a figure of the operator.

    .venv/bin/python bench/wake_tick.py [--pollers 500] [--interval 30] [--window 40] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import random
import resource
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp import web

from canopy_devkit.controlplane.processes import free_ports
from canopy_operator.core.status import aligned_pause


def _serve(port: int) -> None:
    async def answer(_: web.Request) -> web.Response:
        return web.json_response({"feedback": [], "total": 0})

    app = web.Application()
    app.router.add_get("/{path:.*}", answer)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None, handle_signals=True)


async def _poller(url: str, interval: float, align: Callable[[float, float], float], stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    connector = aiohttp.TCPConnector(limit=4)
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as session:
        await asyncio.sleep(random.uniform(0, interval))
        while not stop.is_set():
            started = loop.time()
            for path in ("/feedback", "/feedback/ab"):
                async with session.get(url + path) as response:
                    await response.read()
            pause = max(0.0, interval * random.uniform(0.95, 1.05) - (loop.time() - started))
            pause = align(loop.time(), pause)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), pause)


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _run(url: str, pollers: int, interval: float, window: float, aligned: bool) -> float:
    """CPU of this process over ``window`` seconds, as % of one core."""
    align: Callable[[float, float], float] = aligned_pause if aligned else (lambda now, pause: pause)
    stop = asyncio.Event()
    tasks = [asyncio.create_task(_poller(url, interval, align, stop)) for _ in range(pollers)]
    await asyncio.sleep(interval * 1.5)  # every poller started and polled once
    cpu, began = _cpu(), time.monotonic()
    await asyncio.sleep(window)
    share = 100 * (_cpu() - cpu) / (time.monotonic() - began)
    stop.set()
    await asyncio.gather(*tasks)
    return share


async def _main(args: argparse.Namespace, url: str) -> dict[str, Any]:
    runs: dict[str, list[float]] = {"each alone (floor)": [], "on the shared tick": []}
    for round_ in range(args.rounds):
        order = [False, True] if round_ % 2 == 0 else [True, False]
        for aligned in order:
            share = await _run(url, args.pollers, args.interval, args.window, aligned)
            runs["on the shared tick" if aligned else "each alone (floor)"].append(share)
    return runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--pollers", type=int, default=500)
    parser.add_argument("--interval", type=float, default=30.0)
    parser.add_argument("--window", type=float, default=40.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    (port,) = free_ports(1)
    server = multiprocessing.get_context("spawn").Process(target=_serve, args=(port,), daemon=True)
    server.start()
    try:
        for _ in range(100):  # the server is up when it accepts
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        runs = asyncio.run(_main(args, f"http://127.0.0.1:{port}"))
    finally:
        server.terminate()
        server.join(10)
    floor = sum(runs["each alone (floor)"]) / len(runs["each alone (floor)"])
    tick = sum(runs["on the shared tick"]) / len(runs["on the shared tick"])
    print(f"{args.pollers} pollers, two GETs every {args.interval:g}s, {args.window:g}s windows, {args.rounds} rounds")
    print("| wake-ups | CPU % of one core, each run | mean |")
    print("|---|---|---|")
    for name, shares in runs.items():
        mean = sum(shares) / len(shares)
        print(f"| {name} | {', '.join(f'{s:.2f}' for s in shares)} | {mean:.2f} |")
    print(f"\non the shared tick / each alone: {tick / floor:.2f}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump({"args": vars(args), "runs": runs, "ratio": tick / floor}, out, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
