"""Evaluation Jobs as real pods under the ``restricted`` Pod Security Standard.

Thumbs-down feedback starts an evaluation: the operator makes a dataset Secret and a Job whose
activeDeadlineSeconds it derives from the case count, the real Job controller runs the operator's own image as
a pod that Pod Security admission lets into a namespace labelled ``pod-security.kubernetes.io/enforce:
restricted``, the runner asks the backend (the in-cluster Service) and a judge (on the node's address), prints
one ``evaluation_case`` line per case and writes its summary as the pod's termination message, and the operator
reads the summary into status and the pod's log into results Secrets the experiment owns. Those outlive the Job
and its pod (``kubectl pexp results`` still reads them); deleting the experiment garbage-collects the Jobs, their
pods, the dataset Secret and the results Secrets.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from canopy_devkit.simulator.app import answer_chunks
from canopy_operator.api.spec import PromptExperimentSpec
from canopy_operator.core.evaluation.jobs import MIN_DEADLINE_SECONDS, job_deadlines
from canopy_operator.core.export import parse_export
from canopy_operator.sources.canopy.client import CanopyClient
from tests.support.fake_judge import FakeJudge
from tests.support.node_e2e import (
    CHALLENGER,
    Cluster,
    Kube,
    backend_manifests,
    events,
    experiment,
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
NAME = "concise-summaries"
RESULTS_OF = "canopy.genaiops.io/evaluation"
#: Evaluation settings whose derived deadline is neither the five-minute floor nor the activeDeadline cap.
EVALUATION = {"caseBudget": "2m", "concurrency": 2, "activeDeadline": "15m"}


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


def _job_pods(kube: Kube, namespace: str, job: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = kube.json("-n", namespace, "get", "pods", "-l", f"job-name={job}")["items"]
    return items


def _runs(kube: Kube, namespace: str) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = (experiment(kube, namespace, NAME).get("status") or {}).get("evaluations") or []
    return runs


def _finished_run(kube: Kube, namespace: str, count: int) -> dict[str, Any] | None:
    """The newest run once there are ``count`` runs and it finished."""
    runs = _runs(kube, namespace)
    return runs[-1] if len(runs) >= count and runs[-1].get("state") != "Running" else None


def _decoded(secret: dict[str, Any], key: str) -> str:
    return base64.b64decode(secret["data"][key]).decode("utf-8")


def _sha16(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _pexp_results(kube: Kube, namespace: str, run: str) -> dict[str, Any]:
    """``kubectl pexp results NAME --run RUN -o json``: the installed plugin, found by kubectl on PATH."""
    venv_bin = Path(sys.executable).parent
    assert (venv_bin / "kubectl-pexp").exists(), f"the plugin is not installed in {venv_bin}"
    env = {**os.environ, "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}"}
    command = ["kubectl", "pexp", "results", NAME, "-n", namespace, "--run", run, "-o", "json"]
    out = subprocess.run(
        [*command, f"--kubeconfig={kube.kubeconfig}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, f"{' '.join(command)} exited {out.returncode}: {out.stderr}"
    doc: dict[str, Any] = json.loads(out.stdout)
    return doc


def _essentials(case: dict[str, Any]) -> dict[str, Any]:
    """What the stored record and the plugin's JSON must agree on."""
    return {
        "i": case["i"],
        "input_sha256": case["input_sha256"],
        "unreviewed": case["unreviewed"],
        "champion": case["champion"]["subset_of"],
        "challenger": case["challenger"]["subset_of"],
        "winner": case["pairwise"]["winner"],
        "position": case["pairwise"]["challenger_position"],
        "error": case["error"],
    }


