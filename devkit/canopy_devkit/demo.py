"""``make demo``: the whole loop on a laptop, no cluster and no Docker needed.

Starts the local control plane (etcd + kube-apiserver, the tests' harness) with the CRD and the shipped
RBAC, the chart's ConfigMap and Deployment with the Canopy simulator on 127.0.0.1 (a fake kubelet restarts
it whenever the Deployment rolls), the operator as its ServiceAccount (a child process, JSON logs to a
file), applies the sample experiment, and lets simulated users vote through the backend's HTTP API with a
real preference for the challenger. It prints ``kubectl get pexp -w``-style lines until the challenger
is promoted, then runs the installed ``kubectl pexp`` plugin (``kubectl-pexp``, with the demo's kubeconfig):
``get`` and ``plot`` (the confidence sequence, as text and as a PNG), printed and saved in ``--output-dir``
(``build/demo``: ``pexp-get.txt``, ``pexp-plot.txt``, ``pexp-plot.png``). Then it stops everything (also on
Ctrl-C or SIGTERM; nothing is left running, only the output folder is kept).

With ``--kubeconfig`` it uses that cluster instead of starting one (the CRD is applied with kubectl; the
operator, simulator and kubelet still run locally; the backend Deployment gets zero replicas).

``--generation 2`` runs the Generation 2 loop instead: a real MLflow server on 127.0.0.1 (``canopy_devkit.servers``),
the prompt ``summarization`` registered there with two versions (alias ``champion`` -> 1), the Generation 2
stand-in (``canopy_devkit.gen2``) as the backend, restarted by the fake kubelet on rollouts,
``manifests/samples/gen2-experiment.yaml`` with ConfigMap delivery, users voting through the stand-in into MLflow,
and the promotion as one move of the alias, read back from MLflow at the end (no ``kubectl pexp`` step).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.config import new_client_from_config

from canopy_devkit.controlplane.crds import default_crd_dir
from canopy_devkit.controlplane.plane import ControlPlane
from canopy_devkit.controlplane.processes import ManagedProcess, free_ports
from canopy_devkit.gen2 import Gen2Error, RunningGen2, course_config
from canopy_devkit.gen2.scene import (
    CHAMPION_ALIAS,
    PROMPT,
    alias_version,
    load_sample,
    local_experiment,
    register_prompts,
)
from canopy_devkit.gen2.scene import SAMPLE as GEN2_SAMPLE
from canopy_devkit.kubelet import running_backend
from canopy_devkit.servers import MlflowServer, ServerUnavailable
from canopy_devkit.voters import Pick, Tally, draw_picks, post_gen2_votes, post_votes
from canopy_operator.api.base import GROUP, PLURAL, VERSION
from canopy_operator.sources.canopy.errors import BackendError

REPO = default_crd_dir().parent
SAMPLE = REPO / "manifests" / "samples" / "configmap-experiment.yaml"
GEN2_ALIAS_CACHE = "5s"
"""The demo's alias cache: the stand-in's and the experiment's ``aliasCache`` (the course's is 60 s)."""
RBAC = REPO / "manifests" / "rbac"
HEADER = ("NAME", "PHASE", "CHALLENGER", "CHAMPION", "TIES", "WINNER", "P-VALUE", "AGE")
WIDTHS = (20, 12, 11, 9, 5, 11, 8, 5)
OUTPUT_DIR = Path("build") / "demo"
"""Where the demo keeps what ``kubectl pexp`` showed (relative to the current directory; ``build/`` is ignored)."""
PEXP_GET = "pexp-get.txt"
PEXP_PLOT = "pexp-plot.txt"
PEXP_PNG = "pexp-plot.png"
PEXP_TIMEOUT = 60.0


@dataclass(frozen=True)
class DemoOptions:
    namespace: str = "canopy-demo"
    preference: float = 0.75
    max_votes: int = 1000
    batch: int = 1
    seed: int = 1
    timeout: float = 600.0
    kubeconfig: Path | None = None
    generation: int = 1
    output_dir: Path = OUTPUT_DIR


def row(obj: dict[str, Any], started: float) -> tuple[str, ...]:
    """One ``kubectl get pexp`` line's cells for the object."""
    st = obj.get("status") or {}
    votes = st.get("votes") or {}
    p_value = (st.get("evidence") or {}).get("pValue")
    age = int(time.monotonic() - started)
    return (
        obj["metadata"]["name"],
        str(st.get("phase", "")),
        str(votes.get("challengerWins", 0)),
        str(votes.get("championWins", 0)),
        str(votes.get("ties", 0)),
        str(st.get("winner") or ""),
        f"{p_value:.3g}" if isinstance(p_value, int | float) else "",
        f"{age}s",
    )


