"""`canopy-operator`: run the operator, preview its values edits, generate its CRD and manifests, run evaluations."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from canopy_operator.service.settings import Settings


def _run(args: argparse.Namespace) -> int:
    from canopy_operator.handlers.main import run
    from canopy_operator.service.memory import limit_malloc_arenas

    limit_malloc_arenas()  # before any worker thread (bench/RESULTS.md, issue #20)

    settings = replace(
        args.settings,
        liveness=args.liveness,
        metrics_port=args.metrics_port,
        metrics_addr=args.metrics_addr,
        log_level=args.log_level,
    )
    run(settings, args.namespace or [], log_prompts=args.log_prompts)
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


def build_parser(settings: Settings | None = None) -> argparse.ArgumentParser:
    """The command line; defaults come from the environment (``service.settings``)."""
    settings = settings or Settings.from_env()
    parser = argparse.ArgumentParser(prog="canopy-operator", description=__doc__)
    parser.set_defaults(settings=settings)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the operator against the current cluster")
    run.add_argument("--namespace", "-n", action="append", help="watch only this namespace (repeatable)")
    run.add_argument("--all-namespaces", "-A", action="store_true", help="watch every namespace (the default)")
    run.add_argument(
        "--liveness",
        default=settings.liveness,
        help="Kopf's liveness endpoint, e.g. http://0.0.0.0:8080/healthz (env CANOPY_LIVENESS; default: none)",
    )
    run.add_argument(
        "--metrics-port",
        type=int,
        default=settings.metrics_port,
        help="serve Prometheus metrics at /metrics on this port; 0 turns them off (env CANOPY_METRICS_PORT)",
    )
    run.add_argument(
        "--metrics-addr",
        default=settings.metrics_addr,
        help="address the metrics endpoint binds (env CANOPY_METRICS_ADDR; default 0.0.0.0)",
    )
    run.add_argument(
        "--log-level",
        default=settings.log_level,
        help="DEBUG, INFO, WARNING or ERROR; logs are JSON lines on stderr (env CANOPY_LOG_LEVEL; default INFO)",
    )
    run.add_argument("--log-prompts", action="store_true", help="log prompt texts instead of their hashes")
    run.set_defaults(fn=_run)

    crds = sub.add_parser("crds", help="generate the CRD from the API models")
    crds.add_argument("--output-dir", default="crds", help="directory the CRD YAML is written to (default: crds)")
    crds.set_defaults(fn=_crds)

    manifests = sub.add_parser("manifests", help="generate the RBAC manifests from the permission table")
    manifests.add_argument("--root", default=".", help="the repository root")
    manifests.set_defaults(fn=_manifests)

    sub.add_parser(
        "preview", help="print the values file the operator would write (a dry run; see preview --help)", add_help=False
    )
    sub.add_parser("eval", help="run an evaluation (see eval --help)", add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "preview":
        from canopy_operator.preview import main as preview

        return preview(argv[1:])
    if argv and argv[0] == "eval":
        from canopy_operator.evals.cli import main as evaluate

        return evaluate(argv[1:])
    args = build_parser().parse_args(argv)
    result: int = args.fn(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
