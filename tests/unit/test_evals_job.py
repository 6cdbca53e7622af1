"""Rendering the evaluation Job and its dataset Secret, and reading a finished Job back."""

from __future__ import annotations

import base64
import json
import math
from datetime import UTC, datetime
from typing import Any

import pytest

from canopy_operator.api.spec import EvaluationSpec, JudgeSpec
from canopy_operator.core.evaluation.jobs import (
    ANNOTATION_DATASET_PARTS,
    API_KEY_ENV,
    DATASET_KEY,
    FINISH_SECONDS,
    LABEL_EXPERIMENT,
    MIN_DEADLINE_SECONDS,
    STARTUP_SECONDS,
    dataset_secret_name,
    eval_job_name,
    eval_selector,
    experiment_label_value,
    job_deadlines,
    render_dataset_secret,
    render_dataset_secrets,
    render_eval_job,
)
from canopy_operator.core.evaluation.results import parse_job_result
from canopy_operator.core.evaluation.template import JUDGE_TEMPLATE
from canopy_operator.core.export import render_export
from canopy_operator.evals.cli import build_parser

UID = "1b6c4f4e-0000-4000-8000-000000000001"
DATASET = render_export(["A long article about rivers.", "Ünïcode text to summarise."])


def _job(evaluation: EvaluationSpec | None = None, **overrides: Any) -> dict[str, Any]:
    params: dict[str, Any] = {
        "namespace": "user1-test",
        "experiment_name": "summary-tone",
        "experiment_uid": UID,
        "job_name": "summary-tone-eval-0123abcd",
        "image": "quay.io/example/canopy-operator:0.1.0",
        "dataset_secret": dataset_secret_name("summary-tone", DATASET),
        "backend_url": "http://canopy-backend:8000",
        "evaluation": evaluation or EvaluationSpec(),
        "test_id": "t-4f2a",
        "trigger": "negatives",
        "seed": 7,
        "cases": 2,
    }
    params.update(overrides)
    return render_eval_job(**params)


def _judged() -> EvaluationSpec:
    judge = JudgeSpec(endpoint="http://llamastack:8321/v1/openai/v1", model="llama32", api_key_secret="judge-key")
    return EvaluationSpec(enabled=True, judge=judge, min_challenger_better_rate=0.6)


