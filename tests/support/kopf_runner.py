"""Run a Kopf operator in-process against the test API server, as the operator's own user.

    with run_operator(operator_kubeconfig, namespace=ns) as runner:
        ...  # create objects, then: await wait_for(lambda: ..., timeout=20, what="status.phase")

The operator talks to the API server with the kubeconfig given here (KUBECONFIG is set for the
runner), so it can do exactly what the RBAC bound to that user grants.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import time
import warnings
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import kopf
from kopf.testing import KopfRunner

OPERATOR_MODULE = "canopy_operator.handlers"
STOP_TIMEOUT = 30.0

Predicate = Callable[[], bool | Awaitable[bool]]


@contextmanager
def run_operator(
    kubeconfig: Path,
    *,
    namespace: str | None = None,
    module: str | None = OPERATOR_MODULE,
    registry: kopf.OperatorRegistry | None = None,
    extra_args: Sequence[str] = (),
    stop_timeout: float = STOP_TIMEOUT,
) -> Iterator[KopfRunner]:
    """Run ``kopf run --standalone`` (one namespace, or ``--all-namespaces``) while the block runs.

    ``module`` is imported with ``-m``; pass ``registry`` to run handlers registered in a private
    registry instead of Kopf's global one. On exit the operator is stopped and must have exited
    cleanly; its output is in the assertion message otherwise.
    """
    scope = ["--namespace", namespace] if namespace else ["--all-namespaces"]
    args = ["run", "--standalone", *scope, *(["-m", module] if module else []), *extra_args]
    kwargs: dict[str, Any] = {"env": {"KUBECONFIG": str(kubeconfig)}}
    if registry is not None:
        kwargs["registry"] = registry
    runner = KopfRunner(args, timeout=stop_timeout, **kwargs)
    # `kopf run` with a registry makes it the process-wide default (kopf.cli); the real operator's handlers
    # live in the default registry they were imported into, so put that one back afterwards.
    default_registry = kopf.get_default_registry()
    try:
        with runner:
            yield runner
    finally:
        kopf.set_default_registry(default_registry)
        _collect_stopped_loop_leftovers()
    assert runner.exit_code == 0, f"operator exited {runner.exit_code}:\n{runner.output}"


def _collect_stopped_loop_leftovers() -> None:
    """Free what the operator's closed event loop left behind, before it trips ``filterwarnings=error``.

    Kopf 1.45 can leave a few sockets of cancelled discovery requests open when it is stopped soon
    after starting (observed: ``scanning._read_version`` connections in the runner's thread). Garbage
    collected later, they raise ResourceWarning in whichever test happens to run then. Collecting
    here, with only ResourceWarning ignored, keeps that noise out of unrelated tests.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


async def wait_for(
    predicate: Predicate,
    timeout: float = 20.0,  # noqa: ASYNC109 - a polling deadline that names what it waited for in its error
    interval: float = 0.2,
    what: str = "the condition",
) -> None:
    """Poll ``predicate`` (sync or async) until it is true; AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(interval)


def wait_for_sync(
    predicate: Callable[[], bool], timeout: float = 20.0, interval: float = 0.2, what: str = "the condition"
) -> None:
    """The same as :func:`wait_for` for synchronous tests."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)
