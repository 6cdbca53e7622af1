"""``python -m canopy_operator.devenv up``: a local API server for the demo and for poking at the CRD.

Starts etcd + kube-apiserver with the CRDs installed, prints the kubeconfig paths and the ``export``
line, and runs until Ctrl-C or SIGTERM, then stops everything and removes its files.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from canopy_operator.devenv.assets import AssetsMissing
from canopy_operator.devenv.controlplane import ControlPlane, ControlPlaneError
from canopy_operator.devenv.crds import default_crd_dir


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m canopy_operator.devenv", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the control plane and wait until Ctrl-C")
    up.add_argument(
        "--crds",
        type=Path,
        action="append",
        default=None,
        help=f"CRD file or folder to install (repeatable; default {default_crd_dir()})",
    )
    up.add_argument(
        "--kubeconfig-out",
        type=Path,
        default=None,
        help="also copy the admin kubeconfig here (removed again on exit)",
    )
    return parser


def _wait_for_stop() -> None:
    stopped = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopped.set()

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    while not stopped.wait(1.0):
        pass


def up(crds: Sequence[Path] | None, kubeconfig_out: Path | None) -> int:
    plane = ControlPlane(crd_paths=crds)
    try:
        plane.start()
    except (AssetsMissing, ControlPlaneError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    try:
        admin = plane.admin_kubeconfig()
        if kubeconfig_out is not None:
            kubeconfig_out = kubeconfig_out.resolve()
            kubeconfig_out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(admin, kubeconfig_out)
            kubeconfig_out.chmod(0o600)
            admin = kubeconfig_out
        print(f"control plane ready at {plane.server_url} in {plane.startup_seconds or 0:.1f}s")
        print(f"admin kubeconfig:    {admin}")
        print(f"operator kubeconfig: {plane.operator_kubeconfig()} (bind RBAC to canopy-system/canopy-operator)")
        print(f"export KUBECONFIG={admin}")
        print("press Ctrl-C to stop", flush=True)
        _wait_for_stop()
    finally:
        if kubeconfig_out is not None:
            kubeconfig_out.unlink(missing_ok=True)
        plane.stop()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "up":
        return up(args.crds, args.kubeconfig_out)
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
