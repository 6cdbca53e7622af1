"""Shared plumbing of the real MLflow and Phoenix servers: their virtualenvs, one process group each.

The servers run from virtualenvs built by ``hack/servers-assets.sh`` (cached outside the repository), never
from the project's; a server is one process group, started in its own session and stopped as a whole
(SIGTERM to the group, SIGKILL after a bounded wait), so no worker outlives the test or the demo. Every wait
is bounded. The tests reach this module through ``tests/support/server_process.py``; the local demo uses it
directly (``canopy_devkit.servers.mlflow``).

The assets script is found in the repository this kit is installed from (editable, as ``make`` installs it;
``<repo>/devkit/canopy_devkit/servers/process.py``), like the demo finds the CRDs; a kit installed from a
wheel has no repository beside it and needs ``$CANOPY_MLFLOW_PYTHON`` / ``$CANOPY_PHOENIX_PYTHON``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx

REPO_ROOT = Path(__file__).resolve().parents[3]
ASSETS_SCRIPT = REPO_ROOT / "hack" / "servers-assets.sh"
#: A cold build of one env takes 1-6 minutes (pip's cache warm or not); generous, still bounded.
ASSETS_TIMEOUT = 1200.0
TERM_TIMEOUT = 15.0
KILL_TIMEOUT = 5.0
LOOPBACK = "127.0.0.1"
#: Variables of the caller that must not leak into a server or a seeder (another tracking server, another
#: Python's packages, a proxy for loopback).
_DROPPED_PREFIXES = ("MLFLOW_", "PHOENIX_", "OTEL_")
_DROPPED = {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"}


class ServerUnavailable(Exception):
    """The server's environment could not be built, or the server did not start in time."""


class ProcessesSurvived(AssertionError):
    """Members of a server's process group outlived SIGKILL (an AssertionError, so a test fails on it)."""


