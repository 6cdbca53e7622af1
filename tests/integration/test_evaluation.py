"""Evaluation Jobs, the negative-feedback ledger and the promotion gate, on a real API server with the real
operator running as its shipped RBAC. envtest runs no job controller and no kubelet: tests end Jobs
themselves (``tests/support/eval_jobs.py``) the way those would."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_asyncio import client
from kubernetes_asyncio.client import ApiClient

from canopy_operator.core.evaluation.jobs import (
    ANNOTATION_DATASET_PARTS,
    DATASET_KEY,
    DATASET_MOUNT,
    MIN_DEADLINE_SECONDS,
    dataset_part_key,
)
from canopy_operator.core.evaluation.template import JUDGE_TEMPLATE_FILE
from canopy_operator.core.export import parse_export, render_export
from canopy_operator.core.ledger import LEDGER_KEY, SHARD_BYTES, decode_ledger, decode_manifest, shard_secret_name
from canopy_operator.sources.canopy.client import CanopyClient
from tests.support.envtest import Kubectl
from tests.support.eval_jobs import eval_jobs, finish_job, summary
from tests.support.experiments import (
    CHALLENGER,
    Experiments,
    conditions,
    configmap_text,
    deployed_backend,
    event_reasons,
    vote_like_ui,
)
from tests.support.kopf_runner import run_operator, wait_for

pytestmark = pytest.mark.integration

IMAGE = "quay.io/example/canopy-operator:0.1.0-test"
WAIT = 90.0


@pytest.fixture(autouse=True)
def operator_image(monkeypatch: pytest.MonkeyPatch) -> None:
    """The operator runs as IMAGE, so the Jobs may run it (an evaluation image is the operator's own or on
    its allow-list, never the spec's choice alone)."""
    monkeypatch.setenv("CANOPY_OPERATOR_IMAGE", IMAGE)


async def thumbs(url: str, texts: list[str], rating: str = "thumbs_down") -> None:
    async with CanopyClient(url, timeout=10) as http:
        for text in texts:
            await http.post_feedback(text, f"a summary of {text}", rating, comment="too vague")


async def secret(api: ApiClient, namespace: str, name: str) -> dict[str, Any]:
    obj = await client.CoreV1Api(api).read_namespaced_secret(name, namespace)
    out: dict[str, Any] = api.sanitize_for_serialization(obj)
    return out


def decoded(obj: dict[str, Any], key: str) -> str:
    return base64.b64decode(obj["data"][key]).decode("utf-8")


def owned_by(obj: dict[str, Any], exp: dict[str, Any]) -> bool:
    refs = obj["metadata"].get("ownerReferences") or []
    return refs == [
        {
            "apiVersion": exp["apiVersion"],
            "kind": "PromptExperiment",
            "name": exp["metadata"]["name"],
            "uid": exp["metadata"]["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


def latest_run(status: dict[str, Any]) -> dict[str, Any]:
    runs: list[dict[str, Any]] = status.get("evaluations") or []
    return runs[-1] if runs else {}


async def test_new_negatives_start_an_owned_restricted_job_whose_summary_reaches_status(
    admin_api: ApiClient, operator_kubeconfig: Path, namespace: str, tmp_path: Path, kubectl: Kubectl
) -> None:
    negatives = ["An article about rivers.", "Ünïcode: a report on glaciers.", "A memo about budgets."]
    async with deployed_backend(admin_api, namespace, tmp_path) as kubelet:
        exp = Experiments(admin_api, namespace)
        evaluation = {"enabled": True, "minNewNegatives": 3, "image": IMAGE, "historyLimit": 1}
        await exp.create(kubelet.url, evaluation=evaluation)
        with run_operator(operator_kubeconfig, namespace=namespace):
            await exp.wait_phase("Running", timeout=WAIT)
            await thumbs(kubelet.url, negatives[:2])
            await thumbs(kubelet.url, ["A fine summary."], rating="thumbs_up")
            await exp.wait_status(lambda s: s.get("negatives", {}).get("total") == 2, "2 negatives", timeout=WAIT)
            assert await eval_jobs(admin_api, namespace) == []  # 2 < minNewNegatives
            await thumbs(kubelet.url, negatives[2:])
            await wait_for(lambda: _has_jobs(admin_api, namespace, 1), timeout=WAIT, what="an evaluation Job")
            job = (await eval_jobs(admin_api, namespace))[0]
            body = await exp.get()
            status = await exp.wait_status(lambda s: latest_run(s).get("name") == job["metadata"]["name"], "the run")

            await finish_job(admin_api, job, message=summary(3, 0.67, 0.5))
            status = await exp.wait_status(
                lambda s: latest_run(s).get("state") == "Succeeded", "the evaluation result", timeout=WAIT
            )

            async def result_event_posted() -> bool:
                return "EvaluationSucceeded" in event_reasons(kubectl, namespace)

            await wait_for(result_event_posted, timeout=WAIT, what="the EvaluationSucceeded event")

    assert owned_by(job, body)
    labels = job["metadata"]["labels"]
    assert labels["app.kubernetes.io/managed-by"] == "canopy-operator"
    assert labels["app.kubernetes.io/component"] == "evaluation"
    assert labels["canopy.genaiops.io/experiment"] == "exp"
    spec = job["spec"]
    assert spec["activeDeadlineSeconds"] == MIN_DEADLINE_SECONDS  # 3 cases need far less
    assert spec["backoffLimit"] == 1
    assert spec["ttlSecondsAfterFinished"] == 86400
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    container = pod["containers"][0]
    assert container["image"] == IMAGE
    assert container["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["resources"]["requests"]
    assert container["resources"]["limits"]
    dataset_name = pod["volumes"][1]["secret"]["secretName"]

    dataset = await secret(admin_api, namespace, dataset_name)
    assert owned_by(dataset, body)
    assert decoded(dataset, DATASET_KEY) == render_export(negatives)  # exactly the backend's /feedback/export
    ledger_secret = await secret(admin_api, namespace, "exp-negatives")
    assert owned_by(ledger_secret, body)
    ledger = decode_ledger(decoded(ledger_secret, LEDGER_KEY))
    assert ledger.prompts() == negatives
    assert [e.comment for e in ledger.entries] == ["too vague"] * 3

    run = latest_run(status)
    assert run["trigger"] == "negatives"
    assert run["cases"] == 3
    assert run["challengerBetterRate"] == 0.67
    assert run["passed"] is True
    assert status["negatives"] == {
        "total": 3,
        "sinceLastEvaluation": 0,
        "atLastEvaluation": 3,
        "datasetSecret": dataset_name,
        "ledgerSecret": "exp-negatives",
        "trimmed": 0,
        "awaitingReview": 3,  # the ledger's cases, none with an expected result yet
    }
    assert conditions(status)["EvaluationPassed"]["status"] == "True"
    # Nothing the operator created outlives the experiment once the garbage collector runs (envtest has none):
    # every Secret and Job it made names the experiment as controlling owner, with the experiment's uid.
    made = kubectl(
        "get", "secrets,jobs", "-n", namespace, "-l", "app.kubernetes.io/managed-by=canopy-operator", "-o", "json"
    ).stdout
    items = json.loads(made)["items"]
    assert len(items) == 3  # ledger, dataset, Job
    assert all(owned_by(item, body) for item in items)


async def _has_jobs(api: ApiClient, namespace: str, count: int) -> bool:
    return len(await eval_jobs(api, namespace)) >= count


async def _new_job(api: ApiClient, namespace: str, seen: list[dict[str, Any]]) -> dict[str, Any]:
    """The one Job not among ``seen`` (creationTimestamp has whole seconds: two Jobs can share one)."""
    names = {job["metadata"]["name"] for job in seen}
    fresh = [job for job in await eval_jobs(api, namespace) if job["metadata"]["name"] not in names]
    assert len(fresh) == 1, [job["metadata"]["name"] for job in fresh]
    return fresh[0]


async def test_gate_holds_promotion_until_an_evaluation_passes(
    admin_api: ApiClient, operator_kubeconfig: Path, namespace: str, tmp_path: Path, kubectl: Kubectl
) -> None:
    async with deployed_backend(admin_api, namespace, tmp_path) as kubelet:
        exp = Experiments(admin_api, namespace)
        evaluation = {
            "enabled": True,
            "gatePromotion": True,
            "minNewNegatives": 1000,
            "minChallengerBetterRate": 0.6,
            "image": IMAGE,
        }
        await exp.create(kubelet.url, evaluation=evaluation)
        with run_operator(operator_kubeconfig, namespace=namespace):
            await exp.wait_phase("Running", timeout=WAIT)
            await thumbs(kubelet.url, ["An article about rivers.", "A memo about budgets."])
            await vote_like_ui(kubelet.url, ["challenger"] * 25 + ["champion"] * 5, tag="gate")
            # The test decides for the challenger; the gate holds the promotion and starts an evaluation.
            await wait_for(lambda: _has_jobs(admin_api, namespace, 1), timeout=WAIT, what="the gate's Job")
            status = await exp.wait_phase("AwaitingApproval", timeout=WAIT)
            assert conditions(status)["AwaitingApproval"]["reason"] == "EvaluationGate"
            first = (await eval_jobs(admin_api, namespace))[0]
            assert first["metadata"]["annotations"]["canopy.genaiops.io/trigger"] == "gate"

            # 1. The evaluation times out: still held, and the conditions say why.
            await finish_job(admin_api, first, message=None, succeeded=False, with_pod=False)
            status = await exp.wait_status(lambda s: latest_run(s).get("state") == "Failed", "a failed run")
            await wait_for(lambda: _gate_says(exp, "failed"), timeout=WAIT, what="the gate to report the failure")
            status = await exp.status()
            assert status["phase"] == "AwaitingApproval"
            assert conditions(status)["EvaluationPassed"]["reason"] == "EvaluationFailed"
            assert "DeadlineExceeded" in conditions(status)["AwaitingApproval"]["message"]
            assert "prompt_b" in yaml.safe_load(await configmap_text(admin_api, namespace))["summarize"]

            # 2. Asked again (runRequest, as a Git commit would set it): below the threshold, still held.
            await exp.patch_spec({"evaluation": {"runRequest": "retry-1"}})
            await wait_for(lambda: _has_jobs(admin_api, namespace, 2), timeout=WAIT, what="the requested Job")
            second = await _new_job(admin_api, namespace, seen=[first])
            await finish_job(admin_api, second, message=summary(2, 0.5, 0.6))
            status = await exp.wait_status(
                lambda s: (
                    latest_run(s).get("name") == second["metadata"]["name"]
                    and latest_run(s).get("state") == "Succeeded"
                ),
                "the second result",
            )
            assert latest_run(status)["passed"] is False
            assert status["lastRunRequest"] == "retry-1"
            await wait_for(lambda: _gate_says(exp, "did not pass"), timeout=WAIT, what="the gate to hold")
            assert (await exp.status())["phase"] == "AwaitingApproval"

            # 3. A passing evaluation opens the gate: the challenger is promoted.
            await exp.patch_spec({"evaluation": {"runRequest": "retry-2"}})
            await wait_for(lambda: _has_jobs(admin_api, namespace, 3), timeout=WAIT, what="the third Job")
            third = await _new_job(admin_api, namespace, seen=[first, second])
            await finish_job(admin_api, third, message=summary(2, 1.0, 0.6))
            status = await exp.wait_phase("Concluded", timeout=WAIT)
            assert len(await eval_jobs(admin_api, namespace)) == 3  # one Job per evaluation, none doubled
    assert status["winner"] == "challenger"
    assert [r["trigger"] for r in status["evaluations"]] == ["gate", "request", "request"]
    assert [r["state"] for r in status["evaluations"]] == ["Failed", "Succeeded", "Succeeded"]
    values = yaml.safe_load(await configmap_text(admin_api, namespace))
    assert values["summarize"]["prompt"] == CHALLENGER
    assert "EvaluationFailed" in event_reasons(kubectl, namespace)


async def _gate_says(exp: Experiments, words: str) -> bool:
    status = await exp.status()
    return words in conditions(status).get("AwaitingApproval", {}).get("message", "")


async def test_thumbs_down_survive_a_backend_restart_into_the_ledger_exactly_once(
    admin_api: ApiClient, operator_kubeconfig: Path, namespace: str, tmp_path: Path
) -> None:
    async with deployed_backend(admin_api, namespace, tmp_path) as kubelet:
        exp = Experiments(admin_api, namespace)
        await exp.create(kubelet.url)
        with run_operator(operator_kubeconfig, namespace=namespace):
            await exp.wait_phase("Running", timeout=WAIT)
            await thumbs(kubelet.url, ["Before the restart 1.", "Before the restart 2."])
            await exp.wait_status(lambda s: s.get("negatives", {}).get("total") == 2, "2 negatives", timeout=WAIT)
            # The pod restarts (memory wiped, ids from 1 again); a new thumbs-down arrives afterwards.
            await kubelet.simulator.restart(tmp_path / f"values-{kubelet.rollouts}.yaml")
            await thumbs(kubelet.url, ["After the restart."])
            status = await exp.wait_status(
                lambda s: s.get("negatives", {}).get("total") == 3, "3 negatives", timeout=WAIT
            )
            assert status["collection"]["restartsDetected"] >= 1
    ledger = decode_ledger(decoded(await secret(admin_api, namespace, "exp-negatives"), LEDGER_KEY))
    assert ledger.prompts() == ["Before the restart 1.", "Before the restart 2.", "After the restart."]
    assert ledger.seen == 3


async def test_a_ledger_beyond_one_secret_is_sharded_and_its_dataset_mounted_in_parts(
    admin_api: ApiClient, operator_kubeconfig: Path, namespace: str, tmp_path: Path, kubectl: Kubectl
) -> None:
    """1 300 thumbs-down of 800 characters (about 1.2 MiB, more than a Secret holds): kept whole in immutable
    shards the manifest names with their hashes, and evaluated from a dataset in parts (each Secret a complete
    export) that the Job mounts as one folder of suites; the API server accepts every object as rendered."""
    count = 1300
    text = ("A long report on rivers, budgets and glaciers. " * 17)[:790]
    negatives = [f"Case {i:04d}. {text}" for i in range(count)]
    async with deployed_backend(admin_api, namespace, tmp_path) as kubelet:
        exp = Experiments(admin_api, namespace)
        evaluation = {"enabled": True, "minNewNegatives": count, "image": IMAGE}
        await exp.create(kubelet.url, evaluation=evaluation)
        with run_operator(operator_kubeconfig, namespace=namespace):
            await exp.wait_phase("Running", timeout=WAIT)
            for start in range(0, count, 400):  # over several polls: shards are sealed as the ledger grows
                await thumbs(kubelet.url, negatives[start : start + 400])
            await wait_for(lambda: _has_jobs(admin_api, namespace, 1), timeout=WAIT, what="an evaluation Job")
            job = (await eval_jobs(admin_api, namespace))[0]
            body = await exp.get()
            status = await exp.wait_status(lambda s: latest_run(s).get("name") == job["metadata"]["name"], "the run")

    manifest_secret = await secret(admin_api, namespace, "exp-negatives")
    manifest = decode_manifest(decoded(manifest_secret, LEDGER_KEY))
    assert len(manifest.layout.shards) >= 2
    shards = {}
    for ref in manifest.layout.shards:
        shard = await secret(admin_api, namespace, shard_secret_name("exp", ref.seq))
        assert owned_by(shard, body)
        assert shard["immutable"] is True
        assert shard["metadata"]["labels"]["app.kubernetes.io/component"] == "feedback-ledger"
        assert len(decoded(shard, LEDGER_KEY).encode()) < SHARD_BYTES + 1024
        shards[ref.seq] = decoded(shard, LEDGER_KEY)
    ledger = decode_ledger(decoded(manifest_secret, LEDGER_KEY), shards)  # every hash checked
    assert ledger.prompts() == negatives  # whole, in order, once
    assert (ledger.seen, ledger.trimmed) == (count, 0)

    pod = job["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "dataset"]
    sources = [source["secret"]["name"] for source in volume["projected"]["sources"]]
    dataset_name = status["negatives"]["datasetSecret"]
    parts = int(job["metadata"]["annotations"][ANNOTATION_DATASET_PARTS])
    assert parts >= 2
    assert sources == [dataset_name, *(f"{dataset_name}-{n}" for n in range(1, parts))]
    assert pod["containers"][0]["args"][1:3] == ["--suite", DATASET_MOUNT]
    prompts: list[str] = []
    for index, name in enumerate(sources):
        part = await secret(admin_api, namespace, name)
        assert owned_by(part, body)
        assert part["immutable"] is True
        assert set(part["data"]) == {dataset_part_key(index), JUDGE_TEMPLATE_FILE}
        text = decoded(part, dataset_part_key(index))
        chunk = parse_export(text)
        assert text == render_export(chunk)  # each part is exactly the backend's /feedback/export of its cases
        prompts += chunk
    assert prompts == negatives
    assert latest_run(status)["cases"] == count
    assert status["negatives"]["total"] == count
    assert status["negatives"]["ledgerSecret"] == "exp-negatives"
    made = kubectl(
        "get", "secrets,jobs", "-n", namespace, "-l", "app.kubernetes.io/managed-by=canopy-operator", "-o", "json"
    ).stdout
    items = json.loads(made)["items"]
    assert len(items) == 1 + len(shards) + parts + 1  # manifest, shards, dataset parts, Job: no orphan
    assert all(owned_by(item, body) for item in items)