def _container(job: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = job["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def _owner_is_experiment(metadata: dict[str, Any]) -> None:
    assert metadata["ownerReferences"] == [
        {
            "apiVersion": "canopy.genaiops.io/v1alpha1",
            "kind": "PromptExperiment",
            "name": "summary-tone",
            "uid": UID,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


# ---- dataset Secret ------------------------------------------------------------------------------------


def test_dataset_secret_holds_the_dataset_and_is_owned_by_the_experiment() -> None:
    secret = render_dataset_secret("user1-test", "summary-tone", UID, DATASET)
    assert base64.b64decode(secret["data"][DATASET_KEY]).decode("utf-8") == DATASET
    assert secret["metadata"]["namespace"] == "user1-test"
    assert secret["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "canopy-operator"
    assert secret["metadata"]["labels"][LABEL_EXPERIMENT] == "summary-tone"
    assert secret["immutable"] is True
    _owner_is_experiment(secret["metadata"])


def test_dataset_secret_name_follows_the_content_hash() -> None:
    same = render_dataset_secret("ns", "summary-tone", UID, DATASET)["metadata"]["name"]
    again = render_dataset_secret("ns", "summary-tone", UID, DATASET)["metadata"]["name"]
    other = render_dataset_secret("ns", "summary-tone", UID, DATASET + "- prompt: x\n")["metadata"]["name"]
    assert same == again
    assert same != other
    assert same.startswith("summary-tone-dataset-")
    assert len(same.rsplit("-", 1)[1]) == 8


def test_dataset_secret_name_fits_for_a_very_long_experiment_name() -> None:
    name = dataset_secret_name("x" * 253, DATASET)
    assert len(name) <= 253
    assert len(f"{name}-999") <= 253  # room for the last part's suffix
    assert "-dataset-" in name


def test_a_dataset_of_one_part_is_one_secret_as_before() -> None:
    name = dataset_secret_name("summary-tone", DATASET)
    (secret,) = render_dataset_secrets("ns", "summary-tone", UID, name, [DATASET])
    assert secret == render_dataset_secret("ns", "summary-tone", UID, DATASET)
    assert set(secret["data"]) == {DATASET_KEY, "judge_prompt.txt"}


# ---- Job -------------------------------------------------------------------------------------------------


def test_eval_job_pod_security_is_restricted() -> None:
    job = _job(_judged())
    pod = job["spec"]["template"]["spec"]
    container = _container(job)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert not {"runAsUser", "runAsGroup", "fsGroup"} & (set(pod["securityContext"]) | set(sc))
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    assert pod["restartPolicy"] == "Never"


def test_eval_job_mounts_tmp_and_the_dataset_read_only() -> None:
    job = _job()
    pod = job["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["name"]: m for m in _container(job)["volumeMounts"]}
    assert "emptyDir" in volumes["tmp"]
    assert mounts["tmp"]["mountPath"] == "/tmp"
    assert volumes["dataset"]["secret"]["secretName"] == dataset_secret_name("summary-tone", DATASET)
    assert volumes["dataset"]["secret"]["defaultMode"] == 0o444
    assert mounts["dataset"]["readOnly"] is True
    assert job["metadata"]["annotations"][ANNOTATION_DATASET_PARTS] == "1"  # several parts: test_ledger_shards


def test_eval_job_is_owned_labelled_and_bounded() -> None:
    job = _job(EvaluationSpec(active_deadline="20m", backoff_limit=2, ttl_after_finished="1h"))
    meta = job["metadata"]
    _owner_is_experiment(meta)
    assert meta["labels"][LABEL_EXPERIMENT] == "summary-tone"
    assert meta["labels"]["app.kubernetes.io/managed-by"] == "canopy-operator"
    assert meta["annotations"]["canopy.genaiops.io/test-id"] == "t-4f2a"
    spec = job["spec"]
    assert (spec["activeDeadlineSeconds"], spec["backoffLimit"], spec["ttlSecondsAfterFinished"]) == (
        MIN_DEADLINE_SECONDS,  # two cases need far less than activeDeadline (20m): the floor
        2,
        3600,
    )
    container = _container(job)
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert set(container["resources"]) == {"requests", "limits"}
    assert {"cpu", "memory"} <= set(container["resources"]["limits"])


def test_eval_job_selector_matches_its_labels() -> None:
    labels = _job()["metadata"]["labels"]
    selector = dict(part.split("=", 1) for part in eval_selector("summary-tone").split(","))
    assert selector.items() <= labels.items()


def test_eval_job_takes_the_judge_key_from_a_secret_reference_only() -> None:
    job = _job(_judged())
    container = _container(job)
    env = {e["name"]: e for e in container["env"]}
    assert env[API_KEY_ENV] == {
        "name": API_KEY_ENV,
        "valueFrom": {"secretKeyRef": {"name": "judge-key", "key": "api-key"}},
    }
    assert "value" not in env[API_KEY_ENV]
    args = container["args"]
    assert args[args.index("--judge-api-key-env") + 1] == API_KEY_ENV
    assert "--judge-api-key-file" not in args


def test_eval_job_without_judge_endpoint_passes_no_judge_settings() -> None:
    container = _container(_job(EvaluationSpec(judge=JudgeSpec(api_key_secret="judge-key"))))
    assert not [a for a in container["args"] if a.startswith("--judge")]
    assert API_KEY_ENV not in {e["name"] for e in container["env"]}


def test_eval_job_args_are_accepted_by_the_runner_cli() -> None:
    container = _container(_job(_judged()))
    assert container["command"] == ["canopy-operator"]
    assert container["args"][0] == "eval"
    args = build_parser().parse_args(container["args"][1:])
    assert args.backend == "http://canopy-backend:8000"
    assert str(args.dataset) == f"/var/run/canopy/dataset/{DATASET_KEY}"
    assert args.judge_endpoint == "http://llamastack:8321/v1/openai/v1"
    assert (args.threshold, args.seed) == (0.6, 7)
    assert str(args.summary) == "/dev/termination-log"
    deadline = _job(_judged())["spec"]["activeDeadlineSeconds"]
    # stops starting cases one case budget before it cancels the last ones, which leaves the pod's start-up
    # and the summary's write inside activeDeadlineSeconds
    assert 0 < args.deadline == args.hard_deadline - 30 < deadline
    assert args.hard_deadline + STARTUP_SECONDS + FINISH_SECONDS == deadline
    assert args.concurrency == 4
    assert args.skip_unreviewed_judge is True


@pytest.mark.parametrize(
    ("cases", "evaluation", "active", "capped"),
    [
        (0, EvaluationSpec(), MIN_DEADLINE_SECONDS, False),
        # 1000 cases in rounds of 4 at 30 s, one more round of slack, 10 % margin, start-up and finish
        (1000, EvaluationSpec(), math.ceil(60 + 251 * 30 * 1.1 + 20), False),
        (1000, EvaluationSpec(concurrency=8, case_budget="10s"), math.ceil(60 + 126 * 10 * 1.1 + 20), False),
        (1000, EvaluationSpec(active_deadline="1h"), 3600, True),
    ],
)
def test_the_deadline_fits_the_cases(cases: int, evaluation: EvaluationSpec, active: int, capped: bool) -> None:
    deadlines = job_deadlines(cases, evaluation)
    assert (deadlines.active, deadlines.capped) == (active, capped)
    job = _job(evaluation, cases=cases)
    assert job["spec"]["activeDeadlineSeconds"] == active
    assert deadlines.stop_starting < deadlines.hard < deadlines.active


def test_the_dataset_secret_carries_the_judge_template_the_export_names() -> None:
    secret = render_dataset_secret("ns", "summary-tone", UID, DATASET)
    assert base64.b64decode(secret["data"]["judge_prompt.txt"]).decode() == JUDGE_TEMPLATE
    assert "prompt_template: judge_prompt.txt" in DATASET


def test_eval_job_name_is_stable_and_a_valid_label_value() -> None:
    long_name = "an-experiment-with-a-name-far-longer-than-any-label-value-may-be-in-kubernetes"
    first = eval_job_name(long_name, "t-4f2a/dataset-1/negatives/3")
    assert first == eval_job_name(long_name, "t-4f2a/dataset-1/negatives/3")
    assert first != eval_job_name(long_name, "t-4f2a/dataset-1/negatives/4")
    assert len(first) <= 63
    assert first[0].isalnum()
    assert first[-1].isalnum()


def test_experiment_label_value_fits_the_label_limit() -> None:
    assert experiment_label_value("short") == "short"
    long_value = experiment_label_value("e" * 100)
    assert len(long_value) <= 63
    assert long_value != experiment_label_value("e" * 99)


# ---- reading a Job back ---------------------------------------------------------------------------------

T1 = "2026-05-01T10:00:00Z"
SUMMARY = {
    "v": 1,
    "cases": 12,
    "scored": 11,
    "errors": 1,
    "challenger_better_rate": 0.75,
    "threshold": 0.5,
    "passed": True,
}


def _status(*conditions: dict[str, str], **extra: Any) -> dict[str, Any]:
    return {"metadata": {"name": "j"}, "status": {"conditions": list(conditions), **extra}}


def _cond(type_: str, reason: str = "", message: str = "", status: str = "True") -> dict[str, str]:
    return {"type": type_, "status": status, "reason": reason, "message": message, "lastTransitionTime": T1}


def test_job_without_finished_condition_is_running() -> None:
    outcome = parse_job_result(_status(active=1), None)
    assert outcome.state == "Running"
    assert outcome.finished_at is None
    assert outcome.passed is None


def test_completed_job_reports_the_summary_verdict() -> None:
    outcome = parse_job_result(_status(_cond("Complete")), json.dumps(SUMMARY))
    assert outcome.state == "Succeeded"
    assert outcome.passed is True
    assert outcome.summary is not None
    assert outcome.summary.challenger_better_rate == 0.75
    assert outcome.finished_at == datetime(2026, 5, 1, 10, 0, tzinfo=UTC)
    assert "11/12 cases scored" in outcome.message
    assert "75%" in outcome.message


@pytest.mark.parametrize(
    ("reason", "message"),
    [
        ("DeadlineExceeded", "Job was active longer than specified deadline"),
        ("BackoffLimitExceeded", "Job has reached the specified backoff limit"),
    ],
)
def test_failed_job_reports_the_failure_reason(reason: str, message: str) -> None:
    outcome = parse_job_result(_status(_cond("Failed", reason, message)), None)
    assert outcome.state == "Failed"
    assert outcome.reason == reason
    assert outcome.message.startswith(f"{reason}: {message}")
    assert outcome.passed is None


def test_failed_job_never_passes_even_if_its_summary_says_so() -> None:
    outcome = parse_job_result(_status(_cond("Failed", "BackoffLimitExceeded")), json.dumps(SUMMARY))
    assert outcome.state == "Failed"
    assert outcome.passed is None
    assert "11/12 cases scored" in outcome.message


def test_failure_target_counts_as_failed() -> None:
    outcome = parse_job_result(_status(_cond("FailureTarget", "PodFailurePolicy", "exit code 2")), None)
    assert outcome.state == "Failed"
    assert outcome.reason == "PodFailurePolicy"


def test_failed_job_shows_the_runner_error() -> None:
    message = json.dumps({"error": "/var/run/canopy/dataset/dataset.yaml: not valid YAML"})
    outcome = parse_job_result(_status(_cond("Failed", "PodFailurePolicy", "exit code 2")), message)
    assert "runner: /var/run/canopy/dataset/dataset.yaml: not valid YAML" in outcome.message


def test_false_conditions_do_not_finish_a_job() -> None:
    outcome = parse_job_result(_status(_cond("Failed", "X", status="False")), None)
    assert outcome.state == "Running"


def test_completion_time_is_used_when_the_condition_has_no_time() -> None:
    job = _status({"type": "Complete", "status": "True"}, completionTime="2026-05-01T11:00:00Z")
    outcome = parse_job_result(job, json.dumps(SUMMARY))
    assert outcome.finished_at == datetime(2026, 5, 1, 11, 0, tzinfo=UTC)
    assert outcome.reason == "Complete"


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "Traceback (most recent call last):\n  File x\nKeyError: 'x'",
        "[1, 2, 3]",
        '{"cases": "twelve", "passed": true}',
        '{"cases": -1, "passed": true}',
        '{"cases": true, "passed": true}',
        '{"cases": 3, "passed"',
        "\x00\xff{}",
    ],
)
def test_garbage_termination_message_gives_no_verdict(garbage: str) -> None:
    outcome = parse_job_result(_status(_cond("Complete")), garbage)
    assert outcome.state == "Succeeded"
    assert outcome.summary is None
    assert outcome.passed is None
    assert outcome.message == "finished without a readable summary"


def test_summary_with_bad_fields_keeps_only_the_good_ones() -> None:
    raw = json.dumps({"cases": 4, "scored": "x", "challenger_better_rate": 3.5, "passed": "yes"})
    outcome = parse_job_result(_status(_cond("Complete")), raw)
    assert outcome.summary is not None
    assert (outcome.summary.cases, outcome.summary.scored) == (4, None)
    assert outcome.summary.challenger_better_rate is None
    assert outcome.passed is None


def test_summary_is_found_at_the_end_of_log_lines() -> None:
    logs = 'starting\n{"event": "x"}\n' + json.dumps({**SUMMARY, "passed": False})
    outcome = parse_job_result(_status(_cond("Complete")), logs)
    assert outcome.passed is False
