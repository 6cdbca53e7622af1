"""A 1 000-case evaluation on a real API server: the real runner against the simulator and a judge with
latency, inside the deadline the operator derived; progress in status while it runs; per-case results
kept in Secrets the experiment owns and readable after the Job and its pod are gone.

envtest runs no kubelet: the runner runs here as a process with the Job's own arguments, its output is
served as the pod's log by a kubelet log endpoint (``tests/support/pod_logs.py``) the API server proxies
``pods/log`` to, and the test ends the pod and the Job as the kubelet and the job controller would.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client import ApiClient

from canopy_devkit.simulator.app import answer_chunks
from canopy_operator.core.evaluation.jobs import DATASET_KEY, DATASET_MOUNT, STARTUP_SECONDS
from canopy_operator.core.evaluation.template import JUDGE_TEMPLATE_FILE
from canopy_operator.sources.canopy.client import CanopyClient
from tests.support.eval_jobs import eval_jobs, finish_job, run_pod
from tests.support.experiments import CHALLENGER, Experiments, deployed_backend
from tests.support.fake_judge import FakeJudge
from tests.support.kopf_runner import run_operator, wait_for
from tests.support.pod_logs import PodLogServer

pytestmark = pytest.mark.integration

IMAGE = "quay.io/example/canopy-operator:0.1.0-test"
CASES = 1000
WAIT = 120.0


@pytest.fixture(autouse=True)
def operator_image(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CANOPY_OPERATOR_IMAGE", IMAGE)


def latest_run(status: dict[str, Any]) -> dict[str, Any]:
    runs: list[dict[str, Any]] = status.get("evaluations") or []
    return runs[-1] if runs else {}


async def _secret_data(api: ApiClient, namespace: str, name: str) -> dict[str, str]:
    secret = await client.CoreV1Api(api).read_namespaced_secret(name, namespace)
    return {k: base64.b64decode(v).decode("utf-8") for k, v in (secret.data or {}).items()}


def _runner_args(job: dict[str, Any], workdir: Path) -> list[str]:
    """The Job's own arguments, with the pod's paths mapped into ``workdir``."""
    args: list[str] = list(job["spec"]["template"]["spec"]["containers"][0]["args"])
    mapped = {
        f"{DATASET_MOUNT}/{DATASET_KEY}": str(workdir / DATASET_KEY),
        "/dev/termination-log": str(workdir / "termination-log"),
        "/tmp/results.json": str(workdir / "results.json"),
    }
    return [mapped.get(arg, arg) for arg in args]


async def _run_as_the_pod(args: list[str], logs: PodLogServer, namespace: str, pod: str) -> int:
    """The runner as a process; what it prints becomes the pod's log as it prints it."""
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "canopy-operator"),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    async for line in process.stdout:
        logs.append(namespace, pod, "eval", line.decode("utf-8", "replace"))
    return await asyncio.wait_for(process.wait(), timeout=30)