def format_row(cells: Sequence[str], widths: Sequence[int] = WIDTHS) -> str:
    return "".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()


def widths_for(name: str) -> tuple[int, ...]:
    """The table's column widths, the NAME column wide enough for ``name``."""
    return (max(WIDTHS[0], len(name) + 2), *WIDTHS[1:])


def sample_experiment(backend_url: str) -> dict[str, Any]:
    """The shipped sample, pointed at the local simulator and polling every 5 s (the least allowed) instead of 30 s."""
    body: dict[str, Any] = yaml.safe_load(SAMPLE.read_text(encoding="utf-8"))
    body["spec"]["backend"]["url"] = backend_url
    body["spec"]["analysis"]["interval"] = "5s"
    body["spec"]["delivery"]["verifyTimeout"] = "60s"
    return body


def say(text: str) -> None:
    print(text, flush=True)


def say_verbatim(text: str) -> None:
    """Print another program's output; characters the terminal's encoding lacks become ``?``."""
    encoding = sys.stdout.encoding or "utf-8"
    say(text.encode(encoding, errors="replace").decode(encoding))


def pexp_command() -> list[str]:
    """The installed ``kubectl-pexp`` beside this interpreter, else on PATH, else its module."""
    beside = Path(sys.executable).parent / "kubectl-pexp"
    if beside.is_file():
        return [str(beside)]
    found = shutil.which("kubectl-pexp")
    return [found] if found else [sys.executable, "-m", "canopy_operator.pexp.cli"]


def fresh_output(folder: Path) -> list[Path]:
    """The transcript, plot text and PNG paths in ``folder`` (created), none of them left from an earlier run."""
    folder.mkdir(parents=True, exist_ok=True)
    files = [folder / PEXP_GET, folder / PEXP_PLOT, folder / PEXP_PNG]
    for path in files:
        path.unlink(missing_ok=True)
    return files


async def run_pexp(args: Sequence[str], kubeconfig: Path, transcript: Path) -> int:
    """Run ``kubectl pexp ARGS``, print what it printed and save it (with the command line) to ``transcript``."""
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "PYTHONIOENCODING": "utf-8"}
    proc = await asyncio.create_subprocess_exec(
        *pexp_command(),
        *args,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,  # as the other children: Ctrl-C reaches the demo, which ends this one
    )
    try:
        async with asyncio.timeout(PEXP_TIMEOUT):
            output, _ = await proc.communicate()
    except TimeoutError:
        output = f"kubectl pexp: no answer within {PEXP_TIMEOUT:.0f}s\n".encode()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text = "$ kubectl pexp " + " ".join(args) + "\n" + output.decode("utf-8", errors="replace")
    await asyncio.to_thread(transcript.write_text, text, encoding="utf-8")
    say_verbatim(text.rstrip("\n"))
    return proc.returncode if proc.returncode is not None else 1


