"""Evaluation Jobs as real pods under the ``restricted`` Pod Security Standard.

Thumbs-down feedback starts an evaluation: the operator makes a dataset Secret and a Job, the real Job
controller runs the operator's own image as a pod that Pod Security admission lets into a namespace labelled
``pod-security.kubernetes.io/enforce: restricted``, the runner asks the backend (the in-cluster Service) and a
judge (on the node's address) and writes its summary as the pod's termination message, and the operator reads
that into status. Deleting the experiment garbage-collects the Job, its pod and the dataset Secret.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from canopy_operator.sources.canopy.client import CanopyClient
from tests.support.fake_judge import FakeJudge
from tests.support.node_e2e import (
    Cluster,
    Kube,
    backend_manifests,
    events,
    port_forward,
    sample_experiment,
    serve_judge,
    wait_for,
    wait_phase,
)

RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}
NEGATIVES = ["An article about rivers.", "A report on glaciers.", "A memo about budgets."]


def _thumbs_down(kube: Kube, namespace: str, texts: list[str]) -> None:
    async def post(url: str) -> None:
        async with CanopyClient(url, timeout=10) as http:
            for text in texts:
                await http.post_feedback(text, f"a summary of {text}", "thumbs_down", comment="too vague")

    with port_forward(kube, namespace, "svc/canopy-backend", 8000) as url:
        asyncio.run(post(url))


def _eval_jobs(kube: Kube, namespace: str) -> list[dict[str, Any]]:
    selector = "app.kubernetes.io/component=evaluation"
    items: list[dict[str, Any]] = kube.json("-n", namespace, "get", "jobs", "-l", selector)["items"]
    return items


def test_evaluation_job_runs_restricted_and_its_result_reaches_status(
    cluster: Cluster, installed: Kube, namespace: str
) -> None:
    if cluster.node is None:
        pytest.skip("the judge listens on the real node's address; on an existing cluster there is none to use")
    kube = installed
    kube.apply(backend_manifests(namespace, labels=RESTRICTED))
    kube("-n", namespace, "rollout", "status", "deployment/canopy-backend", "--timeout=180s", timeout=200)
    judge = FakeJudge()
    with serve_judge(judge, cluster.node.layout.node_ip) as judge_url:
        body = sample_experiment(namespace, minVotes=1000)
        body["spec"]["evaluation"] = {
            "enabled": True,
            "minNewNegatives": 3,
            "judge": {"endpoint": judge_url, "model": "judge"},
            "activeDeadline": "5m",
        }
        kube.apply([body])
        wait_phase(kube, namespace, "Running", timeout=240)
        _thumbs_down(kube, namespace, NEGATIVES)

        def finished_run() -> dict[str, Any] | None:
            runs = (kube.json("-n", namespace, "get", "pexp", "concise-summaries").get("status") or {}).get(
                "evaluations"
            ) or []
            return runs[-1] if runs and runs[-1].get("state") != "Running" else None

        run = wait_for("the evaluation to finish and reach status", finished_run, 300)

    assert run["state"] == "Succeeded", run
    assert run["cases"] == 3
    assert run["scored"] == 3, run
    assert any("[Answer 1]" in r.content for r in judge.requests), "the runner never asked the judge"
    jobs = _eval_jobs(kube, namespace)
    assert [j["metadata"]["name"] for j in jobs] == [run["name"]]
    job = jobs[0]
    assert job["status"].get("succeeded") == 1
    pods = kube.json("-n", namespace, "get", "pods", "-l", f"job-name={run['name']}")["items"]
    assert pods, "the Job's pod is gone before the test could look at it"
    terminated = pods[0]["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 0
    assert '"scored"' in terminated.get("message", ""), "the summary is not the pod's termination message"
    if cluster.restricted_uid is not None:  # admitted as restricted-v2 admits it: the assigned UID, none pinned
        assert pods[0]["spec"]["securityContext"]["runAsUser"] == cluster.restricted_uid
    assert events(kube, namespace, "EvaluationSucceeded")
    dataset = run["datasetSecret"]

    kube("-n", namespace, "delete", "pexp", "concise-summaries", "--wait=true", timeout=180)

    def collected() -> bool:
        left = kube("-n", namespace, "get", "jobs,pods,secrets", "-o", "name")
        return run["name"] not in left and dataset not in left

    wait_for("the garbage collector to delete the Job, its pod and the dataset Secret", collected, 120)
