"""Play the job controller and the kubelet for one evaluation Job on envtest (which runs neither).

``finish_job`` does what the cluster would do when the runner's pod ends: the kubelet records the
container's termination (its message is the runner's summary, read from ``/dev/termination-log``) on a
pod labelled ``job-name=<job>`` and owned by the Job; the job controller then sets the Job's
``startTime``/``completionTime``, counters and the terminal conditions (``SuccessCriteriaMet`` +
``Complete``, or ``FailureTarget`` + ``Failed``) through the status subresource.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client import ApiClient

from canopy_operator.core.evaluation.jobs import eval_selector

MERGE = "application/merge-patch+json"


def summary(cases: int, rate: float | None, threshold: float, *, errors: int = 0) -> str:
    """A runner summary line as ``canopy-operator eval`` writes it."""
    passed = None if rate is None else rate >= threshold
    body = {
        "v": 1,
        "cases": cases,
        "scored": cases - errors,
        "errors": errors,
        "challenger_better_rate": rate,
        "threshold": threshold,
        "passed": passed,
    }
    return json.dumps(body, separators=(",", ":"))


async def eval_jobs(api: ApiClient, namespace: str, experiment: str = "exp") -> list[dict[str, Any]]:
    """The experiment's evaluation Jobs as plain dicts, oldest first."""
    jobs = await client.BatchV1Api(api).list_namespaced_job(namespace, label_selector=eval_selector(experiment))
    items = [api.sanitize_for_serialization(job) for job in jobs.items]
    return sorted(items, key=lambda j: (j["metadata"]["creationTimestamp"], j["metadata"]["name"]))


def _stamp(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def _condition(type_: str, reason: str, message: str, at: datetime) -> dict[str, Any]:
    return {
        "type": type_,
        "status": "True",
        "reason": reason,
        "message": message,
        "lastProbeTime": _stamp(at),
        "lastTransitionTime": _stamp(at),
    }


def pod_name(job: dict[str, Any]) -> str:
    """The name of the Job's one pod, as these helpers make it."""
    return f"{job['metadata']['name']}-x7k2p"


async def run_pod(api: ApiClient, job: dict[str, Any], node: str) -> str:
    """The Job's pod bound to ``node`` and running (as the scheduler and the kubelet would make it)."""
    core = client.CoreV1Api(api)
    await _create_pod(api, job, node)
    container = job["spec"]["template"]["spec"]["containers"][0]
    started = _stamp(datetime.now(UTC))
    running = {
        "name": container["name"],
        "image": container["image"],
        "imageID": "",
        "ready": True,
        "restartCount": 0,
        "state": {"running": {"startedAt": started}},
    }
    status = {"status": {"phase": "Running", "startTime": started, "containerStatuses": [running]}}
    await core.patch_namespaced_pod_status(pod_name(job), job["metadata"]["namespace"], status, _content_type=MERGE)  # type: ignore[call-arg]  # a documented **kwargs option
    return pod_name(job)


async def _create_pod(api: ApiClient, job: dict[str, Any], node: str | None = None) -> None:
    core = client.CoreV1Api(api)
    meta = job["metadata"]
    name = meta["name"]
    template = job["spec"]["template"]
    labels = {**template["metadata"].get("labels", {}), "job-name": name, "batch.kubernetes.io/job-name": name}
    owner = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "name": name,
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
    spec = dict(template["spec"])
    if node is not None:
        spec["nodeName"] = node
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": pod_name(job), "labels": labels, "ownerReferences": [owner]},
        "spec": spec,
    }
    await core.create_namespaced_pod(meta["namespace"], pod)  # type: ignore[arg-type]  # dicts serialise as-is


async def _pod(
    api: ApiClient, job: dict[str, Any], message: str | None, exit_code: int, at: datetime, *, create: bool = True
) -> None:
    core = client.CoreV1Api(api)
    meta = job["metadata"]
    name = meta["name"]
    template = job["spec"]["template"]
    if create:
        await _create_pod(api, job)
    container = template["spec"]["containers"][0]
    terminated: dict[str, Any] = {
        "exitCode": exit_code,
        "reason": "Completed" if exit_code == 0 else "Error",
        "startedAt": _stamp(at - timedelta(seconds=30)),
        "finishedAt": _stamp(at),
    }
    if message is not None:
        terminated["message"] = message
    status = {
        "status": {
            "phase": "Succeeded" if exit_code == 0 else "Failed",
            "startTime": _stamp(at - timedelta(seconds=31)),
            "containerStatuses": [
                {
                    "name": container["name"],
                    "image": container["image"],
                    "imageID": "",
                    "ready": False,
                    "restartCount": 0,
                    "state": {"terminated": terminated},
                }
            ],
        }
    }
    await core.patch_namespaced_pod_status(f"{name}-x7k2p", meta["namespace"], status, _content_type=MERGE)  # type: ignore[call-arg]  # a documented **kwargs option


async def finish_job(
    api: ApiClient,
    job: dict[str, Any],
    *,
    message: str | None,
    succeeded: bool = True,
    reason: str = "DeadlineExceeded",
    with_pod: bool = True,
    pod_running: bool = False,
) -> None:
    """End the Job as the cluster would: the pod's termination message, then the Job's terminal status.
    ``pod_running``: the pod exists already (``run_pod``) and only terminates."""
    at = datetime.now(UTC)
    if with_pod:
        await _pod(api, job, message, 0 if succeeded else 1, at, create=not pod_running)
    meta = job["metadata"]
    started = _stamp(at - timedelta(seconds=32))
    if succeeded:
        status: dict[str, Any] = {
            "startTime": started,
            "completionTime": _stamp(at),
            "succeeded": 1,
            "ready": 0,
            "terminating": 0,
            "conditions": [
                _condition("SuccessCriteriaMet", "CompletionsReached", "Reached expected number of succeeded pods", at),
                _condition("Complete", "CompletionsReached", "Reached expected number of succeeded pods", at),
            ],
        }
    else:
        detail = "Job was active longer than specified deadline"
        status = {
            "startTime": started,
            "failed": 1,
            "ready": 0,
            "terminating": 0,
            "conditions": [_condition("FailureTarget", reason, detail, at), _condition("Failed", reason, detail, at)],
        }
    await client.BatchV1Api(api).patch_namespaced_job_status(
        meta["name"],
        meta["namespace"],
        {"status": status},
        _content_type=MERGE,  # type: ignore[call-arg]  # a documented **kwargs option
    )
