"""Evaluation Jobs and dataset Secrets, rendered as plain dicts: names, labels, the restricted pod, pruning.

The operator keeps the thumbs-down feedback it collected in a Secret named by its content hash (the
``/feedback/export`` format, with the judge template it names beside it), and runs ``canopy-operator eval``
in a Job that mounts it. A dataset larger than one Secret holds is split into parts (:func:`split_dataset`),
each a complete export document in its own Secret, mounted together as one folder of ``*_tests.yaml`` suites
(:func:`render_dataset_secrets`). The Job's deadline is derived from the number of cases (:func:`job_deadlines`).
Each run's per-case results are kept in Secrets ``<job>-results-<n>`` owned by the experiment
(:func:`render_results_secret`), so they outlive the Job and its pod.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from canopy_operator.api.base import API_VERSION, KIND, parse_duration
from canopy_operator.api.spec import EvaluationSpec, PromptExperimentSpec
from canopy_operator.api.status import PromptExperimentStatus
from canopy_operator.core.evaluation.template import JUDGE_TEMPLATE, JUDGE_TEMPLATE_FILE
from canopy_operator.core.evaluation.trigger import Trigger
from canopy_operator.core.export import render_export

MANAGED_BY = "canopy-operator"


LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"


LABEL_COMPONENT = "app.kubernetes.io/component"


LABEL_EXPERIMENT = "canopy.genaiops.io/experiment"


COMPONENT_EVALUATION = "evaluation"


COMPONENT_DATASET = "evaluation-dataset"


COMPONENT_RESULTS = "evaluation-results"


LABEL_RESULTS_OF = "canopy.genaiops.io/evaluation"


RESULTS_KEY = "results.jsonl"


ANNOTATION_TEST_ID = "canopy.genaiops.io/test-id"


ANNOTATION_TRIGGER = "canopy.genaiops.io/trigger"


ANNOTATION_DATASET = "canopy.genaiops.io/dataset-secret"


ANNOTATION_SEED = "canopy.genaiops.io/seed"


#: On a Job and on a dataset's Secrets: how many Secrets the dataset takes (``1`` for one ``dataset.yaml``).
ANNOTATION_DATASET_PARTS = "canopy.genaiops.io/dataset-parts"


DATASET_KEY = "dataset.yaml"


DATASET_MOUNT = "/var/run/canopy/dataset"


#: What one dataset part's YAML is aimed at (estimated from the prompts' JSON before rendering).
DATASET_PART_BYTES = 512 * 1024
#: The most YAML one part may hold once rendered: with the judge template, well inside a Secret's 1 MiB.
DATASET_PART_LIMIT = 768 * 1024
#: Parts are numbered ``-1`` to ``-999`` after the first Secret's name.
MAX_DATASET_PARTS = 999
_DATASET_FORMAT = "canopy-dataset/2"


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


#: Seconds allowed for the pod to start (image pull, Python) before the runner's own clock starts.
STARTUP_SECONDS = 60.0
#: Seconds the runner keeps after cancelling its last cases, to write the summary and exit.
FINISH_SECONDS = 20.0
#: Share of the cases' expected time added as a margin.
DEADLINE_MARGIN = 0.1
#: The shortest deadline a Job gets, whatever the case count.
MIN_DEADLINE_SECONDS = 300


@dataclass(frozen=True)
class Deadlines:
    """How long an evaluation Job may take, and the runner's own limits inside it (seconds)."""

    active: int
    """The Job's activeDeadlineSeconds."""
    stop_starting: float
    """The runner starts no case after this (measured from its own start)."""
    hard: float
    """The runner cancels cases still running at this point and writes its summary."""
    request_timeout: float
    """Per backend or judge request."""
    derived: int
    """What the cases need, before the cap (activeDeadline)."""

    @property
    def capped(self) -> bool:
        return self.derived > self.active


def job_deadlines(cases: int, evaluation: EvaluationSpec) -> Deadlines:
    """The deadline that fits the work: start-up, then the cases in rounds of ``concurrency`` at
    ``caseBudget`` each plus one more case's worth for the last ones started, a 10 % margin, and the time to
    finish; at least five minutes, at most ``activeDeadline``. The runner stops starting cases one case
    budget before its hard deadline, which leaves the start-up and finishing time inside the Job's."""
    budget = max(1.0, parse_duration(evaluation.case_budget))
    rounds = math.ceil(max(0, cases) / evaluation.concurrency)
    work = (rounds + 1) * budget * (1 + DEADLINE_MARGIN)
    derived = max(MIN_DEADLINE_SECONDS, math.ceil(STARTUP_SECONDS + work + FINISH_SECONDS))
    cap = max(1, int(parse_duration(evaluation.active_deadline)))
    active = min(derived, cap)
    hard = max(1.0, active - STARTUP_SECONDS - FINISH_SECONDS)
    stop = max(0.0, hard - budget)
    return Deadlines(
        active=active, stop_starting=stop, hard=hard, request_timeout=min(120.0, max(10.0, budget)), derived=derived
    )


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


