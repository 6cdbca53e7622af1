"""Run the Generation 2 stand-in: on the event loop, or as a program.

    python -m canopy_devkit.gen2 --config FILE --host 127.0.0.1 --port 8000 [--seed N]

reads, like the backend's pod, ``$MLFLOW_TRACKING_URI`` (required), ``$MLFLOW_EXPERIMENT_NAME`` (default
``canopy-backend``, created if missing) and ``$CANOPY_ALIAS_CACHE_SECONDS`` (default 60, as MLflow clients).
From Python, :class:`RunningGen2` serves on the running event loop with the same interface as
:class:`~canopy_devkit.simulator.RunningSimulator` (``start(config)``, ``stop()``, ``restart(config)``, ``url``),
so :class:`~canopy_devkit.kubelet.FakeKubelet` can run it as the backend's pod: each start reads the config file
once, finds (or creates) its MLflow experiment and begins with an empty alias cache. A config the backend would
crash on raises :class:`~canopy_devkit.simulator.BackendStartupError` and leaves the port closed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import signal
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Self

import httpx
from aiohttp import web

from canopy_devkit.gen2.app import Gen2State, build_app
from canopy_devkit.gen2.config import BackendStartupError, load_config
from canopy_devkit.gen2.mlflow_api import MlflowApi, MlflowError
from canopy_devkit.gen2.prompts import DEFAULT_ALIAS_CACHE_SECONDS, PromptResolver
from canopy_devkit.simulator.runner import DEFAULT_CONFIG_PATH, bound_port, configure_feedback_logger

__all__ = ["DEFAULT_EXPERIMENT", "RunningGen2", "main"]

DEFAULT_EXPERIMENT = "canopy-backend"
TRACKING_ENV = "MLFLOW_TRACKING_URI"
EXPERIMENT_ENV = "MLFLOW_EXPERIMENT_NAME"
ALIAS_CACHE_ENV = "CANOPY_ALIAS_CACHE_SECONDS"
READY_LINE = "canopy gen2 stand-in listening on "


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _env_seconds(name: str, default: float) -> float:
    text = os.environ.get(name, "")
    try:
        return float(text) if text else default
    except ValueError:
        raise BackendStartupError(f"{name}={text!r} is not a number of seconds") from None


class RunningGen2:
    """The Generation 2 stand-in on the running event loop (aiohttp ``AppRunner``), restartable on its port.

    Unset arguments come from the environment, as the pod reads it: ``tracking_uri`` from
    ``$MLFLOW_TRACKING_URI``, ``experiment`` from ``$MLFLOW_EXPERIMENT_NAME``, ``alias_cache_seconds`` from
    ``$CANOPY_ALIAS_CACHE_SECONDS``. ``transport`` replaces the HTTP transport to MLflow (unit tests).
    """

    def __init__(
        self,
        *,
        tracking_uri: str | None = None,
        experiment: str | None = None,
        alias_cache_seconds: float | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int | None = None,
        clock: Callable[[], datetime] = _utc_now,
        monotonic: Callable[[], float] = time.monotonic,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.tracking_uri = tracking_uri or os.environ.get(TRACKING_ENV, "")
        self.experiment = experiment or os.environ.get(EXPERIMENT_ENV) or DEFAULT_EXPERIMENT
        self.alias_cache_seconds = (
            alias_cache_seconds
            if alias_cache_seconds is not None
            else _env_seconds(ALIAS_CACHE_ENV, DEFAULT_ALIAS_CACHE_SECONDS)
        )
        self.host = host
        self.port = port
        self.seed = seed
        self.clock = clock
        self.monotonic = monotonic
        self.transport = transport
        self.starts = 0
        self._runner: web.AppRunner | None = None
        self._state: Gen2State | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def state(self) -> Gen2State:
        """The live process state (config, alias cache, MLflow experiment); for tests that look inside."""
        if self._state is None:
            raise RuntimeError("the stand-in is not running")
        return self._state

    @property
    def experiment_id(self) -> str:
        """The MLflow experiment its traces go to."""
        return self.state.experiment_id

    @property
    def running(self) -> bool:
        return self._runner is not None

    async def start(self, config_path: str | Path) -> None:
        """Start a fresh process reading ``config_path`` once."""
        if self._runner is not None:
            raise RuntimeError("the stand-in is already running; use restart()")
        if not self.tracking_uri:
            raise BackendStartupError(f"no MLflow tracking server: set {TRACKING_ENV}")
        config = load_config(config_path)
        api = MlflowApi(self.tracking_uri, transport=self.transport)
        try:
            experiment_id = await api.experiment_id(self.experiment)
        except MlflowError as exc:
            await api.aclose()
            raise BackendStartupError(f"cannot use MLflow experiment {self.experiment!r}: {exc}") from None
        seed = None if self.seed is None else self.seed + self.starts
        state = Gen2State(
            config=config,
            rng=random.Random(seed),  # noqa: S311 - shuffles the A/B sides, nothing secret
            clock=self.clock,
            mlflow=api,
            prompts=PromptResolver(api, self.alias_cache_seconds, monotonic=self.monotonic),
            experiment_id=experiment_id,
        )
        runner = web.AppRunner(build_app(state), access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            await api.aclose()
            raise
        self.port = bound_port(runner, "the stand-in")
        self._runner, self._state = runner, state
        self.starts += 1

    async def stop(self) -> None:
        """Stop the process: open streams are cut, the port is closed, the alias cache is gone."""
        runner, state = self._runner, self._state
        self._runner = self._state = None
        if runner is not None:
            await runner.cleanup()
        if state is not None:
            await state.mlflow.aclose()

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


async def _serve(args: argparse.Namespace) -> None:
    standin = RunningGen2(host=args.host, port=args.port, seed=args.seed)
    await standin.start(args.config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print(f"{READY_LINE}{standin.url}", flush=True)  # the readiness line, on stdout
    try:
        await stop.wait()
    finally:
        await standin.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m canopy_devkit.gen2``: serve until SIGTERM/SIGINT; 1 when the backend would not start."""
    parser = argparse.ArgumentParser(
        prog="python -m canopy_devkit.gen2", description="Generation 2 Canopy backend stand-in (MLflow)."
    )
    parser.add_argument(
        "--config",
        default=os.environ.get("CANOPY_CONFIG_PATH", DEFAULT_CONFIG_PATH),
        help="config file read once at start (default: $CANOPY_CONFIG_PATH or %(default)s)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the A/B shuffles (default: random)")
    args = parser.parse_args(argv)
    configure_feedback_logger()
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_serve(args))
    except BackendStartupError as exc:
        print(f"backend start-up failed: {exc}", file=sys.stderr, flush=True)
        return 1
    except OSError as exc:
        print(f"cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0
