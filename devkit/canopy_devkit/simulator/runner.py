"""Run the simulated Generation 1 Canopy backend: on the event loop, in a child process, or as a program.

Run it standalone::

    canopy-devkit simulate --config FILE --host 127.0.0.1 --port 8000 [--seed N]
    python -m canopy_devkit.simulator --config FILE ...     # the same, what SimulatorProcess spawns

or drive it from Python: :class:`RunningSimulator` serves on the running event loop, :class:`SimulatorProcess`
in a child process. Both read the config file once per start and ``restart(config_path)`` behaves like a
rollout: a new process state on the same port, feedback lost, ids from 1 again. A config the real backend
would crash on makes ``start``/``restart`` raise :class:`BackendStartupError` and leaves the port closed.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Self

from aiohttp import web

from canopy_devkit.simulator.app import BackendState, Faults, build_app, feedback_log
from canopy_devkit.simulator.config import BackendStartupError, load_config

__all__ = [
    "BackendStartupError",
    "Faults",
    "RunningSimulator",
    "SimulatorProcess",
    "add_arguments",
    "free_port",
    "main",
    "serve",
]

DEFAULT_CONFIG_PATH = "/canopy/canopy-config.yaml"
READY_LINE = "canopy simulator listening on "


def _utc_now() -> datetime:
    return datetime.now(UTC)


class RunningSimulator:
    """The simulated backend on the running event loop (aiohttp ``AppRunner``), restartable on its port."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int | None = None,
        clock: Callable[[], datetime] = _utc_now,
        faults: Faults | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.seed = seed
        self.clock = clock
        self.faults = faults if faults is not None else Faults()
        """Test-only misbehaviour, shared by every (re)start; all off by default."""
        self.starts = 0
        self._runner: web.AppRunner | None = None
        self._state: BackendState | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def state(self) -> BackendState:
        """The live process state (stores, config); for tests that need to look inside."""
        if self._state is None:
            raise RuntimeError("the simulator is not running")
        return self._state

    @property
    def running(self) -> bool:
        return self._runner is not None

    async def start(self, config_path: str | Path) -> None:
        """Start a fresh backend process reading ``config_path`` once."""
        if self._runner is not None:
            raise RuntimeError("the simulator is already running; use restart()")
        config = load_config(config_path)
        seed = None if self.seed is None else self.seed + self.starts
        rng = random.Random(seed)  # noqa: S311 - shuffles the A/B sides, nothing secret
        state = BackendState(config=config, rng=rng, clock=self.clock, faults=self.faults)
        runner = web.AppRunner(build_app(state), access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self.port = bound_port(runner)
        self._runner, self._state = runner, state
        self.starts += 1

    async def stop(self) -> None:
        """Stop the process: open streams are cut, the port is closed, all state is gone."""
        runner, self._runner, self._state = self._runner, None, None
        if runner is not None:
            await runner.cleanup()

    async def restart(self, config_path: str | Path) -> None:
        """A rollout: stop, then start with ``config_path`` on the same port."""
        await self.stop()
        await self.start(config_path)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()


def bound_port(runner: web.AppRunner, what: str = "the simulator") -> int:
    """The TCP port an aiohttp runner listens on (after ``site.start()``)."""
    for address in runner.addresses:
        if isinstance(address, tuple):
            return int(address[1])
    raise RuntimeError(f"{what} is not bound to a TCP port")


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (for a child process that needs a fixed one)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


class SimulatorProcess:
    """The simulated backend in a child process (``python -m canopy_devkit.simulator``).

    Its stderr (the JSON ``canopy.feedback`` lines) is collected in :attr:`log_lines`.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        seed: int | None = None,
        python: str = sys.executable,
        ready_timeout: float = 20.0,
    ) -> None:
        self.host = host
        self.port = port if port is not None else free_port(host)
        self.seed = seed
        self.python = python
        self.ready_timeout = ready_timeout
        self.log_lines: list[str] = []
        self._process: asyncio.subprocess.Process | None = None
        self._stderr_task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self, config_path: str | Path) -> None:
        """Spawn the process and wait until it listens (``BackendStartupError`` if it exits instead)."""
        if self._process is not None:
            raise RuntimeError("the simulator process is already running; use restart()")
        args = ["-m", "canopy_devkit.simulator", "--config", str(config_path)]
        args += ["--host", self.host, "--port", str(self.port)]
        if self.seed is not None:
            args += ["--seed", str(self.seed)]
        process = await asyncio.create_subprocess_exec(
            self.python, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        self._process = process
        self._stderr_task = asyncio.create_task(self._collect_stderr(process))
        try:
            await asyncio.wait_for(self._await_ready(process), self.ready_timeout)
        except BaseException:
            await self.stop()
            raise

    async def _await_ready(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        while line := (await process.stdout.readline()).decode("utf-8", "replace"):
            if line.startswith(READY_LINE):
                return
        await process.wait()
        if self._stderr_task is not None:
            await self._stderr_task
        reason = self.log_lines[-1] if self.log_lines else f"exit status {process.returncode}"
        raise BackendStartupError(f"simulator process exited at start-up: {reason}")

    async def _collect_stderr(self, process: asyncio.subprocess.Process) -> None:
        assert process.stderr is not None
        while line := await process.stderr.readline():
            self.log_lines.append(line.decode("utf-8", "replace").rstrip("\n"))

    async def stop(self) -> None:
        """Terminate the process (SIGTERM, then SIGKILL after 5 s)."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 5.0)
            except TimeoutError:
                process.kill()
                await process.wait()
        if self._stderr_task is not None:
            await self._stderr_task
            self._stderr_task = None

    async def restart(self, config_path: str | Path) -> None:
        """A rollout: stop, then start with ``config_path`` on the same port."""
        await self.stop()
        await self.start(config_path)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()


def configure_feedback_logger() -> None:
    """As the backend: bare messages of ``canopy.feedback`` on stderr, not propagated to the root logger."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    feedback_log.setLevel(logging.INFO)
    feedback_log.propagate = False
    feedback_log.addHandler(handler)


async def _serve(args: argparse.Namespace) -> None:
    simulator = RunningSimulator(host=args.host, port=args.port, seed=args.seed)
    await simulator.start(args.config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print(f"{READY_LINE}{simulator.url}", flush=True)  # the readiness line, on stdout
    try:
        await stop.wait()
    finally:
        await simulator.stop()


DESCRIPTION = "Simulated Canopy backend (Generation 1)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``canopy-devkit simulate`` (also ``python -m canopy_devkit.simulator``)."""
    parser.add_argument(
        "--config",
        default=os.environ.get("CANOPY_CONFIG_PATH", DEFAULT_CONFIG_PATH),
        help="config file read once at start (default: $CANOPY_CONFIG_PATH or %(default)s)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the A/B shuffles (default: random)")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m canopy_devkit.simulator``: parse ``argv``, then :func:`serve`."""
    parser = argparse.ArgumentParser(prog="python -m canopy_devkit.simulator", description=DESCRIPTION)
    add_arguments(parser)
    return serve(parser.parse_args(argv))


def serve(args: argparse.Namespace) -> int:
    """Serve until SIGTERM/SIGINT; exit status 1 when the real backend would crash on this config."""
    configure_feedback_logger()
    try:
        asyncio.run(_serve(args))
    except BackendStartupError as exc:
        print(f"backend start-up failed: {exc}", file=sys.stderr, flush=True)
        return 1
    except OSError as exc:
        print(f"cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0
