"""Evaluation Jobs and dataset Secrets, rendered as plain dicts: names, labels, the restricted pod, pruning.

The operator keeps the thumbs-down feedback it collected in a Secret named by its content hash (the
``/feedback/export`` format), and runs ``canopy-operator eval`` in a Job that mounts it.
"""

from __future__ import annotations

import base64
import hashlib
import re
from datetime import datetime
from typing import Any

from canopy_operator.api.base import API_VERSION, KIND, parse_duration
from canopy_operator.api.spec import EvaluationSpec, PromptExperimentSpec
from canopy_operator.api.status import PromptExperimentStatus
from canopy_operator.core.evaluation.trigger import Trigger

MANAGED_BY = "canopy-operator"


LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"


LABEL_COMPONENT = "app.kubernetes.io/component"


LABEL_EXPERIMENT = "canopy.genaiops.io/experiment"


COMPONENT_EVALUATION = "evaluation"


COMPONENT_DATASET = "evaluation-dataset"


ANNOTATION_TEST_ID = "canopy.genaiops.io/test-id"


ANNOTATION_TRIGGER = "canopy.genaiops.io/trigger"


ANNOTATION_DATASET = "canopy.genaiops.io/dataset-secret"


ANNOTATION_SEED = "canopy.genaiops.io/seed"


DATASET_KEY = "dataset.yaml"


DATASET_MOUNT = "/var/run/canopy/dataset"


CONTAINER_NAME = "eval"


API_KEY_ENV = "CANOPY_JUDGE_API_KEY"


API_KEY_SECRET_KEY = "api-key"  # noqa: S105 - the key name inside the Secret, not a secret


#: Exit code of the runner for a bad dataset or bad arguments: the Job fails at once, without retries.
EXIT_CONFIG_ERROR = 2


TERMINATION_MESSAGE_LIMIT = 4096


DEFAULT_RESOURCES: dict[str, dict[str, str]] = {
    "requests": {"cpu": "50m", "memory": "128Mi"},
    "limits": {"cpu": "500m", "memory": "256Mi"},
}


_MAX_JOB_NAME = 63


_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _name_with_suffix(base: str, suffix: str, limit: int) -> str:
    head = base[: limit - len(suffix)].rstrip("-.")
    return f"{head}{suffix}"


def experiment_label_value(experiment_name: str) -> str:
    """The experiment's name as a label value (<= 63 characters; long names get a hash suffix)."""
    if len(experiment_name) <= 63 and _LABEL_VALUE.match(experiment_name):
        return experiment_name
    return _name_with_suffix(experiment_name, f"-{_sha(experiment_name)[:8]}", 63)


def eval_selector(experiment_name: str) -> str:
    """Label selector of an experiment's evaluation Jobs."""
    return (
        f"{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_COMPONENT}={COMPONENT_EVALUATION},"
        f"{LABEL_EXPERIMENT}={experiment_label_value(experiment_name)}"
    )


def _labels(experiment_name: str, component: str) -> dict[str, str]:
    return {
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_COMPONENT: component,
        LABEL_EXPERIMENT: experiment_label_value(experiment_name),
    }


def owner_reference(experiment_name: str, experiment_uid: str) -> dict[str, Any]:
    """The PromptExperiment as controlling owner (garbage-collected with it)."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": experiment_name,
        "uid": experiment_uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def dataset_secret_name(experiment_name: str, dataset_yaml: str) -> str:
    """``<experiment>-dataset-<sha8 of the content>``: equal content, equal name."""
    return _name_with_suffix(experiment_name, f"-dataset-{_sha(dataset_yaml)[:8]}", 253)


def render_dataset_secret(
    namespace: str, experiment_name: str, experiment_uid: str, dataset_yaml: str
) -> dict[str, Any]:
    """An immutable Secret holding the dataset under ``dataset.yaml``, owned by the experiment."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": dataset_secret_name(experiment_name, dataset_yaml),
            "namespace": namespace,
            "labels": _labels(experiment_name, COMPONENT_DATASET),
            "ownerReferences": [owner_reference(experiment_name, experiment_uid)],
        },
        "type": "Opaque",
        "immutable": True,
        "data": {DATASET_KEY: base64.b64encode(dataset_yaml.encode("utf-8")).decode("ascii")},
    }


def eval_job_name(experiment_name: str, key: str) -> str:
    """``<experiment>-eval-<sha8 of key>`` within 63 characters; the same key always gives the same name,
    so creating the Job twice is harmless (pass e.g. test id, dataset Secret and a run counter as key)."""
    return _name_with_suffix(experiment_name, f"-eval-{_sha(key)[:8]}", _MAX_JOB_NAME)


def _runner_args(
    *,
    backend_url: str,
    evaluation: EvaluationSpec,
    seed: int,
    request_timeout_seconds: float,
    deadline_seconds: float,
) -> list[str]:
    args = [
        "eval",
        "--dataset",
        f"{DATASET_MOUNT}/{DATASET_KEY}",
        "--backend",
        backend_url,
        "--output",
        "/tmp/results.json",  # noqa: S108 - the pod's private emptyDir
        "--summary",
        "/dev/termination-log",
        "--threshold",
        f"{evaluation.min_challenger_better_rate:g}",
        "--seed",
        str(seed),
        "--timeout",
        f"{request_timeout_seconds:g}",
        "--deadline",
        f"{deadline_seconds:g}",
    ]
    judge = evaluation.judge
    if judge.endpoint:
        args += ["--judge-endpoint", judge.endpoint, "--judge-model", judge.model]
        if judge.api_key_secret:
            args += ["--judge-api-key-env", API_KEY_ENV]
    return args


