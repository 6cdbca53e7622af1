"""``canopy-node up|down|status``: a real single-node cluster for people (``make node-up`` / ``make node-down``).

``up`` starts the node in a background process of its own (``serve``) and returns once it is Ready, printing
the kubeconfig; ``down`` stops it, which puts the machine back as it was found; ``status`` says whether one
runs. The node keeps everything in ``--dir`` (default ``/tmp/canopy-node-make``); its log is ``<dir>.log``.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from canopy_devkit.node.assets import NodeAssetsMissing, cache_root, images_tarball
from canopy_devkit.node.cluster import Node, NodeError, sweep_stale_nodes

DEFAULT_DIR = Path("/tmp/canopy-node-make")  # noqa: S108 - root-only, fixed so node-down finds node-up's node
READY_FILE = "ready"
SERVE_PID_FILE = "serve.pid"
UP_TIMEOUT = 300.0
DOWN_TIMEOUT = 180.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="canopy-node", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help=f"the node's directory (default {DEFAULT_DIR})")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start a node in the background; returns when it is Ready")
    up.add_argument(
        "--images", type=Path, default=None, help="docker-archive tarball to import (default: make image's)"
    )
    sub.add_parser("down", help="stop the node and put the machine back as it was")
    sub.add_parser("status", help="say whether a node runs")
    serve = sub.add_parser("serve", help="(internal) run a node in the foreground until SIGTERM")
    serve.add_argument("--images", type=Path, default=None)
    return parser


def _log_path(directory: Path) -> Path:
    return directory.with_name(directory.name + ".log")


def _serve_pid(directory: Path) -> int | None:
    try:
        pid = int((directory / SERVE_PID_FILE).read_text(encoding="ascii"))
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def serve(directory: Path, images: Path | None) -> int:
    """Run the node until SIGTERM/SIGINT/SIGHUP, then stop it."""
    stopped = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopped.set()

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    node = Node(dir=directory)
    try:
        node.start()
        (directory / SERVE_PID_FILE).write_text(str(os.getpid()), encoding="ascii")
        tarball = images or images_tarball()
        if tarball.is_file():
            node.load_images(tarball)
            print(f"imported {tarball}", flush=True)
        (directory / READY_FILE).write_text(str(node.admin_kubeconfig()), encoding="utf-8")
        print(f"node ready in {node.startup_seconds:.1f}s at {node.server_url}", flush=True)
        while not stopped.wait(1.0):
            pass
    except (NodeAssetsMissing, NodeError) as e:
        print(f"error: {e}", flush=True)
        return 1
    finally:
        node.stop()
        print(f"node stopped; left on the machine: {node.stop_problems or 'nothing'}", flush=True)
    return 0


def up(directory: Path, images: Path | None) -> int:
    if _serve_pid(directory) is not None:
        print(f"a node already runs: export KUBECONFIG={(directory / READY_FILE).read_text().strip()}")
        return 0
    log = _log_path(directory)
    args = [sys.executable, "-m", "canopy_devkit.node", "--dir", str(directory), "serve"]
    if images is not None:
        args += ["--images", str(images)]
    with log.open("w") as out:
        proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + UP_TIMEOUT
    while not (directory / READY_FILE).is_file():
        if proc.poll() is not None or time.monotonic() > deadline:
            print(f"error: the node did not start; {log}:\n{log.read_text()[-4000:]}", file=sys.stderr)
            if proc.poll() is None:
                proc.terminate()
            return 1
        time.sleep(0.5)
    kubeconfig = (directory / READY_FILE).read_text().strip()
    print(log.read_text().strip())
    print(f"export KUBECONFIG={kubeconfig}")
    print("stop it with `make node-down` (canopy-node down)")
    return 0


def down(directory: Path) -> int:
    pid = _serve_pid(directory)
    if pid is None:
        swept: list[Path] = []
        cache_root().mkdir(parents=True, exist_ok=True)
        # Another node running holds the lock: never touch the machine under it.
        with (cache_root() / ".node-run.lock").open("a") as lock, contextlib.suppress(BlockingIOError):
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            swept = sweep_stale_nodes(directory.parent)
        print(f"no node runs{'; cleaned up after ' + ', '.join(map(str, swept)) if swept else ''}")
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + DOWN_TIMEOUT
    while _serve_pid(directory) == pid and directory.exists():
        if time.monotonic() > deadline:
            print(f"error: the node (pid {pid}) did not stop within {DOWN_TIMEOUT:.0f}s", file=sys.stderr)
            return 1
        time.sleep(0.5)
    while True:  # the serving process exits right after the node's directory is gone
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    log = _log_path(directory)
    if log.is_file():
        print(log.read_text().strip().splitlines()[-1])
        log.unlink()
    return 0


def status(directory: Path) -> int:
    pid = _serve_pid(directory)
    if pid is None:
        print("no node runs")
        return 1
    print(f"a node runs (pid {pid}): export KUBECONFIG={(directory / READY_FILE).read_text().strip()}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    directory: Path = args.dir.resolve()
    if args.command == "serve":
        return serve(directory, args.images)
    if args.command == "up":
        return up(directory, args.images)
    if args.command == "down":
        return down(directory)
    return status(directory)
