"""The API server itself rejects invalid PromptExperiments, and its message names the bad field."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client import ApiClient

from canopy_operator.api.base import GROUP, PLURAL, VERSION

pytestmark = pytest.mark.integration

VALID: dict[str, Any] = {"challenger": {"prompt": "Provide a brief, concise summary:"}}

# (case id, spec patch, the field path the API server's message must name)
INVALID: list[tuple[str, dict[str, Any], str]] = [
    ("alpha-zero", {"analysis": {"alpha": 0}}, "spec.analysis.alpha"),
    ("alpha-too-big", {"analysis": {"alpha": 0.9}}, "spec.analysis.alpha"),
    ("tau-zero", {"analysis": {"tau": 0}}, "spec.analysis.tau"),
    ("min-votes-zero", {"analysis": {"minVotes": 0}}, "spec.analysis.minVotes"),
    ("max-below-min", {"analysis": {"minVotes": 50, "maxVotes": 10}}, "spec.analysis.maxVotes"),
    ("interval-too-short", {"analysis": {"interval": "2s"}}, "spec.analysis.interval"),
    ("interval-not-a-duration", {"analysis": {"interval": "soon"}}, "spec.analysis.interval"),
    ("unknown-method", {"analysis": {"method": "t-test"}}, "spec.analysis.method"),
    ("delta-too-big", {"analysis": {"equivalenceDelta": 0.7}}, "spec.analysis.equivalenceDelta"),
    ("empty-challenger", {"challenger": {"prompt": ""}}, "spec.challenger.prompt"),
    (
        "blank-challenger",
        {"challenger": {"prompt": "  \n\t \n"}},
        "spec.challenger.prompt must contain a non-whitespace",
    ),
    ("blank-champion", {"champion": {"prompt": " "}}, "spec.champion.prompt must contain a non-whitespace"),
    ("same-prompts", {"champion": {"prompt": "same"}, "challenger": {"prompt": "same"}}, "spec.challenger.prompt"),
    ("git-without-block", {"delivery": {"mode": "Git"}}, "spec.delivery.git"),
    ("unknown-mode", {"delivery": {"mode": "Helm"}}, "spec.delivery.mode"),
    ("bad-backend-url", {"backend": {"url": "canopy-backend:8000"}}, "spec.backend.url"),
    ("unknown-policy", {"promotion": {"policy": "Sometimes"}}, "spec.promotion.policy"),
    ("unknown-on-delete", {"promotion": {"onDelete": "Forget"}}, "spec.promotion.onDelete"),
    ("bad-configmap-name", {"delivery": {"configMap": {"name": "Not_A_Name"}}}, "spec.delivery.configMap.name"),
    (
        "threshold-above-one",
        {"evaluation": {"minChallengerBetterRate": 1.5}},
        "spec.evaluation.minChallengerBetterRate",
    ),
    ("duplicate-cap-zero", {"analysis": {"duplicateVoteCap": 0}}, "spec.analysis.duplicateVoteCap"),
    ("feature-unknown", {"backend": {"feature": "translate"}}, "spec.backend.feature"),
    ("generation-3", {"backend": {"generation": 3}}, "spec.backend.generation"),
    ("mlflow-votes-without-block", {"votes": {"source": "MLflow"}}, "spec.votes.mlflow is required"),
    ("phoenix-votes-without-block", {"votes": {"source": "Phoenix"}}, "spec.votes.phoenix is required"),
    (
        "arm-tag-missing",
        {
            "votes": {
                "source": "MLflow",
                "mlflow": {"trackingUrl": "http://mlflow:5000", "experimentId": "1", "armFrom": "Tag"},
            }
        },
        "spec.votes.mlflow.armTag is required",
    ),
    ("registry-without-block", {"prompts": {"store": "MLflowRegistry"}}, "spec.prompts.mlflow is required"),
    (
        "registry-with-text-challenger",
        {"prompts": {"store": "MLflowRegistry", "mlflow": {"trackingUrl": "http://mlflow:5000", "name": "p"}}},
        "spec.challenger.version (a registry version) goes with spec.prompts.store MLflowRegistry",
    ),
    (
        "latest-is-no-champion",
        {
            "prompts": {
                "store": "MLflowRegistry",
                "mlflow": {"trackingUrl": "http://m:5000", "name": "p", "championAlias": "latest"},
            },
            "challenger": {"prompt": None, "version": 3},
        },
        "championAlias must not be latest",
    ),
    (
        "registry-on-generation-1",
        {
            "prompts": {"store": "MLflowRegistry", "mlflow": {"trackingUrl": "http://m:5000", "name": "p"}},
            "challenger": {"prompt": None, "version": 3},
        },
        "needs spec.backend.generation 2",
    ),
    ("version-with-text-store", {"challenger": {"prompt": None, "version": 3}}, "spec.challenger.version"),
    ("version-and-text", {"challenger": {"version": 3}}, "exactly one of prompt"),
    ("version-zero", {"challenger": {"prompt": None, "version": 0}}, "spec.challenger.version"),
]


def _merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if value is None:  # the patch removes the key
            out.pop(key, None)
            continue
        out[key] = _merge(out.get(key, {}), value) if isinstance(value, dict) and key in out else value
    return out


def _body(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "PromptExperiment", "metadata": {"name": name}, "spec": spec}


@pytest.mark.parametrize(("case", "patch", "field"), INVALID, ids=[c[0] for c in INVALID])
async def test_api_server_rejects_invalid_spec_naming_the_field(
    admin_api: ApiClient, namespace: str, case: str, patch: dict[str, Any], field: str
) -> None:
    custom = client.CustomObjectsApi(admin_api)
    with pytest.raises(client.ApiException) as caught:
        await custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, _body(case, _merge(VALID, patch))
        )
    assert caught.value.status == 422
    assert field in str(caught.value.body), caught.value.body


async def test_api_server_accepts_the_minimal_spec_and_fills_in_defaults(admin_api: ApiClient, namespace: str) -> None:
    custom = client.CustomObjectsApi(admin_api)
    created = await custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, _body("ok", VALID))
    spec = created["spec"]
    assert spec["analysis"]["method"] == "betting"
    assert spec["analysis"]["alpha"] == 0.05
    assert spec["delivery"]["configMap"] == {
        "name": "canopy-config",
        "key": "canopy-config.yaml",
        "deployment": "canopy-backend",
    }
    assert "git" not in spec["delivery"]


async def _default_method(custom: client.CustomObjectsApi, namespace: str, name: str, expected: str) -> None:
    """Create objects until the API server fills in ``expected`` (a replaced CRD's schema takes effect a moment
    later); each probe object is deleted again."""
    for attempt in range(100):
        probe = f"{name}-{attempt}"
        created = await custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, _body(probe, VALID))
        await custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, probe)
        if created["spec"]["analysis"]["method"] == expected:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"the API server never defaulted analysis.method to {expected}")


async def test_upgrade_to_the_betting_default_keeps_existing_objects_on_their_method(
    admin_api: ApiClient, namespace: str
) -> None:
    """The upgrade note's promise, on a real API server: an object created while the CRD defaulted the method to
    msprt stored msprt, so applying this release's CRD (default betting) changes neither the object nor its test;
    only objects created afterwards get betting."""
    crds = client.ApiextensionsV1Api(admin_api)
    custom = client.CustomObjectsApi(admin_api)
    name = f"{PLURAL}.{GROUP}"
    current = await crds.read_custom_resource_definition(name)
    schema = current.spec.versions[0].schema.open_apiv3_schema
    analysis = schema.properties["spec"].properties["analysis"]
    assert analysis.default["method"] == "betting"
    old = copy.deepcopy(current)
    old_analysis = old.spec.versions[0].schema.open_apiv3_schema.properties["spec"].properties["analysis"]
    old_analysis.default = {**analysis.default, "method": "msprt"}
    old_analysis.properties["method"].default = "msprt"
    old.metadata = client.V1ObjectMeta(name=name, resource_version=current.metadata.resource_version)
    await crds.replace_custom_resource_definition(name, old)
    try:
        await _default_method(custom, namespace, "old-probe", "msprt")
        await custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, _body("before-upgrade", VALID))
    finally:
        latest = await crds.read_custom_resource_definition(name)
        current.metadata = client.V1ObjectMeta(name=name, resource_version=latest.metadata.resource_version)
        await crds.replace_custom_resource_definition(name, current)
    await _default_method(custom, namespace, "new-probe", "betting")
    kept = await custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "before-upgrade")
    assert kept["spec"]["analysis"]["method"] == "msprt"
    after = await custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, _body("after", VALID))
    assert after["spec"]["analysis"]["method"] == "betting"