def _env(evaluation: EvaluationSpec) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": "PYTHONUNBUFFERED", "value": "1"},
        {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},
        {"name": "HOME", "value": "/tmp"},  # noqa: S108 - the pod's private emptyDir
    ]
    secret = evaluation.judge.api_key_secret
    if evaluation.judge.endpoint and secret:
        ref = {"name": secret, "key": API_KEY_SECRET_KEY}
        env.append({"name": API_KEY_ENV, "valueFrom": {"secretKeyRef": ref}})
    return env


def _container_security() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _pod_spec(args: list[str], image: str, evaluation: EvaluationSpec, dataset_secret: str) -> dict[str, Any]:
    container = {
        "name": CONTAINER_NAME,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["canopy-operator"],
        "args": args,
        "env": _env(evaluation),
        "resources": {kind: dict(values) for kind, values in DEFAULT_RESOURCES.items()},
        "securityContext": _container_security(),
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [
            {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - the pod's private emptyDir
            {"name": "dataset", "mountPath": DATASET_MOUNT, "readOnly": True},
        ],
    }
    return {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        # No runAsUser, runAsGroup or fsGroup: the platform picks them (OpenShift's restricted-v2 assigns a UID
        # of the namespace's range and refuses any other); the image runs as any UID with group 0.
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container],
        "volumes": [
            {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
            # Readable by the pod's one user whatever UID it gets (no fsGroup to share a group with).
            {"name": "dataset", "secret": {"secretName": dataset_secret, "defaultMode": 0o444}},
        ],
    }


def render_eval_job(
    *,
    namespace: str,
    experiment_name: str,
    experiment_uid: str,
    job_name: str,
    image: str,
    dataset_secret: str,
    backend_url: str,
    evaluation: EvaluationSpec,
    test_id: str,
    trigger: Trigger,
    seed: int,
    request_timeout_seconds: float = 120.0,
) -> dict[str, Any]:
    """A batch/v1 Job running ``canopy-operator eval`` on the dataset Secret, owned by the experiment.

    The runner is told to stop starting cases a little before ``activeDeadlineSeconds`` so it can still
    write its summary; the judge's API key comes from ``evaluation.judge.apiKeySecret`` (key ``api-key``)
    through the environment and never appears in the manifest.
    """
    active_deadline = max(1, int(parse_duration(evaluation.active_deadline)))
    margin = min(60.0, active_deadline * 0.1)
    args = _runner_args(
        backend_url=backend_url,
        evaluation=evaluation,
        seed=seed,
        request_timeout_seconds=request_timeout_seconds,
        deadline_seconds=max(1.0, active_deadline - margin),
    )
    labels = _labels(experiment_name, COMPONENT_EVALUATION)
    annotations = {
        ANNOTATION_TEST_ID: test_id,
        ANNOTATION_TRIGGER: trigger,
        ANNOTATION_DATASET: dataset_secret,
        ANNOTATION_SEED: str(seed),
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name,
            "namespace": namespace,
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [owner_reference(experiment_name, experiment_uid)],
        },
        "spec": {
            "backoffLimit": evaluation.backoff_limit,
            "activeDeadlineSeconds": active_deadline,
            "ttlSecondsAfterFinished": int(parse_duration(evaluation.ttl_after_finished)),
            "podFailurePolicy": {
                "rules": [
                    {
                        "action": "FailJob",
                        "onExitCodes": {
                            "containerName": CONTAINER_NAME,
                            "operator": "In",
                            "values": [EXIT_CONFIG_ERROR],
                        },
                    },
                    {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
                ]
            },
            "template": {
                "metadata": {"labels": dict(labels), "annotations": dict(annotations)},
                "spec": _pod_spec(args, image, evaluation, dataset_secret),
            },
        },
    }


ANNOTATION_RUN_REQUEST = "canopy.genaiops.io/run-request"


ANNOTATION_NEGATIVES_SEEN = "canopy.genaiops.io/negatives-seen"


ANNOTATION_CASES = "canopy.genaiops.io/cases"


def job_name_for(experiment_name: str, test_id: str, dataset: str, trigger: Trigger, now: datetime) -> str:
    """A fresh Job name per start (a crash between create and status write is caught by adopting the Job)."""
    return eval_job_name(experiment_name, f"{test_id}|{dataset}|{trigger}|{now.isoformat()}")


def seed_for(job_name: str) -> int:
    """The pairwise judge's side-shuffling seed, derived from the Job name (recorded on the Job)."""
    return int(hashlib.sha256(job_name.encode()).hexdigest()[:8], 16)


def start_annotations(status: PromptExperimentStatus, spec: PromptExperimentSpec, trigger: Trigger) -> dict[str, str]:
    """Extra Job annotations that let a run be adopted from the Job alone (after a crash)."""
    out = {
        ANNOTATION_NEGATIVES_SEEN: str(status.negatives.total),
        ANNOTATION_CASES: str(status.negatives.total - status.negatives.trimmed),
    }
    if trigger == "request" and spec.evaluation.run_request:
        out[ANNOTATION_RUN_REQUEST] = spec.evaluation.run_request
    return out