async def test_a_thousand_cases_finish_in_their_deadline_and_their_results_outlive_the_pod(
    admin_api: ApiClient, operator_kubeconfig: Path, namespace: str, tmp_path: Path
) -> None:
    negatives = [f"Negative case {i}: a report on river {i} that users found unhelpful." for i in range(CASES)]
    preferred = frozenset("".join(answer_chunks(CHALLENGER, text)) for text in negatives)
    with FakeJudge(marker="never-present", preferred=preferred, latency=0.2) as judge:
        async with deployed_backend(admin_api, namespace, tmp_path) as kubelet, PodLogServer() as logs:
            node = await logs.register_node(admin_api)
            exp = Experiments(admin_api, namespace)
            evaluation = {
                "enabled": True,
                "minNewNegatives": CASES,
                "image": IMAGE,
                "judge": {"endpoint": judge.url},
                "caseBudget": "2s",
                "concurrency": 8,
            }
            await exp.create(kubelet.url, evaluation=evaluation)
            with run_operator(operator_kubeconfig, namespace=namespace):
                await exp.wait_phase("Running", timeout=WAIT)
                async with CanopyClient(kubelet.url, timeout=10) as http:
                    for text in negatives:
                        await http.post_feedback(text, f"an old summary of {text}", "thumbs_down", comment="vague")

                async def job_made() -> bool:
                    return len(await eval_jobs(admin_api, namespace)) == 1

                await wait_for(job_made, timeout=WAIT, what="the evaluation Job")
                job = (await eval_jobs(admin_api, namespace))[0]
                run = latest_run(await exp.wait_status(lambda s: bool(latest_run(s)), "the run", timeout=WAIT))
                assert run["cases"] == CASES

                # the pod: the dataset Secret mounted as files, the runner with the Job's arguments
                dataset = await _secret_data(admin_api, namespace, run["datasetSecret"])
                assert set(dataset) == {DATASET_KEY, JUDGE_TEMPLATE_FILE}
                for key, text in dataset.items():
                    (tmp_path / key).write_text(text, encoding="utf-8")
                pod = await run_pod(admin_api, job, node)
                runner = asyncio.ensure_future(_run_as_the_pod(_runner_args(job, tmp_path), logs, namespace, pod))
                seen_progress: list[dict[str, Any]] = []

                async def progress_in_status() -> bool:
                    progress = latest_run(await exp.status()).get("progress")
                    if progress and 0 < progress["done"] < CASES:
                        seen_progress.append(progress)
                    return bool(seen_progress) or runner.done()

                await wait_for(progress_in_status, timeout=WAIT, what="the runner's progress in status")
                assert await asyncio.wait_for(runner, timeout=WAIT) == 0
                summary_text = (tmp_path / "termination-log").read_text(encoding="utf-8")
                await finish_job(admin_api, job, message=summary_text, pod_running=True)
                status = await exp.wait_status(
                    lambda s: latest_run(s).get("state") == "Succeeded" and bool(latest_run(s).get("results")),
                    "the run's results",
                    timeout=WAIT,
                )
            # the Job and its pod go away (TTL, history limit, or by hand); the results stay
            batch, core = client.BatchV1Api(admin_api), client.CoreV1Api(admin_api)
            await batch.delete_namespaced_job(job["metadata"]["name"], namespace, propagation_policy="Orphan")
            await core.delete_namespaced_pod(pod, namespace, grace_period_seconds=0)

    # progress was mirrored while the runner worked
    assert seen_progress, "no progress was seen in status while the runner ran"
    assert seen_progress[0]["total"] == CASES
    # it finished inside the deadline the operator derived from the case count, every case run
    summary = json.loads(summary_text)
    deadline = job["spec"]["activeDeadlineSeconds"]
    assert summary["duration_seconds"] + STARTUP_SECONDS < deadline
    assert (summary["cases"], summary["scored"], summary["errors"], summary["unreviewed"]) == (CASES, CASES, 0, CASES)
    assert summary["challenger_better_rate"] == 1.0
    run = latest_run(status)
    assert (run["unreviewed"], status["negatives"]["awaitingReview"]) == (CASES, CASES)
    # the results, read after the pod and the Job are gone, are the runner's, case by case
    results = run["results"]
    assert results["cases"] == CASES
    assert results["truncated"] is False
    records: list[dict[str, Any]] = []
    for name in results["secrets"]:
        records += [
            json.loads(line) for line in (await _secret_data(admin_api, namespace, name))["results.jsonl"].splitlines()
        ]
    output = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    assert [r["i"] for r in records] == list(range(CASES))
    for record, case in zip(records, output["cases"], strict=True):
        assert record["input_sha256"] == hashlib.sha256(case["prompt"].encode()).hexdigest()[:16]
        assert record["unreviewed"] is True
        assert record["champion"]["subset_of"] == case["scores"]["champion"]["subset_of"] == 1.0
        assert record["pairwise"]["winner"] == case["scores"]["pairwise"]["winner"] == "challenger"
        assert "llm_as_judge" not in record["champion"]  # unreviewed: the course judge is not asked
        assert record["error"] is None
    # one grading call per case: only the pairwise judge ran on unreviewed cases
    assert len(judge.requests) == CASES