def dataset_secret_name(experiment_name: str, content: str) -> str:
    """``<experiment>-dataset-<sha8 of the content>``: equal content, equal name (within 249 characters, so
    a part's ``-<n>`` fits too). The operator passes :func:`dataset_digest` of the prompts as ``content``."""
    return _name_with_suffix(experiment_name, f"-dataset-{_sha(content)[:8]}", 253 - len(f"-{MAX_DATASET_PARTS}"))


def dataset_part_name(dataset_secret: str, index: int) -> str:
    """The Secret of part ``index`` of the dataset named ``dataset_secret``: itself for part 0, else ``-<index>``."""
    if not 0 <= index < MAX_DATASET_PARTS:
        raise ValueError(f"a dataset has at most {MAX_DATASET_PARTS} parts")
    return dataset_secret if index == 0 else f"{dataset_secret}-{index}"


def dataset_part_key(index: int) -> str:
    """The file of part ``index`` in the Secret and in the pod's dataset folder (sorted as the parts are)."""
    return f"dataset-{index:03d}_tests.yaml"


def dataset_digest(prompts: Sequence[str]) -> str:
    """sha256 of what the dataset Secrets hold, without rendering them: the prompts in order, and the format
    (the export's header, the judge template and how parts are cut). Cheap enough for every poll."""
    digest = hashlib.sha256()
    format_ = [_DATASET_FORMAT, DATASET_PART_BYTES, DATASET_PART_LIMIT, render_export([]), JUDGE_TEMPLATE]
    digest.update(json.dumps(format_, ensure_ascii=False).encode("utf-8"))
    digest.update(json.dumps(list(prompts), ensure_ascii=False).encode("utf-8"))
    return digest.hexdigest()


def split_dataset(
    prompts: Sequence[str], target: int = DATASET_PART_BYTES, limit: int = DATASET_PART_LIMIT
) -> tuple[str, ...]:
    """The export of ``prompts`` in parts, in order: each part is :func:`render_export` of consecutive prompts
    (a complete ``/feedback/export`` document, byte-for-byte the backend's), at most ``limit`` bytes. One part
    (maybe of no prompts) when their estimated YAML is under ``target``; a part rendered over ``limit`` (text
    the YAML escapes a lot) is cut in two until it fits. Pure, deterministic, and slow (PyYAML's pure emitter,
    which the byte-for-byte match needs): run it off the event loop."""
    chunks: list[list[str]] = [[]]
    size = 0
    for prompt in prompts:
        estimate = len(json.dumps(prompt, ensure_ascii=False).encode("utf-8")) * 11 // 10 + 40
        if chunks[-1] and size + estimate > target:
            chunks.append([])
            size = 0
        chunks[-1].append(prompt)
        size += estimate
    parts = [part for chunk in chunks for part in _render_within(chunk, limit)]
    if len(parts) > MAX_DATASET_PARTS:
        raise ValueError(f"the dataset needs {len(parts)} parts, more than {MAX_DATASET_PARTS}")
    return tuple(parts)


def _render_within(prompts: list[str], limit: int) -> list[str]:
    text = render_export(prompts)
    if len(text.encode("utf-8")) <= limit:
        return [text]
    if len(prompts) <= 1:
        raise ValueError(f"one prompt renders to more than {limit} bytes of dataset")
    half = len(prompts) // 2
    return _render_within(prompts[:half], limit) + _render_within(prompts[half:], limit)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def render_dataset_secrets(
    namespace: str, experiment_name: str, experiment_uid: str, dataset_secret: str, parts: Sequence[str]
) -> list[dict[str, Any]]:
    """The immutable Secrets of a dataset (``parts`` from :func:`split_dataset`), owned by the experiment, in the
    order to create them: the first Secret, ``dataset_secret`` (the name status and the Job record), comes
    last, so once it exists every part does.

    One part: ``dataset.yaml`` and the judge template it names beside it (``judge_prompt.txt``). Several: part
    ``n`` in Secret ``<dataset_secret>-<n>`` (``dataset_secret`` itself for part 0) under
    ``dataset-<nnn>_tests.yaml``, each with ``judge_prompt.txt`` beside it, so every Secret is a suite folder
    of its own, and annotated with the part count."""
    if not parts:
        raise ValueError("a dataset has at least one part (maybe of no prompts)")
    template = _b64(JUDGE_TEMPLATE)
    secrets = []
    for index, text in enumerate(parts):
        metadata: dict[str, Any] = {
            "name": dataset_part_name(dataset_secret, index),
            "namespace": namespace,
            "labels": _labels(experiment_name, COMPONENT_DATASET),
            "ownerReferences": [owner_reference(experiment_name, experiment_uid)],
        }
        key = DATASET_KEY
        if len(parts) > 1:
            key = dataset_part_key(index)
            metadata["annotations"] = {ANNOTATION_DATASET: dataset_secret, ANNOTATION_DATASET_PARTS: str(len(parts))}
        data = {key: _b64(text), JUDGE_TEMPLATE_FILE: template}
        secret = {"apiVersion": "v1", "kind": "Secret", "metadata": metadata, "type": "Opaque", "immutable": True}
        secrets.append({**secret, "data": data})
    return [*secrets[1:], secrets[0]]


