"""``kubectl pexp``: look at, steer and plot a PromptExperiment (installed as the ``kubectl-pexp`` command).

    kubectl pexp get NAME                 the experiment and what it drives, as a tree
    kubectl pexp watch NAME [--timeout S] one line per change until Concluded or Aborted
    kubectl pexp approve NAME             approve the promotion the current test awaits
    kubectl pexp suspend|resume NAME      set spec.suspend
    kubectl pexp abort NAME               set spec.abort (the test ends, the champion stays)
    kubectl pexp results NAME [--run JOB] [-o table|json]   an evaluation's per-case results
    kubectl pexp plot NAME [-o FILE.png] [--terminal]       the confidence sequence over time
    kubectl pexp preview ...              canopy-operator preview (the values file the operator would write)

Every verb takes ``-n/--namespace``, ``--kubeconfig`` and ``--context``. Exit status: 0 done, 1 refused or
failed (the message says why), 2 a bad command line. This module does the I/O; the rest of the package is pure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import io
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from canopy_operator.k8s.errors import Conflict, Forbidden, KubeError, NotFound
from canopy_operator.k8s.experiments import ExperimentsApi, WatchExpired, default_namespace
from canopy_operator.pexp import actions, lines, raster, results, termplot, trajectory
from canopy_operator.pexp.fields import clean, dig, mapping
from canopy_operator.pexp.tree import NOT_FOUND, Lookup, Related, job_items, render, targets

PROG = "kubectl pexp"
ATTEMPTS = 3
"""Tries of a patch that conflicts with another write (the experiment is read again each time)."""


class Failed(Exception):
    """The verb failed or was refused: print the message, exit 1."""


@dataclasses.dataclass(frozen=True)
class Io:
    out: TextIO
    err: TextIO

    def print(self, text: str = "") -> None:
        self.out.write(text if text.endswith("\n") else text + "\n")
        self.out.flush()

    def note(self, text: str) -> None:
        self.err.write(f"{PROG}: {text}\n")
        self.err.flush()


Verb = Callable[[Any, Io], Awaitable[int]]


# Connection ------------------------------------------------------------------------------------------


def _namespace(args: Any) -> str:
    if args.namespace:
        return str(args.namespace)
    return default_namespace(args.kubeconfig, args.context)


async def _connect(args: Any) -> ExperimentsApi:
    return await ExperimentsApi.connect(args.kubeconfig, context=args.context)


async def _get(api: ExperimentsApi, namespace: str, name: str) -> dict[str, Any]:
    try:
        return await api.get(namespace, name)
    except NotFound:
        raise Failed(f'promptexperiment "{clean(name, 253)}" not found in namespace {clean(namespace, 63)}') from None


async def _lookup(call: Awaitable[Any]) -> Lookup:
    try:
        return Lookup(obj=await call)
    except NotFound:
        return Lookup(error=NOT_FOUND)
    except Forbidden:
        return Lookup(error="forbidden (your RBAC does not allow reading it)")
    except KubeError as exc:
        return Lookup(error=str(exc))


# Verbs -----------------------------------------------------------------------------------------------


async def cmd_get(args: Any, io_: Io) -> int:
    namespace = _namespace(args)
    async with await _connect(args) as api:
        obj = await _get(api, namespace, args.name)
        want = targets(obj)

        async def jobs() -> dict[str, Any]:
            return dict(job_items(await api.list_jobs(namespace, want.job_selector)))

        configmap, deployment, listed = await asyncio.gather(
            _lookup(api.get_configmap_metadata(namespace, want.configmap)) if want.configmap else _none(),
            _lookup(api.get_deployment(namespace, want.deployment)) if want.deployment else _none(),
            _lookup(jobs()),
        )
    related = Related(configmap=configmap, deployment=deployment, jobs=listed)
    io_.print(render(obj, related, namespace, datetime.now(UTC)).rstrip("\n"))
    return 0


async def _none() -> None:
    return None


async def cmd_watch(args: Any, io_: Io) -> int:
    namespace = _namespace(args)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + args.timeout if args.timeout and args.timeout > 0 else None
    last: tuple[str, ...] | None = None

    def show(obj: dict[str, Any]) -> bool:
        nonlocal last
        key = lines.line_key(obj)
        if key != last:
            io_.print(lines.watch_line(obj, datetime.now(UTC)))
            last = key
        return lines.is_terminal(obj)

    async with await _connect(args) as api:
        obj = await _get(api, namespace, args.name)
        if not args.no_headers:
            io_.print(lines.header())
        if show(obj):
            return 0
        version = _version(obj)
        while True:
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                break
            opened = loop.time()
            try:
                async with asyncio.timeout(remaining):
                    window = remaining if remaining is not None else 3600.0
                    async with contextlib.aclosing(api.watch(namespace, args.name, version, window)) as events:
                        async for kind, new in events:
                            version = _version(new) or version
                            if kind == "DELETED":
                                raise Failed(f"promptexperiment {clean(args.name, 253)} was deleted")
                            if kind in ("ADDED", "MODIFIED") and show(new):
                                return 0
            except TimeoutError:
                break
            except WatchExpired:
                obj = await _get(api, namespace, args.name)
                version = _version(obj)
                if show(obj):
                    return 0
            except KubeError as exc:
                if not exc.transient:
                    raise
                io_.note(f"the watch broke off ({clean(str(exc), 200)}); watching again")
            if loop.time() - opened < 1.0:  # a watch the server ended at once: do not spin
                await asyncio.sleep(1.0)
    phase = last[0] if last else "-"
    raise Failed(f"timed out after {args.timeout:g}s waiting for Concluded or Aborted (phase {phase})")


def _version(obj: dict[str, Any]) -> str | None:
    value = dig(obj, "metadata", "resourceVersion")
    return value if isinstance(value, str) and value else None


async def _patch(args: Any, io_: Io, decide: Callable[[dict[str, Any], str], actions.Action], guard: bool) -> int:
    """Read, decide, merge-patch the spec (with the read resourceVersion when ``guard``), print the line."""
    namespace = _namespace(args)
    async with await _connect(args) as api:
        for _ in range(ATTEMPTS):
            obj = await _get(api, namespace, args.name)
            try:
                action = decide(obj, namespace)
            except actions.Refused as exc:
                raise Failed(str(exc)) from None
            if action.patch is not None:
                try:
                    await api.patch_spec(namespace, args.name, action.patch, _version(obj) if guard else None)
                except Conflict:
                    continue
            io_.print(action.message)
            return 0
    raise Failed(f"promptexperiment {clean(args.name, 253)} kept changing while it was patched; nothing was changed")


async def cmd_approve(args: Any, io_: Io) -> int:
    return await _patch(args, io_, lambda obj, ns: actions.approve(obj, ns, args.name), guard=True)


async def cmd_suspend(args: Any, io_: Io) -> int:
    return await _patch(args, io_, lambda obj, ns: actions.suspend(obj, ns, args.name, True), guard=False)


async def cmd_resume(args: Any, io_: Io) -> int:
    return await _patch(args, io_, lambda obj, ns: actions.suspend(obj, ns, args.name, False), guard=False)


async def cmd_abort(args: Any, io_: Io) -> int:
    return await _patch(args, io_, lambda obj, ns: actions.abort(obj, ns, args.name), guard=False)


async def cmd_results(args: Any, io_: Io) -> int:
    namespace = _namespace(args)
    async with await _connect(args) as api:
        obj = await _get(api, namespace, args.name)
        try:
            run = results.select_run(mapping(obj.get("status")), args.run)
        except results.NoRun as exc:
            raise Failed(str(exc)) from None
        parsed = results.Parsed()
        texts: list[tuple[str, bytes]] = []
        if run.recorded and not run.secrets:
            why = run.unavailable or "the run records no result Secrets"
            raise Failed(f"run {run.name} has no per-case results: {why}")
        if run.recorded:
            for secret in run.secrets:
                data = await _read_results(api, namespace, secret, parsed, missing_ok=False)
                if data is not None:
                    texts.append((secret, data))
            if not texts:
                raise Failed(f"none of the result Secrets of run {run.name} could be read: {'; '.join(parsed.notes)}")
        else:
            found: list[str] = []
            for index in range(results.MAX_SECRETS):
                secret = results.secret_name_for(run.name, index)
                data = await _read_results(api, namespace, secret, parsed, missing_ok=True)
                if data is None:
                    break
                found.append(secret)
                texts.append((secret, data))
            if not found:
                raise Failed(
                    f"run {run.name} has no per-case results: status.evaluations[].results is absent "
                    f"and there is no Secret {results.secret_name_for(run.name, 0)}"
                )
            run = dataclasses.replace(run, secrets=tuple(found))
    parsed = results.finish(results.parse(texts, parsed))
    if args.output == "json":
        io_.print(results.as_json(run, parsed))
        return 0
    io_.print(results.table(run, parsed))
    for note in [*run.notes, *parsed.notes]:
        io_.note(f"note: {note}")
    return 0


async def _read_results(
    api: ExperimentsApi, namespace: str, secret: str, parsed: results.Parsed, missing_ok: bool
) -> bytes | None:
    try:
        data = await api.read_secret_key(namespace, secret, results.RESULTS_KEY, results.MAX_SECRET_BYTES)
    except NotFound:
        if not missing_ok:
            parsed.note(f"Secret {secret} not found")
        return None
    except Forbidden:
        parsed.note(f"Secret {secret}: forbidden (your RBAC does not allow reading it)")
        return None
    except ValueError as exc:
        parsed.note(str(exc))
        return None
    if data is None:
        parsed.note(f"Secret {secret} has no key {results.RESULTS_KEY}")
    return data


async def cmd_plot(args: Any, io_: Io) -> int:
    namespace = _namespace(args)
    async with await _connect(args) as api:
        obj = await _get(api, namespace, args.name)
    return _plot(args, io_, namespace, obj)


def _plot(args: Any, io_: Io, namespace: str, obj: dict[str, Any]) -> int:
    points = trajectory.parse(mapping(obj.get("status")))
    for note in points.notes:
        io_.note(f"note: {note}")
    if not points.points:
        raise Failed(
            f"nothing to plot: status.trajectory of {clean(namespace, 63)}/{clean(args.name, 253)} is empty "
            "(the operator records it as votes arrive)"
        )
    decision = points.decision
    where = "no decision" if decision is None else f"decision at {decision.votes} votes"
    if args.output:
        data = raster.plot_png(points)
        if args.output == "-":
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
        else:
            try:
                Path(args.output).write_bytes(data)
            except OSError as exc:
                raise Failed(f"cannot write {args.output}: {exc.strerror or exc}") from None
            io_.print(f"wrote {args.output} ({raster.WIDTH}x{raster.HEIGHT} PNG, {len(points.points)} points, {where})")
    if args.terminal or not args.output:
        out = io_ if args.output != "-" else Io(io_.err, io_.err)
        out.print(termplot.render(points).rstrip("\n"))
    return 0


# The command line ------------------------------------------------------------------------------------


def _common(parser: argparse.ArgumentParser, suppress: bool) -> None:
    default: Any = argparse.SUPPRESS if suppress else None
    parser.add_argument("-n", "--namespace", default=default, help="the namespace (default: the context's)")
    parser.add_argument("--kubeconfig", default=default, help="the kubeconfig file (default: $KUBECONFIG)")
    parser.add_argument("--context", default=default, help="the kubeconfig context (default: the current one)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Look at, steer and plot PromptExperiments (canopy.genaiops.io).",
        epilog="Docs: docs/kubectl-pexp.md",
    )
    _common(parser, suppress=False)
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    common = argparse.ArgumentParser(add_help=False)
    _common(common, suppress=True)

    def verb(name: str, fn: Verb, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help_, description=help_)
        p.add_argument("name", metavar="NAME", help="the PromptExperiment")
        p.set_defaults(fn=fn)
        return p

    verb("get", cmd_get, "show the experiment and what it drives as a tree")
    watch = verb("watch", cmd_watch, "print one line per change until Concluded or Aborted")
    watch.add_argument("--timeout", type=float, default=0, help="stop after S seconds, exit 1 (default: never)")
    watch.add_argument("--no-headers", action="store_true", help="do not print the header line")
    verb("approve", cmd_approve, "approve the promotion the current test awaits (phase AwaitingApproval)")
    verb("suspend", cmd_suspend, "pause the experiment (spec.suspend=true)")
    verb("resume", cmd_resume, "resume a suspended experiment (spec.suspend=false)")
    verb("abort", cmd_abort, "end the active test keeping the champion (spec.abort=true)")
    res = verb("results", cmd_results, "show an evaluation run's per-case results")
    res.add_argument("--run", metavar="JOBNAME", help="the evaluation Job (default: the newest run)")
    res.add_argument("-o", "--output", choices=("table", "json"), default="table", help="output format")
    plot = verb("plot", cmd_plot, "plot the confidence sequence over time")
    plot.add_argument("-o", "--output", metavar="FILE.png", help="write a PNG (- for stdout)")
    plot.add_argument("--terminal", action="store_true", help="draw it with text (the default without -o)")
    sub.add_parser("preview", add_help=False, help="canopy-operator preview: the values file the operator would write")
    return parser


def _text_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            with contextlib.suppress(ValueError, OSError):
                stream.reconfigure(errors="replace")


def main(argv: Sequence[str] | None = None) -> int:
    """``kubectl pexp``; the exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] == "preview":
        from canopy_operator.preview import main as preview

        return preview(args_list[1:])
    _text_streams()
    logging.getLogger("kubernetes_asyncio").setLevel(logging.ERROR)  # its warnings repeat what we report
    io_ = Io(sys.stdout, sys.stderr)
    verb_name = "?"
    try:
        args: Any = build_parser().parse_args(args_list)
        verb_name = args.verb
        for key in ("namespace", "kubeconfig", "context"):
            if not hasattr(args, key):
                setattr(args, key, None)
        result: int = asyncio.run(args.fn(args, io_))
        return result
    except Failed as exc:
        io_.note(str(exc))
        return 1
    except KubeError as exc:
        io_.note(clean(str(exc), 600))
        return 1
    except KeyboardInterrupt:
        return 0 if verb_name == "watch" else 130
    except BrokenPipeError:
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
