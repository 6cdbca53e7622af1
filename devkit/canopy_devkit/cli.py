"""``canopy-devkit simulate|up|demo``: the simulated backend, a local API server, or the whole demo.

- ``simulate`` serves the simulated Canopy backend (what the simulator image runs);
- ``up`` starts etcd + kube-apiserver with the CRDs installed, prints the kubeconfig paths and the
  ``export`` line, and runs until Ctrl-C or SIGTERM, then stops everything and removes its files;
- ``demo`` runs the whole loop locally: control plane, simulator, operator, voters, promotion, then
  ``kubectl pexp get`` and ``plot`` of the concluded experiment, saved in ``--output-dir``
  (``--generation 2``: a real MLflow, the Generation 2 stand-in, votes in MLflow, promotion by moving an alias;
  no ``kubectl pexp`` step).
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

from canopy_devkit.controlplane.assets import AssetsMissing
from canopy_devkit.controlplane.crds import default_crd_dir
from canopy_devkit.controlplane.plane import ControlPlane, ControlPlaneError
from canopy_devkit.simulator import runner


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="canopy-devkit", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    simulate = sub.add_parser("simulate", help="serve the simulated Canopy backend", description=runner.DESCRIPTION)
    runner.add_arguments(simulate)
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
    demo = sub.add_parser("demo", help="the whole loop locally: control plane, simulator, operator, voters")
    demo.add_argument("--kubeconfig", type=Path, default=None, help="use this cluster instead of starting one")
    demo.add_argument("--namespace", default="canopy-demo")
    demo.add_argument(
        "--generation",
        type=int,
        choices=(1, 2),
        default=1,
        help="the backend generation: 1 (the simulator) or 2 (a real MLflow and the Generation 2 stand-in)",
    )
    demo.add_argument(
        "--preference",
        type=float,
        default=None,
        help="share of users preferring the challenger (default 0.75; 0.7 with --generation 2)",
    )
    demo.add_argument("--max-votes", type=int, default=1000, help="stop voting after this many votes")
    demo.add_argument("--seed", type=int, default=1)
    demo.add_argument("--timeout", type=float, default=600.0, help="give up after this many seconds")
    demo.add_argument(
        "--output-dir",
        type=Path,
        default=Path("build") / "demo",
        help="where to keep the kubectl pexp transcripts and plot (generation 1; default: build/demo, created)",
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
    """``canopy-devkit up``: start the control plane, print how to reach it, wait for Ctrl-C, stop it."""
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
    """The ``canopy-devkit`` command; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "simulate":
        return runner.serve(args)
    if args.command == "up":
        return up(args.crds, args.kubeconfig_out)
    if args.command == "demo":
        from canopy_devkit.demo import DemoOptions, run_demo  # kubernetes_asyncio and the client: only when asked

        preference = args.preference if args.preference is not None else (0.7 if args.generation == 2 else 0.75)
        options = DemoOptions(
            namespace=args.namespace,
            preference=preference,
            max_votes=args.max_votes,
            seed=args.seed,
            timeout=args.timeout,
            kubeconfig=args.kubeconfig,
            generation=args.generation,
            output_dir=args.output_dir,
        )
        return run_demo(options)
    return 2  # pragma: no cover - argparse rejects unknown commands
