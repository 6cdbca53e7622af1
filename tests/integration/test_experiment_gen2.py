"""The whole Generation 2 loop: the real operator process, a real API server, a real MLflow and the Generation 2
stand-in as the backend's pod (restarted by the fake kubelet on each rollout).

The experiment is the shipped ``gen2-experiment.yaml`` with ConfigMap delivery: it reaches Running once the
ConfigMap's Generation 2 config has A/B and thumbs on with the challenger pinned to version '2' and the stand-in
serves both versions; users vote through the stand-in into MLflow; the operator decides for the challenger and
promotes it by moving the registry alias ``champion`` to version 2. The first operator process dies at the
failpoint ``after-store-promote`` (right after the alias move, before the status write) and a second one
finishes: the alias moved exactly once, the status has one promotion record naming version 1 as the one to roll
back to, and the stand-in serves version 2 as its champion.

How a second move could not be missed: both of the experiment's MLflow URLs point at :class:`RecordingProxy`, a
reverse proxy in this test process, so every request either operator process sends to MLflow passes through it
(the operator knows no other address of MLflow; only the stand-in and the test's own checks talk to MLflow
directly, and they never set an alias). The proxy records each request *before* forwarding it, so even a move
whose answer a dying process never read is counted, and it lives across the operator's restart. An alias move
is a ``POST /api/2.0/mlflow/registered-models/alias``: the test asserts there was exactly one.

The README's local command, ``make demo ARGS="--generation 2"``, is run here too: it reaches the promotion and
leaves no process behind (MLflow's whole process group included), also when interrupted with Ctrl-C.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from aiohttp import web
from kubernetes_asyncio import client
from kubernetes_asyncio.client import ApiClient

from canopy_devkit.controlplane import AssetPaths
from canopy_devkit.gen2 import Gen2Client, RunningGen2, course_config
from canopy_devkit.gen2.scene import CHALLENGER_TEXT, CHAMPION_TEXT, alias_version, load_sample, local_experiment
from canopy_devkit.gen2.scene import register_prompts as register
from canopy_devkit.kubelet import running_backend
from canopy_devkit.simulator import answer_chunks
from canopy_devkit.voters import fixed_picks, post_gen2_votes
from canopy_operator.api.base import GROUP, PLURAL, VERSION
from canopy_operator.failpoints import EXIT_CODE
from tests.integration.test_devkit_demo import demo_env, pids_in, running
from tests.support.faults import WriteLog, cut_connections_tolerated
from tests.support.mlflow_server import MlflowServer
from tests.support.operator_process import OperatorProcess

pytestmark = [pytest.mark.integration, pytest.mark.mlflow, pytest.mark.timeout(900)]

ALIAS_PATH = "/api/2.0/mlflow/registered-models/alias"
ALIAS_CACHE = 3.0
"""The stand-in's alias cache and the experiment's aliasCache, in seconds (the course's is 60)."""
VOTES = (22, 2)  # challenger, champion: e-value 42 > 1/alpha = 20 once all are counted (minVotes 10)
STORY_TIMEOUT = 240.0


class RecordingProxy:
    """A reverse proxy to MLflow on 127.0.0.1 that records every request (method, path, JSON body) first."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.requests: list[tuple[str, str, Any]] = []
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._http = httpx.AsyncClient(timeout=30.0, trust_env=False)

    async def __aenter__(self) -> RecordingProxy:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = next(a[1] for a in self._runner.addresses if isinstance(a, tuple))
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        await self._http.aclose()

    async def _forward(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.append((request.method, request.path, json.loads(body) if body else None))
        answer = await self._http.request(
            request.method,
            f"{self.upstream}{request.path_qs}",
            content=body,
            headers={"Content-Type": request.headers.get("Content-Type", "application/json")},
        )
        return web.Response(
            status=answer.status_code,
            body=answer.content,
            content_type=answer.headers.get("content-type", "application/json").split(";")[0],
        )

    def alias_moves(self) -> list[Any]:
        """The bodies of every alias move (``POST .../registered-models/alias``) seen so far."""
        return [body for method, path, body in self.requests if method == "POST" and path == ALIAS_PATH]


def answer(prompt: str, text: str) -> str:
    return "".join(answer_chunks(prompt, text))


async def status_of(api: ApiClient, namespace: str, name: str) -> dict[str, Any]:
    obj = await client.CustomObjectsApi(api).get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    status: dict[str, Any] = obj.get("status") or {}
    return status


async def config_tree(api: ApiClient, namespace: str) -> dict[str, Any]:
    cm = await client.CoreV1Api(api).read_namespaced_config_map("canopy-config", namespace)
    tree: dict[str, Any] = yaml.safe_load(cm.data["canopy-config.yaml"])
    return tree


@pytest.fixture
async def proxy(mlflow_server: MlflowServer) -> AsyncIterator[RecordingProxy]:
    async with RecordingProxy(mlflow_server.url) as recording:
        yield recording


async def test_gen2_experiment_promotes_by_moving_the_alias_once_across_a_kill_after_the_move(
    admin_api: ApiClient,
    operator_kubeconfig: Path,
    namespace: str,
    mlflow_server: MlflowServer,
    proxy: RecordingProxy,
    tmp_path: Path,
) -> None:
    prompt = f"summarization-{uuid.uuid4().hex[:8]}"
    assert await register(mlflow_server.url, prompt) == ["1", "2"]  # alias champion -> 1
    standin = RunningGen2(
        tracking_uri=mlflow_server.url,
        experiment=f"gen2-e2e-{uuid.uuid4().hex[:8]}",
        alias_cache_seconds=ALIAS_CACHE,
        seed=7,
    )
    with cut_connections_tolerated():  # the killed operator leaves half-closed connections to the stand-in
        async with running_backend(
            admin_api, namespace, tmp_path, values=course_config(prompt), factory=lambda: standin
        ) as kubelet:
            writes = WriteLog.configmap(admin_api, namespace)
            await writes.start()
            body = local_experiment(
                load_sample(),
                backend_url=kubelet.url,
                tracking_url=proxy.url,
                experiment_id=standin.experiment_id,
                prompt=prompt,
                alias_cache=f"{ALIAS_CACHE:g}s",
            )
            body["spec"]["analysis"]["minVotes"] = 10
            await client.CustomObjectsApi(admin_api).create_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, body
            )
            operator = OperatorProcess(
                operator_kubeconfig,
                namespace,
                tmp_path / "operator",
                failpoints="after-store-promote:1",
                env={"CANOPY_BACKEND_HOSTS": "127.0.0.1"},
            )
            try:
                story = await run_story(admin_api, namespace, body["metadata"]["name"], operator, kubelet.url, proxy)
            finally:
                await writes.stop()
            # Room for a second move: longer than the settle time a restarted operator waits after one.
            await asyncio.sleep(ALIAS_CACHE + 2.0)
            status = await status_of(admin_api, namespace, body["metadata"]["name"])
            final = await config_tree(admin_api, namespace)
            async with Gen2Client(kubelet.url) as ui:
                served, _ = await ui.summarize("After the promotion.")
            rollouts = kubelet.rollouts

    running_config = story["running_config"]
    assert running_config["ab_testing"] == {"enabled": True, "mlflow_prompt_b_version": "2"}  # a quoted version
    assert running_config["feedback"] == {"enabled": True}
    assert running_config["summarization"]["mlflow_prompt_version"] == "champion"
    assert story["ab_answers"] == {
        "prompt": answer(CHAMPION_TEXT, "An article."),
        "prompt_b": answer(CHALLENGER_TEXT, "An article."),
    }

    assert story["exits"] == [EXIT_CODE], "the failpoint after-store-promote did not kill the operator exactly once"
    assert story["moves_when_killed"] == 1, "the first process died before (or without) moving the alias"
    assert proxy.alias_moves() == [{"name": prompt, "alias": "champion", "version": "2"}], "not exactly one move"
    assert await alias_version(mlflow_server.url, prompt) == "2"

    assert status["phase"] == "Concluded"
    assert status["winner"] == "challenger"
    assert (status["test"]["championVersion"], status["test"]["challengerVersion"]) == ("1", "2")
    (record,) = status["promotions"]
    assert record["outcome"] == "challenger"
    assert record["previousVersion"] == "1"
    assert record["challengerWins"] > record["championWins"]
    assert record["challengerWins"] + record["championWins"] >= 10

    # Promotion in the config: A/B off, the challenger's version gone, the champion still the alias.
    assert final["ab_testing"] == {"enabled": False}
    assert final["summarization"]["mlflow_prompt_version"] == "champion"
    assert final["feedback"] == {"enabled": True}
    assert writes.changes == 2, f"ConfigMap writes: {writes.changes} (want 2: A/B on, promotion)"
    assert rollouts == 2, f"stand-in restarts: {rollouts} (want 2)"
    assert served == answer(CHALLENGER_TEXT, "After the promotion."), "the stand-in does not serve version 2"


async def run_story(
    api: ApiClient, namespace: str, name: str, operator: OperatorProcess, url: str, proxy: RecordingProxy
) -> dict[str, Any]:
    """Start the operator, restart it when the failpoint kills it, check and vote once Running, until Concluded;
    every wait bounded by STORY_TIMEOUT. The operator is stopped at the end, whatever happened."""
    story: dict[str, Any] = {"exits": [], "moves_when_killed": None}
    operator.start()
    deadline = time.monotonic() + STORY_TIMEOUT
    try:
        while True:
            code = operator.returncode()
            if code is not None:
                assert code == EXIT_CODE, f"operator exited {code}:\n{operator.tail()}"
                assert "failpoint after-store-promote:1 reached" in operator.log(), operator.tail()
                story["exits"].append(code)
                story["moves_when_killed"] = len(proxy.alias_moves())
                operator = operator.again()
                operator.start()
            status = await status_of(api, namespace, name)
            if status.get("phase") == "Running" and "running_config" not in story:
                story["running_config"] = await config_tree(api, namespace)
                async with Gen2Client(url) as ui:
                    answers = await ui.summarize_ab("An article.")
                by_key = {answers.mapping["a"]: answers.response_a, answers.mapping["b"]: answers.response_b}
                story["ab_answers"] = by_key
                await post_gen2_votes(url, fixed_picks(*VOTES, 0), seed=11)
            if status.get("phase") == "Concluded":
                return story
            assert time.monotonic() < deadline, f"not Concluded: {status}\n{operator.tail()}"
            await asyncio.sleep(0.3)
    finally:
        assert operator.stop() in (0, EXIT_CODE), operator.tail()


# ---- the README's command: make demo ARGS="--generation 2" -----------------------------------------------------

DEMO = [sys.executable, "-m", "canopy_devkit", "demo", "--generation", "2", "--max-votes", "600", "--timeout", "300"]


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def group_alive(pgid: int) -> bool:
    """Whether any live process is in process group ``pgid`` (the MLflow server and its worker)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False


def test_gen2_demo_moves_the_alias_to_the_challenger_and_stops_everything(envtest_assets: AssetPaths) -> None:
    result = subprocess.run(
        DEMO, env=demo_env(envtest_assets), capture_output=True, text=True, timeout=420, check=False
    )
    out = result.stdout

    assert result.returncode == 0, out + result.stderr
    rows = [line.split() for line in out.splitlines() if line.startswith("concise-summaries-gen2 ")]
    phases = [cells[1] for cells in rows]
    assert phases.index("Running") < phases.index("Concluded")
    final = rows[-1]
    assert (final[1], final[5]) == ("Concluded", "challenger")
    assert int(final[2]) > int(final[3])
    assert "registered prompt summarization: versions 1, 2; alias champion -> 1" in out
    assert "MLflow: prompts:/summarization@champion names version 2" in out
    assert out.rstrip().endswith("promoted: the alias champion now names version 2 (the challenger)")
    pids = pids_in(out)
    assert set(pids) == {"canopy-operator", "etcd", "kube-apiserver", "mlflow"}
    assert [name for name, pid in pids.items() if running(pid)] == []
    assert not group_alive(pids["mlflow"]), "an MLflow process outlived the demo"


def test_gen2_demo_interrupted_with_ctrl_c_leaves_no_process(envtest_assets: AssetPaths) -> None:
    proc = subprocess.Popen(
        DEMO,
        env={**demo_env(envtest_assets), "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=_default_sigint,  # Ctrl-C as a terminal sends it, whoever started this test
    )
    assert proc.stdout is not None
    seen: list[str] = []
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            if line.startswith("applied "):
                break
        assert any(line.startswith("applied ") for line in seen), "".join(seen)
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = "".join(seen) + rest
    assert proc.returncode == 1, out
    assert "stopping the operator, the stand-in, MLflow and the control plane" in out
    pids = pids_in(out)
    assert "mlflow" in pids
    assert [name for name, pid in pids.items() if running(pid)] == []
    assert not group_alive(pids["mlflow"]), "an MLflow process outlived the demo"
