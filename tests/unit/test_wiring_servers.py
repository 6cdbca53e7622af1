"""The wiring of the MLflow and Phoenix servers: a credentials Secret that may not be used stops the pass with a
named condition before anything is sent, whether the vote source or the prompt registry asked for it."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from typing import Any

import pytest

from canopy_operator.api.spec import PromptExperimentSpec
from canopy_operator.core.readings import Window
from canopy_operator.service.credentials import ServerCredentialsRefused
from canopy_operator.service.settings import Settings
from canopy_operator.service.wiring import ServerApis, prompts_for, votes_for
from canopy_operator.sources.prompts import StoreRefused
from tests.support.credentials import FakeSecrets, opted_in

URL = "http://mlflow.toolings.svc:5000"


def _timer(_: str) -> contextlib.nullcontext[None]:
    return contextlib.nullcontext()


def spec(secret: str) -> PromptExperimentSpec:
    body: dict[str, Any] = {
        "backend": {"generation": 2},
        "challenger": {"version": 2},
        "votes": {"source": "MLflow", "mlflow": {"trackingUrl": URL, "experimentId": "1", "credentialsSecret": secret}},
        "prompts": {
            "store": "MLflowRegistry",
            "mlflow": {"trackingUrl": URL, "name": "summ", "credentialsSecret": secret},
        },
    }
    return PromptExperimentSpec.model_validate(body)


async def test_a_missing_secret_refuses_the_registry_and_the_votes_by_name() -> None:
    secrets = FakeSecrets()
    apis = ServerApis(secrets, "user1-test", Settings.from_env({}), _timer)
    with pytest.raises(StoreRefused) as refused:
        await prompts_for(spec("mlflow-token"), apis).arms(spec("mlflow-token"), "champion")
    assert refused.value.reason == "CredentialsMissing"
    assert "spec.prompts.mlflow.credentialsSecret" in str(refused.value)
    votes = votes_for(spec("mlflow-token"), apis)
    assert votes is not None
    with pytest.raises(ServerCredentialsRefused, match=r"spec\.votes\.mlflow\.credentialsSecret"):
        await votes.read(Window(started_at=datetime.now(UTC)))
    assert secrets.reads == ["user1-test/mlflow-token", "user1-test/mlflow-token"]


async def test_a_secret_not_opted_in_for_the_server_is_refused_before_a_request() -> None:
    other = opted_in("https://elsewhere.example.com/", name="mlflow-token", token="t0ken-for-elsewhere")
    apis = ServerApis(FakeSecrets(other), "user1-test", Settings.from_env({}), _timer)
    with pytest.raises(StoreRefused) as refused:
        await prompts_for(spec("mlflow-token"), apis).check(None)  # type: ignore[arg-type]  # refused first
    assert refused.value.reason == "CredentialsNotAllowed"
    await apis.aclose()