def test_evaluation_job_runs_restricted_and_its_result_reaches_status(
    cluster: Cluster, installed: Kube, namespace: str
) -> None:
    if cluster.node is None:
        pytest.skip("the judge listens on the real node's address; on an existing cluster there is none to use")
    kube = installed
    kube.apply(backend_manifests(namespace, labels=RESTRICTED))
    kube("-n", namespace, "rollout", "status", "deployment/canopy-backend", "--timeout=180s", timeout=200)
    # the judge prefers the challenger's answer (the simulator's, for the sample's challenger prompt) on every case
    preferred = frozenset("".join(answer_chunks(CHALLENGER, text)) for text in NEGATIVES)
    judge = FakeJudge(marker="never-present", preferred=preferred)
    with serve_judge(judge, cluster.node.layout.node_ip) as judge_url:
        body = sample_experiment(namespace, minVotes=1000)
        body["spec"]["evaluation"] = {
            "enabled": True,
            "minNewNegatives": 3,
            "judge": {"endpoint": judge_url, "model": "judge"},
            **EVALUATION,
        }
        kube.apply([body])
        wait_phase(kube, namespace, "Running", timeout=240)
        _thumbs_down(kube, namespace, NEGATIVES)
        run = wait_for("the evaluation to finish and reach status", lambda: _finished_run(kube, namespace, 1), 300)
        judge_requests = list(judge.requests)

        assert run["state"] == "Succeeded", run
        assert run["cases"] == 3
        assert run["scored"] == 3, run
        assert any("[Answer 1]" in r.content for r in judge_requests), "the runner never asked the judge"
        jobs = _eval_jobs(kube, namespace)
        assert [j["metadata"]["name"] for j in jobs] == [run["name"]]
        job = jobs[0]
        assert job["status"].get("succeeded") == 1
        pods = _job_pods(kube, namespace, run["name"])
        assert pods, "the Job's pod is gone before the test could look at it"
        terminated = pods[0]["status"]["containerStatuses"][0]["state"]["terminated"]
        assert terminated["exitCode"] == 0
        assert '"scored"' in terminated.get("message", ""), "the summary is not the pod's termination message"
        if cluster.restricted_uid is not None:  # admitted as restricted-v2 admits it: the assigned UID, none pinned
            assert pods[0]["spec"]["securityContext"]["runAsUser"] == cluster.restricted_uid
        assert events(kube, namespace, "EvaluationSucceeded")
        dataset = run["datasetSecret"]

        # the Job's deadline is the one derived from the case count and the experiment's spec
        exp = experiment(kube, namespace, NAME)
        deadlines = job_deadlines(run["cases"], PromptExperimentSpec.model_validate(exp["spec"]).evaluation)
        assert job["spec"]["activeDeadlineSeconds"] == deadlines.active
        assert MIN_DEADLINE_SECONDS < deadlines.active == deadlines.derived, "the floor or the cap, not derived"
        args: list[str] = job["spec"]["template"]["spec"]["containers"][0]["args"]
        assert args[args.index("--deadline") + 1] == f"{deadlines.stop_starting:g}"
        assert args[args.index("--hard-deadline") + 1] == f"{deadlines.hard:g}"

        # every negative is an unreviewed case, answered by the pairwise judge only
        assert (run["unreviewed"], exp["status"]["negatives"]["awaitingReview"]) == (3, 3)
        assert (run["passed"], run["challengerBetterRate"]) == (True, 1.0), run
        assert len(judge_requests) == 3, [r.content[:80] for r in judge_requests]

        # the per-case results, read from the pod's log into Secrets the experiment owns
        results = run["results"]
        assert results.get("unavailable") is None, results
        assert (results["cases"], results["truncated"]) == (3, False), results
        assert results["secrets"] == [f"{run['name']}-results-0"]
        labelled = kube("-n", namespace, "get", "secrets", "-l", f"{RESULTS_OF}={run['name']}", "-o", "name")
        assert sorted(labelled.split()) == [f"secret/{name}" for name in sorted(results["secrets"])]
        kept = {name: kube.json("-n", namespace, "get", "secret", name) for name in results["secrets"]}
        for secret in kept.values():
            assert secret["immutable"] is True
            owners = secret["metadata"]["ownerReferences"]
            assert [(o["kind"], o["uid"], o.get("controller")) for o in owners] == [
                ("PromptExperiment", exp["metadata"]["uid"], True)
            ]
        records = [json.loads(line) for s in kept.values() for line in _decoded(s, "results.jsonl").splitlines()]
        prompts = parse_export(_decoded(kube.json("-n", namespace, "get", "secret", dataset), "dataset.yaml"))
        assert sorted(prompts) == sorted(NEGATIVES)
        assert [r["i"] for r in records] == [0, 1, 2]
        for record in records:
            assert record["input_sha256"] == _sha16(prompts[record["i"]]), record
            assert record["unreviewed"] is True, record
            assert record["champion"]["subset_of"] == record["challenger"]["subset_of"] == 1.0, record
            assert "llm_as_judge" not in record["champion"], record  # unreviewed: the course judge is not asked
            assert record["pairwise"]["winner"] == "challenger", record
            assert record["error"] is None, record

        # the results outlive the Job and its pod
        kube("-n", namespace, "delete", "job", run["name"], "--cascade=foreground", "--wait=true", timeout=120)
        wait_for("the Job's pod to be gone", lambda: not _job_pods(kube, namespace, run["name"]), 60, interval=1.0)
        assert not _eval_jobs(kube, namespace)
        for name, before in kept.items():
            after = kube.json("-n", namespace, "get", "secret", name)
            assert after["metadata"]["uid"] == before["metadata"]["uid"], f"{name} was re-created"
            assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"], name
            assert after["data"] == before["data"], name
        assert _runs(kube, namespace)[-1]["results"] == results
        shown = _pexp_results(kube, namespace, run["name"])
        assert (shown["run"], shown["secrets"], shown["cases"]) == (run["name"], results["secrets"], 3), shown
        assert [_essentials(c) for c in shown["results"]] == [_essentials(r) for r in records]

        # a second run (asked for with runRequest) leaves a Job and a pod for the garbage collector
        patch = {"spec": {"evaluation": {"runRequest": "e2e-again"}}}
        kube("-n", namespace, "patch", "pexp", NAME, "--type=merge", "-p", json.dumps(patch))
        again = wait_for("the second evaluation to finish", lambda: _finished_run(kube, namespace, 2), 180)
        assert again["state"] == "Succeeded", again
        assert again["name"] != run["name"]
        assert again["results"]["secrets"] == [f"{again['name']}-results-0"], again

    kube("-n", namespace, "delete", "pexp", NAME, "--wait=true", timeout=180)
    doomed = [again["name"], dataset, *results["secrets"], *again["results"]["secrets"]]

    def collected() -> bool:
        left = kube("-n", namespace, "get", "jobs,pods,secrets", "-o", "name")
        return all(name not in left for name in doomed)

    wait_for("the garbage collector to delete the Job, its pod, the dataset and results Secrets", collected, 120)
