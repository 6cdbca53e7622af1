"""`canopy-operator`: run the operator, generate its CRD and manifests, simulate a backend, run evaluations."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path


def _run(args: argparse.Namespace) -> int:
    import kopf

    import canopy_operator.handlers  # noqa: F401 - registers the handlers
    from canopy_operator.logs import configure_logging
    from canopy_operator.metrics import start_metrics_server

    configure_logging(args.log_level, log_prompts=args.log_prompts)
    if args.metrics_port:
        start_metrics_server(args.metrics_port, args.metrics_addr)
    namespaces = args.namespace or []
    kopf.run(
        standalone=True,
        clusterwide=not namespaces,
        namespaces=namespaces,
        liveness_endpoint=args.liveness or None,
    )
    return 0


def _crds(args: argparse.Namespace) -> int:
    from canopy_operator.gen.crds import write_crds

    print(write_crds(Path(args.output_dir)))
    return 0


def _manifests(args: argparse.Namespace) -> int:
    from canopy_operator.gen.manifests import write_manifests

    for path in write_manifests(Path(args.root)):
        print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="canopy-operator", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the operator against the current cluster")
    run.add_argument("--namespace", "-n", action="append", help="watch only this namespace (repeatable)")
    run.add_argument("--all-namespaces", "-A", action="store_true", help="watch every namespace (the default)")
    run.add_argument(
        "--liveness", default=os.environ.get("CANOPY_LIVENESS", ""), help="e.g. http://0.0.0.0:8080/healthz"
    )
    run.add_argument("--metrics-port", type=int, default=int(os.environ.get("CANOPY_METRICS_PORT", "0")))
    run.add_argument("--metrics-addr", default=os.environ.get("CANOPY_METRICS_ADDR", "0.0.0.0"))  # noqa: S104
    run.add_argument("--log-level", default=os.environ.get("CANOPY_LOG_LEVEL", "INFO"))
    run.add_argument("--log-prompts", action="store_true", help="log prompt texts instead of their hashes")
    run.set_defaults(fn=_run)

    crds = sub.add_parser("crds", help="generate the CRD from the API models")
    crds.add_argument("--output-dir", default="crds")
    crds.set_defaults(fn=_crds)

    manifests = sub.add_parser("manifests", help="generate the RBAC manifests from the permission table")
    manifests.add_argument("--root", default=".", help="the repository root")
    manifests.set_defaults(fn=_manifests)

    sub.add_parser("simulate", help="run the Canopy backend simulator (see simulate --help)", add_help=False)
    sub.add_parser("eval", help="run an evaluation (see eval --help)", add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "simulate":
        from canopy_operator.canopy.simulator import main as simulate

        code: int = simulate(argv[1:])
        return code
    if argv and argv[0] == "eval":
        from canopy_operator.evals.cli import main as evaluate

        return evaluate(argv[1:])
    args = build_parser().parse_args(argv)
    result: int = args.fn(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
