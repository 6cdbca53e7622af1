"""The judge's API key goes only where its owner said, and the evaluation runs only an allowed image (issue #14,
finding 1; security-model rule 1).

The attack: ``spec.evaluation.judge.apiKeySecret`` could name any Secret of the namespace and the evaluation
image was the author's choice, so an author who cannot read Secrets got code running in a Pod with that key (or
sent it to a judge endpoint of their own). The operator never reads the key; it reads the Secret's metadata and
refuses to start a Job that would send it elsewhere. Each test runs one evaluation pass against a fake gateway
that records the Jobs it is asked to create.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

import pytest

from canopy_operator.api.conditions import ConditionType as C
from canopy_operator.api.spec import PromptExperimentSpec
from canopy_operator.api.status import Negatives, PromptExperimentStatus
from canopy_operator.core import lifecycle as lc
from canopy_operator.k8s.gateway import Gateway
from canopy_operator.service.evaluations import Evaluations
from canopy_operator.service.settings import Settings
from tests.support.credentials import FakeSecrets, Secret, opted_in

NS = "user1-test"
NOW = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)
OPERATOR_IMAGE = "quay.io/canopy/canopy-operator:0.1.0"
JUDGE = "https://judge.example.com/v1/openai/v1"
KEY = {"api-key": "sk-judge-0123456789abcdef"}


class EvalGateway(FakeSecrets):
    """Secrets, plus the Jobs and dataset Secrets an evaluation pass makes."""

    def __init__(self, *secrets: Secret) -> None:
        super().__init__(*secrets)
        self.jobs: list[dict[str, Any]] = []
        self.created_secrets: list[str] = []

    async def list_jobs(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        return list(self.jobs)

    async def create_job(self, body: dict[str, Any]) -> None:
        self.jobs.append(body)

    async def create_secret(self, body: dict[str, Any]) -> None:
        self.created_secrets.append(body["metadata"]["name"])


def spec(image: str | None = None, **judge: Any) -> PromptExperimentSpec:
    evaluation: dict[str, Any] = {"enabled": True, "runRequest": "now", "judge": judge}
    if image:
        evaluation["image"] = image
    return PromptExperimentSpec.model_validate({"challenger": {"prompt": "Challenger.\n"}, "evaluation": evaluation})


def active(spec_: PromptExperimentSpec) -> PromptExperimentStatus:
    """A running test with thumbs-down feedback: a changed runRequest starts an evaluation."""
    st = lc.start_test(spec_, PromptExperimentStatus(), "Champion.\n", NOW)
    negatives = Negatives(total=3, since_last_evaluation=3, dataset_secret="exp-dataset-0123abcd")
    return st.model_copy(update={"negatives": negatives})


async def evaluate(
    gateway: EvalGateway, spec_: PromptExperimentSpec, settings: Settings
) -> tuple[PromptExperimentStatus, list[tuple[str, str, bool]]]:
    events: list[tuple[str, str, bool]] = []
    body = {"metadata": {"name": "exp", "uid": "uid-1", "namespace": NS}}
    evaluations = Evaluations.for_body(cast(Gateway, gateway), NS, body, settings)
    st, _ = await evaluations.step(spec_, active(spec_), 1, NOW, lambda *event: events.append(event))
    return st, events


def not_started(st: PromptExperimentStatus, events: list[tuple[str, str, bool]], reason: str, *words: str) -> None:
    condition = next(c for c in st.conditions if c.type == C.EVALUATION_PASSED)
    assert (condition.status, condition.reason) == ("False", reason)
    (event,) = [e for e in events if e[0] == "EvaluationNotStarted"]
    assert event[2] is True
    for word in words:
        assert word in condition.message
        assert word in event[1]
    assert KEY["api-key"] not in condition.message + event[1]
    assert st.evaluations == []


SETTINGS = Settings(operator_image=OPERATOR_IMAGE)


async def test_judge_key_secret_without_the_opt_in_label_starts_no_job() -> None:
    gateway = EvalGateway(Secret(dict(KEY), name="judge-key"))
    st, events = await evaluate(gateway, spec(endpoint=JUDGE, apiKeySecret="judge-key"), SETTINGS)
    assert gateway.jobs == []
    not_started(st, events, "CredentialsNotAllowed", f"Secret {NS}/judge-key", "spec.evaluation.judge.apiKeySecret")


async def test_judge_key_is_not_sent_to_an_endpoint_outside_its_allowed_prefixes() -> None:
    gateway = EvalGateway(opted_in("https://judge.example.com/v1/team", name="judge-key", **KEY))
    st, events = await evaluate(gateway, spec(endpoint=JUDGE, apiKeySecret="judge-key"), SETTINGS)
    assert gateway.jobs == []
    not_started(st, events, "CredentialsNotAllowed", "spec.evaluation.judge.endpoint")


async def test_judge_key_is_not_sent_over_plain_http_unless_the_operator_allows_it() -> None:
    endpoint = "http://llamastack.user1-test.svc:8321/v1/openai/v1"
    gateway = EvalGateway(opted_in("http://llamastack.user1-test.svc:8321", name="judge-key", **KEY))
    st, events = await evaluate(gateway, spec(endpoint=endpoint, apiKeySecret="judge-key"), SETTINGS)
    assert gateway.jobs == []
    not_started(st, events, "CredentialsNotAllowed", "http://", "CANOPY_ALLOW_INSECURE_HTTP")
    allowed = Settings(operator_image=OPERATOR_IMAGE, allow_insecure_http=True)
    await evaluate(gateway, spec(endpoint=endpoint, apiKeySecret="judge-key"), allowed)
    assert len(gateway.jobs) == 1


async def test_missing_judge_key_secret_starts_no_job() -> None:
    gateway = EvalGateway()
    st, events = await evaluate(gateway, spec(endpoint=JUDGE, apiKeySecret="judge-key"), SETTINGS)
    assert gateway.jobs == []
    not_started(st, events, "JudgeCredentialsMissing", f"Secret {NS}/judge-key", "not found")


async def test_opted_in_judge_key_reaches_the_job_only_through_a_secret_reference() -> None:
    gateway = EvalGateway(opted_in("https://judge.example.com/v1", name="judge-key", **KEY))
    st, events = await evaluate(gateway, spec(endpoint=JUDGE, apiKeySecret="judge-key"), SETTINGS)
    (job,) = gateway.jobs
    container = job["spec"]["template"]["spec"]["containers"][0]
    refs = [e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e]
    assert {"name": "judge-key", "key": "api-key"} in refs
    assert KEY["api-key"] not in str(job)
    assert container["image"] == OPERATOR_IMAGE
    assert [e[0] for e in events] == ["EvaluationStarted"]
    assert st.evaluations[0].state == "Running"


async def test_judge_without_a_key_needs_no_secret() -> None:
    gateway = EvalGateway()
    await evaluate(gateway, spec(endpoint="http://llamastack:8321/v1/openai/v1"), SETTINGS)
    assert len(gateway.jobs) == 1
    assert gateway.reads == [f"{NS}/exp-negatives"]  # the ledger; no credentials Secret


# -- the evaluation image (operator-level allow-list) -------------------------------------------------------
@pytest.mark.parametrize(
    "image",
    ["docker.io/attacker/miner:latest", "quay.io/canopy/canopy-operator:0.1.0-evil", "quay.io/canopy/evals"],
)
async def test_an_image_off_the_operators_allow_list_starts_no_job(image: str) -> None:
    settings = Settings(operator_image=OPERATOR_IMAGE, evaluation_images=("quay.io/canopy/evals:*",))
    gateway = EvalGateway()
    st, events = await evaluate(gateway, spec(image), settings)
    assert gateway.jobs == []
    assert gateway.created_secrets == []
    not_started(st, events, "EvaluationImageNotAllowed", "spec.evaluation.image", "CANOPY_EVALUATION_IMAGES")


@pytest.mark.parametrize(
    "image", [None, OPERATOR_IMAGE, "quay.io/canopy/evals:1.2", "quay.io/canopy/evals:1.2@sha256:abc"]
)
async def test_the_operators_own_image_or_an_allowed_one_runs(image: str | None) -> None:
    settings = Settings(operator_image=OPERATOR_IMAGE, evaluation_images=("quay.io/canopy/evals:*",))
    gateway = EvalGateway()
    await evaluate(gateway, spec(image), settings)
    (job,) = gateway.jobs
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == (image or OPERATOR_IMAGE)


async def test_without_any_image_the_condition_says_what_to_set() -> None:
    gateway = EvalGateway()
    st, events = await evaluate(gateway, spec(), Settings())
    assert gateway.jobs == []
    not_started(st, events, "EvaluationImageNotAllowed", "CANOPY_OPERATOR_IMAGE")