class ScriptFailed(AssertionError):
    """A script run in a server's env (a seeder) failed or timed out; an AssertionError, so a test fails on it."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (a later bind may still race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        port: int = s.getsockname()[1]
        return port


def child_env(extra: Mapping[str, str]) -> dict[str, str]:
    """The caller's environment without MLflow/Phoenix/OTel/Python-path settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_DROPPED_PREFIXES) and k not in _DROPPED}
    no_proxy = ",".join(filter(None, [env.get("NO_PROXY", ""), "127.0.0.1,localhost"]))
    env.update({"NO_PROXY": no_proxy, "no_proxy": no_proxy, "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env


def server_python(kind: str, env_var: str) -> Path:
    """The Python of the ``kind`` ("mlflow" or "phoenix") server env: ``$env_var``, else the assets script.

    Runs ``hack/servers-assets.sh <kind>`` (a no-op when the cache is warm; a cold build takes minutes and
    says so on stderr) and reads its last ``<KIND>_PYTHON=<path>`` line.
    """
    if value := os.environ.get(env_var):
        path = Path(value)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise ServerUnavailable(f"{env_var}={value} is not an executable file")
        return path
    if not ASSETS_SCRIPT.is_file():
        raise ServerUnavailable(
            f"set {env_var}: there is no {ASSETS_SCRIPT} (the kit is not installed from its repository)"
        )
    try:
        result = subprocess.run(
            ["bash", str(ASSETS_SCRIPT), kind],
            stdout=subprocess.PIPE,
            text=True,
            timeout=ASSETS_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        raise ServerUnavailable(f"{ASSETS_SCRIPT.name} {kind} did not finish within {ASSETS_TIMEOUT:.0f}s") from e
    key = f"{kind.upper()}_PYTHON="
    lines = [line for line in result.stdout.splitlines() if line.startswith(key)]
    if result.returncode != 0 or not lines:
        raise ServerUnavailable(f"{ASSETS_SCRIPT.name} {kind} exited {result.returncode} without printing {key}")
    return Path(lines[-1].removeprefix(key))


def run_script(python: Path, script: Path, payload: Any, *, cwd: Path, env: Mapping[str, str], timeout: float) -> Any:
    """Run ``script`` with ``python -I`` (so the script's folder does not shadow any module), JSON in and out."""
    try:
        result = subprocess.run(
            [str(python), "-I", str(script)],
            input=json.dumps(payload),
            capture_output=True,
            text=True,
            cwd=cwd,
            env=dict(env),
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        raise ScriptFailed(f"{script.name} did not finish within {timeout:.0f}s") from e
    if result.returncode != 0:
        raise ScriptFailed(f"{script.name} exited {result.returncode}:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _death_signal_prefix() -> list[str]:
    """Have the kernel kill the server's first process if the test process dies (only from the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return []
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--"] if setpriv else []


def group_pids(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid``, from /proc."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after the command name (which may hold spaces and parentheses): state ppid pgrp ...
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(entry.name))
    return pids


def _socket_inodes(pids: Sequence[int]) -> set[str]:
    inodes = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("socket:["):
                        inodes.add(target[8:-1])
    return inodes


def _decode_address(hex_address: str) -> tuple[str, int]:
    """An address of /proc/net/tcp{,6}: the IP in 32-bit words of host (little-endian) order, then the port."""
    ip_hex, port_hex = hex_address.split(":")
    raw = b"".join(bytes.fromhex(ip_hex[i : i + 8])[::-1] for i in range(0, len(ip_hex), 8))
    ip = ipaddress.ip_address(raw)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return f"::ffff:{ip.ipv4_mapped}", int(port_hex, 16)  # as ss shows it, not ::ffff:7f00:1
    return str(ip), int(port_hex, 16)


def listening_addresses(pids: Sequence[int]) -> list[tuple[str, int]]:
    """(address, port) of every TCP socket in LISTEN state owned by ``pids``, IPv4 and IPv6."""
    inodes = _socket_inodes(pids)
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError), open(table, encoding="ascii") as f:
            next(f)
            for line in f:
                cols = line.split()
                if cols[3] == "0A" and cols[9] in inodes:  # 0A = LISTEN
                    found.append(_decode_address(cols[1]))
    return sorted(found)


def is_loopback(address: str) -> bool:
    """127.0.0.0/8, ::1, or an IPv4-mapped loopback address (::ffff:127.0.0.1)."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def rss_bytes(pids: Sequence[int]) -> int:
    """Sum of the resident set sizes of ``pids`` (VmRSS)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
    return total


class ServerProcess:
    """One server: a process group of its own, logs to ``log_path``; ``stop()`` leaves no process behind."""

    def __init__(self, name: str, args: Sequence[str], *, env: Mapping[str, str], cwd: Path, log_path: Path) -> None:
        self.name = name
        self.args = list(args)
        self.env = dict(env)
        self.cwd = cwd
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pgid(self) -> int:
        assert self._proc is not None, f"{self.name} is not started"
        return self._proc.pid

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [*_death_signal_prefix(), *self.args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.cwd,
                env=self.env,
                start_new_session=True,  # its own process group: stopped as a whole
            )

    def pids(self) -> list[int]:
        return [] if self._proc is None else group_pids(self._proc.pid)

    def wait_ready(self, url: str, timeout: float) -> float:
        """Poll ``url`` until it answers 200; the seconds it took. Raises ServerUnavailable."""
        start = time.monotonic()
        deadline = start + timeout
        with httpx.Client(trust_env=False, timeout=2.0) as client:
            while True:
                assert self._proc is not None
                if (code := self._proc.poll()) is not None:
                    raise ServerUnavailable(f"{self.name} exited {code} before it was ready:\n{self.tail()}")
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(url).status_code == 200:
                        return time.monotonic() - start
                if time.monotonic() > deadline:
                    raise ServerUnavailable(f"{self.name} not ready at {url} after {timeout:.0f}s:\n{self.tail()}")
                time.sleep(0.25)

    def stop(self) -> None:
        """SIGTERM to the group, SIGKILL after TERM_TIMEOUT; waits for every member. Idempotent."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        pgid = proc.pid
        self._signal(pgid, signal.SIGTERM)
        try:
            proc.wait(TERM_TIMEOUT)
        except subprocess.TimeoutExpired:
            self._signal(pgid, signal.SIGKILL)
            proc.wait(KILL_TIMEOUT)
        # Members that outlived the leader (a worker): the group id stays theirs until they exit.
        if not self._wait_group_gone(pgid, TERM_TIMEOUT):
            self._signal(pgid, signal.SIGKILL)
            if not self._wait_group_gone(pgid, KILL_TIMEOUT):
                raise ProcessesSurvived(f"{self.name}: processes {group_pids(pgid)} survived SIGKILL")

    @staticmethod
    def _signal(pgid: int, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)

    @staticmethod
    def _wait_group_gone(pgid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while group_pids(pgid):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    def tail(self, lines: int = 40) -> str:
        try:
            with self.log_path.open(encoding="utf-8", errors="replace") as f:
                return "".join(deque(f, maxlen=lines))
        except FileNotFoundError:
            return ""


READY_TIMEOUT = 90.0
"""Seconds a server gets to answer its health check (a loaded 2-core machine starts MLflow in 6-16 s)."""


class LoopbackServer:
    """What every real server the tests and the demo start has in common: a temporary directory, one process
    group, ``url`` once entered, and a stop that leaves no process and no directory behind. A subclass's
    ``start()`` fills in ``python``, ``tmp_dir``, ``url`` and ``process`` and waits until it answers."""

    def __init__(self, python: Path | None = None, *, ready_timeout: float = READY_TIMEOUT) -> None:
        self.python = python
        self.ready_timeout = ready_timeout
        self.url = ""
        self.startup_seconds = 0.0
        self.tmp_dir: Path | None = None
        self.process: ServerProcess | None = None

    def start(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def pid(self) -> int | None:
        """The server's first process (its process group's id), while it runs."""
        return None if self.process is None else self.process.pgid

    def close(self) -> None:
        """Stop the server (no process left behind) and remove its temporary directory. Idempotent."""
        if self.process is not None:
            self.process.stop()
            self.process = None
        if self.tmp_dir is not None:
            shutil.rmtree(self.tmp_dir, ignore_errors=True)
            self.tmp_dir = None

    def log_tail(self, lines: int = 40) -> str:
        return "" if self.process is None else self.process.tail(lines)

    def rss_bytes(self) -> int:
        """Resident memory of the whole server (every process of its group)."""
        return 0 if self.process is None else rss_bytes(self.process.pids())

    def listening(self) -> list[tuple[str, int]]:
        """(address, port) of every listening TCP socket of the server's processes."""
        return [] if self.process is None else listening_addresses(self.process.pids())