class Demo:
    def __init__(self, options: DemoOptions, workdir: Path) -> None:
        self.options = options
        self.workdir = workdir
        self.plane: ControlPlane | None = None
        self.operator: ManagedProcess | None = None
        self.mlflow: MlflowServer | None = None
        self.outcome = ""
        """The last line the demo prints: what was promoted."""
        self.concluded = False
        """The watch saw the experiment concluded."""

    # -- set-up ------------------------------------------------------------------------------------
    def start_cluster(self) -> tuple[Path, Path]:
        """(admin kubeconfig, the operator's kubeconfig)."""
        if self.options.kubeconfig is not None:
            kubectl("apply", "-f", str(default_crd_dir()), kubeconfig=self.options.kubeconfig)
            return self.options.kubeconfig, self.options.kubeconfig
        self.plane = ControlPlane()
        self.plane.start()
        say(f"control plane ready at {self.plane.server_url} in {self.plane.startup_seconds or 0:.1f}s")
        admin = self.plane.admin_kubeconfig()
        kubectl("create", "namespace", "canopy-system", kubeconfig=admin)
        for name in ("serviceaccount.yaml", "clusterrole.yaml", "clusterrolebinding.yaml"):
            kubectl("apply", "-f", str(RBAC / name), kubeconfig=admin)
        say("operator runs as ServiceAccount canopy-system/canopy-operator, bound to the shipped ClusterRole")
        return admin, self.plane.operator_kubeconfig()

    def start_operator(self, kubeconfig: Path) -> str:
        metrics_port, health_port = free_ports(2)
        args = [
            "/usr/bin/env",
            f"KUBECONFIG={kubeconfig}",
            # The simulator serves on loopback, which is not a Service of the experiment's namespace.
            "CANOPY_BACKEND_HOSTS=127.0.0.1",
            sys.executable,
            "-m",
            "canopy_operator.cli",
            "run",
            f"--namespace={self.options.namespace}",
            f"--metrics-port={metrics_port}",
            "--metrics-addr=127.0.0.1",
            f"--liveness=http://127.0.0.1:{health_port}/healthz",
        ]
        self.operator = ManagedProcess("canopy-operator", args, self.workdir / "operator.log")
        self.operator.start()
        say(f"operator started (pid {self.operator.pid}); logs: {self.operator.log_path}")
        return f"http://127.0.0.1:{metrics_port}/metrics"

    def start_mlflow(self) -> MlflowServer:
        """A real MLflow server on 127.0.0.1 (its env built once by hack/servers-assets.sh, then cached)."""
        say("starting MLflow (the first run builds its environment: a few minutes, once) ...")
        self.mlflow = MlflowServer()
        self.mlflow.start()
        say(f"MLflow ready at {self.mlflow.url} in {self.mlflow.startup_seconds:.1f}s")
        return self.mlflow

    def pids(self) -> dict[str, int]:
        found = dict(self.plane.pids) if self.plane is not None else {}
        if self.operator is not None and self.operator.pid is not None:
            found["canopy-operator"] = self.operator.pid
        if self.mlflow is not None and self.mlflow.pid is not None:
            found["mlflow"] = self.mlflow.pid
        return found

    def stop(self) -> None:
        if self.operator is not None:
            self.operator.stop()
        if self.mlflow is not None:
            self.mlflow.close()
        if self.plane is not None:
            self.plane.stop()

    # -- the story ---------------------------------------------------------------------------------
    async def run(self) -> bool:
        admin, operator_config = self.start_cluster()
        api = await new_client_from_config(config_file=str(admin))
        try:
            await ensure_namespace(api, self.options.namespace)
            if self.options.generation == 2:
                return await self.run_generation2(api, operator_config)
            async with running_backend(api, self.options.namespace, self.workdir, **self._backend_args()) as kubelet:
                say(f"Canopy simulator serving on {kubelet.url}")
                metrics_url = self.start_operator(operator_config)
                say(f"operator metrics: {metrics_url}")
                say("pids: " + " ".join(f"{name}={pid}" for name, pid in sorted(self.pids().items())))
                custom = client.CustomObjectsApi(api)
                body = sample_experiment(kubelet.url)
                await custom.create_namespaced_custom_object(GROUP, VERSION, self.options.namespace, PLURAL, body)
                say(f"applied {SAMPLE.relative_to(REPO)} as {self.options.namespace}/{body['metadata']['name']}")
                say("")
                promoted = await self.watch_and_vote(custom, body["metadata"]["name"], kubelet.url)
                if self.concluded:
                    await self.show_pexp(admin, body["metadata"]["name"])
                self.outcome = "promoted: the challenger is now summarize.prompt" if promoted else ""
                return promoted
        finally:
            await api.close()

    async def run_generation2(self, api: client.ApiClient, operator_config: Path) -> bool:
        """The Generation 2 loop: MLflow, the registry, the stand-in, the operator, votes into MLflow."""
        try:
            mlflow = self.start_mlflow()
        except ServerUnavailable as exc:
            say(f"MLflow could not start: {exc}")
            return False
        versions = await register_prompts(mlflow.url)
        say(f"registered prompt {PROMPT}: versions {', '.join(versions)}; alias {CHAMPION_ALIAS} -> {versions[0]}")
        standin = RunningGen2(
            tracking_uri=mlflow.url,
            alias_cache_seconds=float(GEN2_ALIAS_CACHE.removesuffix("s")),
            seed=7,
        )
        values = course_config(PROMPT)
        async with running_backend(
            api, self.options.namespace, self.workdir, values=values, factory=lambda: standin, **self._backend_args()
        ) as kubelet:
            say(f"Generation 2 stand-in serving on {kubelet.url} (MLflow experiment {standin.experiment_id})")
            metrics_url = self.start_operator(operator_config)
            say(f"operator metrics: {metrics_url}")
            say("pids: " + " ".join(f"{name}={pid}" for name, pid in sorted(self.pids().items())))
            custom = client.CustomObjectsApi(api)
            body = local_experiment(
                load_sample(GEN2_SAMPLE),
                backend_url=kubelet.url,
                tracking_url=mlflow.url,
                experiment_id=standin.experiment_id,
                alias_cache=GEN2_ALIAS_CACHE,
            )
            await custom.create_namespaced_custom_object(GROUP, VERSION, self.options.namespace, PLURAL, body)
            say(
                f"applied {GEN2_SAMPLE.relative_to(REPO)} (delivery ConfigMap, servers on 127.0.0.1, aliasCache "
                f"{GEN2_ALIAS_CACHE}) as {self.options.namespace}/{body['metadata']['name']}"
            )
            say("")
            promoted = await self.watch_and_vote(custom, body["metadata"]["name"], kubelet.url, generation=2)
        champion = await alias_version(mlflow.url)
        say(f"MLflow: prompts:/{PROMPT}@{CHAMPION_ALIAS} names version {champion}")
        promoted = promoted and champion == versions[1]
        if promoted:
            self.outcome = f"promoted: the alias {CHAMPION_ALIAS} now names version {champion} (the challenger)"
        return promoted

    async def show_pexp(self, kubeconfig: Path, name: str) -> None:
        """``kubectl pexp get`` and ``plot`` of the concluded experiment, printed and saved in the output folder."""
        files = await asyncio.to_thread(fresh_output, self.options.output_dir)
        namespace = ["-n", self.options.namespace]
        say("")
        failed: list[str] = []
        if await run_pexp(["get", name, *namespace], kubeconfig, files[0]) != 0:
            failed.append("get")
        say("")
        plot = ["plot", name, *namespace, "-o", str(files[2]), "--terminal"]
        if await run_pexp(plot, kubeconfig, files[1]) != 0:
            failed.append("plot")
        say("")
        saved = [str(path) for path in files if await asyncio.to_thread(path.exists)]
        say(f"kubectl pexp output saved: {', '.join(saved) or 'nothing'}")
        if failed:
            say(f"kubectl pexp {' and '.join(failed)} failed (see above)")

    def _backend_args(self) -> dict[str, Any]:
        # On a real cluster the Deployment must not start pods: the simulator plays the backend locally.
        return {"replicas": 0} if self.options.kubeconfig is not None else {}

    async def watch_and_vote(
        self, custom: client.CustomObjectsApi, name: str, url: str, *, generation: int = 1
    ) -> bool:
        """Print a line per change of the experiment (a watch, as ``kubectl get -w``) while users vote."""
        seen = Seen(started=time.monotonic(), widths=widths_for(name))
        voting = asyncio.create_task(self.vote_while_running(seen, url, generation))
        try:
            say(format_row(HEADER, seen.widths))
            async with asyncio.timeout(self.options.timeout):
                while seen.phase != "Concluded":
                    await self.watch_once(custom, name, seen)
            self.concluded = True
        except TimeoutError:
            say(f"no promotion within {self.options.timeout:.0f}s")
            return False
        finally:
            voting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await voting
        return seen.winner == "challenger"

    async def watch_once(self, custom: client.CustomObjectsApi, name: str, seen: Seen) -> None:
        stream = watch.Watch()
        events = stream.stream(
            custom.list_namespaced_custom_object,
            GROUP,
            VERSION,
            self.options.namespace,
            PLURAL,
            field_selector=f"metadata.name={name}",
            timeout_seconds=60,
        )
        async with stream:
            async for event in events:
                cells = row(event["raw_object"], seen.started)
                if cells[1] and cells[:-1] != seen.last:
                    say(format_row(cells, seen.widths))
                    seen.last = cells[:-1]
                if seen.phase == "Concluded":
                    return

    async def vote_while_running(self, seen: Seen, url: str, generation: int = 1) -> None:
        """Simulated users vote in small batches whenever the experiment collects votes."""
        posted = batch = 0
        while posted < self.options.max_votes:
            await asyncio.sleep(0.5)
            if seen.phase != "Running":
                continue
            batch += 1
            picks = draw_picks(self.options.batch, self.options.preference, _rng(self.options.seed, batch))
            # The backend may be restarting after a rollout, or no longer serving A/B after the decision.
            with contextlib.suppress(BackendError, Gen2Error, httpx.HTTPError):
                await _post(url, picks, self.options.seed * 100_000 + batch, generation)
                posted += len(picks)


