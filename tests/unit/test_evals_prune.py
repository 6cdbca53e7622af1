"""Finished evaluation Jobs beyond historyLimit and their dataset Secrets are deleted by name, without ``list``
on Secrets (issue #14, finding 8: ``list`` returned every Secret's data and was used only for this cleanup)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, cast

from canopy_operator.api.spec import PromptExperimentSpec
from canopy_operator.api.status import EvaluationRun, Negatives, PromptExperimentStatus
from canopy_operator.core import lifecycle as lc
from canopy_operator.core.evaluation.jobs import ANNOTATION_DATASET
from canopy_operator.k8s.gateway import Gateway
from canopy_operator.service.evaluations import Evaluations
from canopy_operator.service.settings import Settings
from tests.support.credentials import FakeSecrets

NS = "user1-test"
NOW = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)
IMAGE = "quay.io/canopy/canopy-operator:0.1.0"


def stamp(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def finished_job(name: str, dataset: str, at: datetime) -> dict[str, Any]:
    condition = {"type": "Complete", "status": "True", "lastTransitionTime": stamp(at)}
    return {
        "metadata": {"name": name, "creationTimestamp": stamp(at), "annotations": {ANNOTATION_DATASET: dataset}},
        "status": {"conditions": [condition]},
    }


class PruneGateway(FakeSecrets):
    def __init__(self, jobs: list[dict[str, Any]]) -> None:
        super().__init__()
        self.jobs = jobs
        self.listed: list[str] = []
        self.deleted_jobs: list[str] = []
        self.deleted_secrets: list[str] = []

    async def list_jobs(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        return list(self.jobs)

    async def list_secrets(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        self.listed.append(selector)
        names = ["exp-dataset-00000001", "exp-dataset-00000002", "exp-dataset-00000003"]
        return [{"metadata": {"name": name}} for name in names]

    async def create_job(self, body: dict[str, Any]) -> None:
        self.jobs.append(body)

    async def create_secret(self, body: dict[str, Any]) -> None:
        return None

    async def delete_job(self, namespace: str, name: str) -> None:
        self.deleted_jobs.append(name)

    async def delete_secret(self, namespace: str, name: str) -> None:
        self.deleted_secrets.append(name)

    async def job_termination_message(self, namespace: str, job_name: str) -> str | None:
        return None


def run(name: str, dataset: str, at: datetime) -> EvaluationRun:
    return EvaluationRun(
        name=name, test_id="t", trigger="negatives", dataset_secret=dataset, cases=2, started_at=at, state="Succeeded"
    )


async def test_old_datasets_are_deleted_by_name_without_listing_secrets() -> None:
    spec = PromptExperimentSpec.model_validate(
        {
            "challenger": {"prompt": "Challenger.\n"},
            "evaluation": {"enabled": True, "runRequest": "again", "historyLimit": 1, "image": IMAGE},
        }
    )
    st = lc.start_test(spec, PromptExperimentStatus(), "Champion.\n", NOW - timedelta(hours=3))
    old, newer = NOW - timedelta(hours=2), NOW - timedelta(hours=1)
    st = st.model_copy(
        update={
            "evaluations": [
                run("exp-eval-1", "exp-dataset-00000001", old),
                run("exp-eval-2", "exp-dataset-00000002", newer),
            ],
            "negatives": Negatives(total=4, since_last_evaluation=2, dataset_secret="exp-dataset-00000002"),
        }
    )
    jobs = [
        finished_job("exp-eval-0", "backend-repo", old - timedelta(hours=1)),  # an annotation naming another Secret
        finished_job("exp-eval-1", "exp-dataset-00000001", old),
        finished_job("exp-eval-2", "exp-dataset-00000002", newer),
    ]
    gateway = PruneGateway(jobs)
    body = {"metadata": {"name": "exp", "uid": "uid-1"}}
    evaluations = Evaluations.for_body(cast(Gateway, gateway), NS, body, Settings(operator_image=IMAGE))
    await evaluations.step(spec, st, 1, NOW, lambda *_: None)
    assert gateway.listed == []
    assert sorted(gateway.deleted_jobs) == ["exp-eval-0", "exp-eval-1"]
    assert gateway.deleted_secrets == ["exp-dataset-00000001"]
