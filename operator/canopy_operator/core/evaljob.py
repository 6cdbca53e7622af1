"""Evaluation Jobs, rendered and read back as plain dicts (pure: no Kubernetes client, no clock).

The operator keeps the thumbs-down feedback it collected in a Secret named by its content hash (the
``/feedback/export`` format), and runs ``canopy-operator eval`` in a Job that mounts it. The runner writes
a small JSON summary to ``/dev/termination-log``; :func:`parse_job_result` turns the Job and that message
into an :class:`EvalOutcome`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from canopy_operator.api.base import API_VERSION, KIND, parse_duration
from canopy_operator.api.spec import EvaluationSpec
from canopy_operator.api.status import EvaluationRun

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
RUNNER_UID = 65532
API_KEY_ENV = "CANOPY_JUDGE_API_KEY"
API_KEY_SECRET_KEY = "api-key"  # noqa: S105 - the key name inside the Secret, not a secret
#: Exit code of the runner for a bad dataset or bad arguments: the Job fails at once, without retries.
EXIT_CONFIG_ERROR = 2
TERMINATION_MESSAGE_LIMIT = 4096
DEFAULT_RESOURCES: dict[str, dict[str, str]] = {
    "requests": {"cpu": "50m", "memory": "128Mi"},
    "limits": {"cpu": "500m", "memory": "256Mi"},
}

JobState = Literal["Running", "Succeeded", "Failed"]
Trigger = Literal["request", "gate", "negatives"]
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
        "runAsUser": RUNNER_UID,
        "runAsGroup": RUNNER_UID,
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
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUNNER_UID,
            "runAsGroup": RUNNER_UID,
            "fsGroup": RUNNER_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [
            {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
            {"name": "dataset", "secret": {"secretName": dataset_secret, "defaultMode": 0o440}},
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


# --------------------------------------------------------------------------------------------------------
# Reading a Job back


@dataclass(frozen=True)
class EvalSummary:
    """The fields of the runner's summary the operator uses (unknown or malformed fields are None)."""

    cases: int
    scored: int | None = None
    errors: int | None = None
    challenger_better_rate: float | None = None
    threshold: float | None = None
    passed: bool | None = None


@dataclass(frozen=True)
class EvalOutcome:
    """What an evaluation Job amounts to."""

    state: JobState
    reason: str
    """Complete, DeadlineExceeded, BackoffLimitExceeded, ... or Running."""
    message: str
    finished_at: datetime | None = None
    summary: EvalSummary | None = None

    @property
    def passed(self) -> bool | None:
        """The verdict, only for a Job that succeeded with a readable summary."""
        if self.state != "Succeeded" or self.summary is None:
            return None
        return self.summary.passed


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _true_condition(job: Mapping[str, Any], types: Sequence[str]) -> Mapping[str, Any] | None:
    status = job.get("status")
    conditions = status.get("conditions") if isinstance(status, Mapping) else None
    if not isinstance(conditions, list):
        return None
    for cond in conditions:
        if isinstance(cond, Mapping) and cond.get("type") in types and cond.get("status") == "True":
            return cond
    return None


def job_state(job: Mapping[str, Any]) -> tuple[JobState, Mapping[str, Any] | None]:
    """Succeeded (Complete), Failed (Failed or FailureTarget) or Running, with the deciding condition."""
    failed = _true_condition(job, ("Failed", "FailureTarget"))
    if failed is not None:
        return "Failed", failed
    complete = _true_condition(job, ("Complete",))
    if complete is not None:
        return "Succeeded", complete
    return "Running", None


def _count(raw: Mapping[str, Any], key: str) -> int | None:
    value = raw.get(key)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def _fraction(raw: Mapping[str, Any], key: str) -> float | None:
    value = raw.get(key)
    if isinstance(value, int | float) and not isinstance(value, bool) and 0.0 <= value <= 1.0:
        return float(value)
    return None


def _json_objects(termination_message: str | None) -> list[dict[str, Any]]:
    """JSON objects in the message, last first: the whole message, then each line from the end (with
    FallbackToLogsOnError the message may be the runner's last log lines)."""
    if not termination_message:
        return []
    objects = []
    for text in [termination_message, *reversed(termination_message.strip().splitlines())]:
        try:
            raw = json.loads(text)
        except ValueError:
            continue
        if isinstance(raw, dict):
            objects.append(raw)
    return objects


def parse_summary(termination_message: str | None) -> EvalSummary | None:
    """The runner's summary: the last JSON object with an integer ``cases`` >= 0; garbage gives None."""
    for raw in _json_objects(termination_message):
        cases = _count(raw, "cases")
        if cases is None:
            continue
        passed = raw.get("passed")
        return EvalSummary(
            cases=cases,
            scored=_count(raw, "scored"),
            errors=_count(raw, "errors"),
            challenger_better_rate=_fraction(raw, "challenger_better_rate"),
            threshold=_fraction(raw, "threshold"),
            passed=passed if isinstance(passed, bool) else None,
        )
    return None


def parse_runner_error(termination_message: str | None) -> str | None:
    """The runner's own error (``{"error": ...}``, e.g. an unusable dataset), one line, at most 300 chars."""
    for raw in _json_objects(termination_message):
        error = raw.get("error")
        if isinstance(error, str) and error.strip():
            return " ".join(error.split())[:300]
    return None