@dataclass
class Seen:
    """The last line printed."""

    started: float
    last: tuple[str, ...] = ()
    widths: Sequence[int] = WIDTHS

    @property
    def phase(self) -> str:
        return self.last[1] if self.last else ""

    @property
    def winner(self) -> str:
        return self.last[5] if self.last else ""


async def _post(url: str, picks: Sequence[Pick], seed: int, generation: int) -> Tally:
    if generation == 2:
        return await post_gen2_votes(url, picks, seed=seed)
    return await post_votes(url, picks, seed=seed, ask_answers=True)


def _rng(seed: int, batch: int) -> random.Random:
    return random.Random(seed * 1_000_003 + batch)  # noqa: S311 - simulated users, not cryptography


async def ensure_namespace(api: client.ApiClient, name: str) -> None:
    core = client.CoreV1Api(api)
    try:
        await core.read_namespace(name)
    except client.ApiException as exc:
        if exc.status != 404:
            raise
        await core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))


def kubectl(*args: str, kubeconfig: Path) -> None:
    if shutil.which("kubectl") is None:
        raise SystemExit("the demo needs kubectl on PATH")
    result = subprocess.run(
        ["kubectl", f"--kubeconfig={kubeconfig}", *args], capture_output=True, text=True, timeout=60, check=False
    )
    if result.returncode != 0 and "AlreadyExists" not in result.stderr:
        raise SystemExit(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")


@contextlib.contextmanager
def _terminate_on_sigterm() -> Iterator[None]:
    """SIGTERM/SIGHUP end the demo like Ctrl-C: the finally blocks stop every child."""

    def raise_interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, raise_interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_demo(options: DemoOptions) -> int:
    """Run the demo; 0 when the challenger was promoted."""
    workdir = Path(tempfile.mkdtemp(prefix="canopy-demo-"))
    demo = Demo(options, workdir)
    promoted = False
    try:
        with _terminate_on_sigterm():
            promoted = asyncio.run(demo.run())
    except KeyboardInterrupt:
        say("\ninterrupted")
    finally:
        servers = "the simulator" if options.generation == 1 else "the stand-in, MLflow"
        say(f"stopping the operator, {servers} and the control plane ...")
        log = demo.operator.log_path if demo.operator is not None else None
        demo.stop()
        if not promoted and log is not None and log.exists():
            say(f"--- last lines of the operator's log:\n{_tail(log)}")
        shutil.rmtree(workdir, ignore_errors=True)
    say(demo.outcome if promoted else "the demo ended without a promotion")
    return 0 if promoted else 1


def _tail(path: Path, lines: int = 20) -> str:
    return "".join(path.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)[-lines:])