def render_dataset_secret(
    namespace: str, experiment_name: str, experiment_uid: str, dataset_yaml: str
) -> dict[str, Any]:
    """An immutable Secret holding a one-part dataset under ``dataset.yaml`` and the judge template it names
    beside it (``judge_prompt.txt``), owned by the experiment and named by the hash of ``dataset_yaml``."""
    name = dataset_secret_name(experiment_name, dataset_yaml)
    return render_dataset_secrets(namespace, experiment_name, experiment_uid, name, [dataset_yaml])[0]


def results_secret_name(job_name: str, shard: int) -> str:
    """``<job>-results-<shard>``: named by the run, so the operator can find and delete them by name."""
    return f"{job_name}-results-{shard}"


def render_results_secret(
    namespace: str, experiment_name: str, experiment_uid: str, job_name: str, shard: int, jsonl: str
) -> dict[str, Any]:
    """An immutable Secret with one shard of a run's per-case results (``results.jsonl``), owned by the
    experiment (not the Job: the results outlive it). A Secret, since the judge's reasons may quote inputs."""
    labels = {**_labels(experiment_name, COMPONENT_RESULTS), LABEL_RESULTS_OF: job_name}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": results_secret_name(job_name, shard),
            "namespace": namespace,
            "labels": labels,
            "ownerReferences": [owner_reference(experiment_name, experiment_uid)],
        },
        "type": "Opaque",
        "immutable": True,
        "data": {RESULTS_KEY: base64.b64encode(jsonl.encode("utf-8")).decode("ascii")},
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
    deadlines: Deadlines,
    dataset_parts: int = 1,
) -> list[str]:
    # One part is one file; several are the suites of one folder (the runner runs every *_tests.yaml in it).
    dataset = ["--dataset", f"{DATASET_MOUNT}/{DATASET_KEY}"] if dataset_parts == 1 else ["--suite", DATASET_MOUNT]
    args = [
        "eval",
        *dataset,
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
        f"{deadlines.request_timeout:g}",
        "--deadline",
        f"{deadlines.stop_starting:g}",
        "--hard-deadline",
        f"{deadlines.hard:g}",
        "--concurrency",
        str(evaluation.concurrency),
    ]
    if not evaluation.judge_unreviewed:
        args.append("--skip-unreviewed-judge")
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


def _dataset_volume(dataset_secret: str, dataset_parts: int) -> dict[str, Any]:
    """The dataset's Secret as the ``dataset`` volume; several parts projected into one folder, each Secret's
    suite file by name and the judge template once (from the first)."""
    # Readable by the pod's one user whatever UID it gets (no fsGroup to share a group with).
    if dataset_parts == 1:
        return {"name": "dataset", "secret": {"secretName": dataset_secret, "defaultMode": 0o444}}
    sources = []
    for index in range(dataset_parts):
        key = dataset_part_key(index)
        items = [{"key": key, "path": key}]
        if index == 0:
            items.append({"key": JUDGE_TEMPLATE_FILE, "path": JUDGE_TEMPLATE_FILE})
        sources.append({"secret": {"name": dataset_part_name(dataset_secret, index), "items": items}})
    return {"name": "dataset", "projected": {"sources": sources, "defaultMode": 0o444}}


def _pod_spec(
    args: list[str], image: str, evaluation: EvaluationSpec, dataset_secret: str, dataset_parts: int = 1
) -> dict[str, Any]:
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
            _dataset_volume(dataset_secret, dataset_parts),
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
    cases: int,
    dataset_parts: int = 1,
) -> dict[str, Any]:
    """A batch/v1 Job running ``canopy-operator eval`` on the dataset Secret (and its other parts, if
    ``dataset_parts`` > 1: :func:`render_dataset_secrets`), owned by the experiment.

    Its deadline fits its ``cases`` (:func:`job_deadlines`), and the runner is told when to stop starting
    cases and when to cancel the last ones, so it can still write its summary; the judge's API key comes
    from ``evaluation.judge.apiKeySecret`` (key ``api-key``) through the environment and never appears in
    the manifest.
    """
    deadlines = job_deadlines(cases, evaluation)
    if not 1 <= dataset_parts <= MAX_DATASET_PARTS:
        raise ValueError(f"a dataset has 1 to {MAX_DATASET_PARTS} parts")
    args = _runner_args(
        backend_url=backend_url, evaluation=evaluation, seed=seed, deadlines=deadlines, dataset_parts=dataset_parts
    )
    labels = _labels(experiment_name, COMPONENT_EVALUATION)
    annotations = {
        ANNOTATION_TEST_ID: test_id,
        ANNOTATION_TRIGGER: trigger,
        ANNOTATION_DATASET: dataset_secret,
        ANNOTATION_DATASET_PARTS: str(dataset_parts),
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
            "activeDeadlineSeconds": deadlines.active,
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
                "spec": _pod_spec(args, image, evaluation, dataset_secret, dataset_parts),
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