def _describe(summary: EvalSummary) -> str:
    parts = [f"{summary.scored if summary.scored is not None else '?'}/{summary.cases} cases scored"]
    if summary.errors:
        parts.append(f"{summary.errors} errors")
    if summary.challenger_better_rate is not None:
        rate = f"challenger better in {summary.challenger_better_rate:.0%}"
        if summary.threshold is not None:
            rate += f" (threshold {summary.threshold:.0%})"
        parts.append(rate)
    if summary.passed is not None:
        parts.append("passed" if summary.passed else "not passed")
    return ", ".join(parts)


def parse_job_result(job: Mapping[str, Any], termination_message: str | None) -> EvalOutcome:
    """Read an evaluation Job and its pod's termination message."""
    state, condition = job_state(job)
    summary = parse_summary(termination_message)
    if state == "Running":
        return EvalOutcome(state="Running", reason="Running", message="evaluation running", summary=summary)
    assert condition is not None  # a finished state always comes with its condition
    status = job.get("status")
    finished = _parse_time(condition.get("lastTransitionTime"))
    if finished is None and isinstance(status, Mapping):
        finished = _parse_time(status.get("completionTime"))
    reason = str(condition.get("reason") or ("Complete" if state == "Succeeded" else "Failed"))
    if state == "Failed":
        detail = str(condition.get("message") or "").strip()
        message = f"{reason}: {detail}" if detail else reason
        runner_error = parse_runner_error(termination_message)
        if runner_error is not None:
            message += f"; runner: {runner_error}"
        elif summary is not None:
            message += f" ({_describe(summary)})"
    elif summary is None:
        message = "finished without a readable summary"
    else:
        message = _describe(summary)
    return EvalOutcome(state=state, reason=reason, message=message, finished_at=finished, summary=summary)


def _finish_key(job: Mapping[str, Any]) -> tuple[str, str]:
    _, condition = job_state(job)
    metadata = job.get("metadata") if isinstance(job.get("metadata"), Mapping) else {}
    assert isinstance(metadata, Mapping)
    when = condition.get("lastTransitionTime") if condition is not None else None
    when = when or metadata.get("creationTimestamp") or ""
    return str(when), str(metadata.get("name", ""))


def jobs_to_prune(jobs: Sequence[Mapping[str, Any]], history_limit: int) -> list[str]:
    """Names of finished Jobs beyond the newest ``history_limit`` finished ones (running Jobs are kept)."""
    finished = [job for job in jobs if job_state(job)[0] != "Running"]
    finished.sort(key=_finish_key, reverse=True)
    names = []
    for job in finished[max(0, history_limit) :]:
        metadata = job.get("metadata")
        if isinstance(metadata, Mapping) and isinstance(metadata.get("name"), str):
            names.append(metadata["name"])
    return names


# --------------------------------------------------------------------------------------------------------
# When to start one


@dataclass(frozen=True)
class TriggerInputs:
    """What the trigger decision looks at (all read from the spec, the status and the Job list)."""

    enabled: bool
    job_running: bool
    """An evaluation Job of this experiment has not finished."""
    active_test_id: str | None
    negatives_total: int
    """Thumbs-down entries in the current dataset."""
    new_negatives: int
    """Entries that arrived after the last evaluation started."""
    min_new_negatives: int
    run_request: str | None
    last_run_request: str | None
    """The runRequest value last honoured (kept in the status by the caller)."""
    gate_promotion: bool
    automatic_promotion_pending: bool
    """The test decided for the challenger, policy Automatic, and the promotion waits for the gate."""
    dataset_secret: str | None
    evaluations: Sequence[EvaluationRun] = ()


@dataclass(frozen=True)
class TriggerDecision:
    """Whether to start an evaluation now, why (request, gate or negatives), or why not."""

    trigger: Trigger | None
    reason: str


def _gate_needs_run(inputs: TriggerInputs) -> tuple[bool, str]:
    if not (inputs.gate_promotion and inputs.automatic_promotion_pending):
        return False, ""
    runs = [run for run in inputs.evaluations if run.test_id == inputs.active_test_id]
    if any(run.passed for run in runs):
        return False, "an evaluation of the active test already passed"
    if any(run.dataset_secret == inputs.dataset_secret for run in runs):
        return (
            False,
            "the gate's evaluation of this dataset did not pass; waiting for new negatives or a runRequest",
        )
    return True, "an automatic promotion waits for a passing evaluation"


def should_trigger(inputs: TriggerInputs) -> TriggerDecision:
    """Start an evaluation when asked (changed runRequest), for the promotion gate, or on enough new
    negatives; never while one runs, when disabled, without an active test or without negatives."""
    if not inputs.enabled:
        return TriggerDecision(None, "evaluations are disabled")
    if inputs.job_running:
        return TriggerDecision(None, "an evaluation is running")
    if inputs.active_test_id is None:
        return TriggerDecision(None, "no active test")
    if inputs.negatives_total <= 0 or inputs.dataset_secret is None:
        return TriggerDecision(None, "no negative feedback to evaluate yet")
    if inputs.run_request and inputs.run_request != inputs.last_run_request:
        return TriggerDecision("request", f"runRequest changed to {inputs.run_request!r}")
    gate, why = _gate_needs_run(inputs)
    if gate:
        return TriggerDecision("gate", why)
    if inputs.new_negatives >= inputs.min_new_negatives:
        return TriggerDecision(
            "negatives", f"{inputs.new_negatives} new negatives (at least {inputs.min_new_negatives})"
        )
    wait = f"{inputs.new_negatives}/{inputs.min_new_negatives} new negatives"
    return TriggerDecision(None, f"{why}; {wait}" if why else wait)
