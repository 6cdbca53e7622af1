"""Specs the API server accepts but that are wrong in context: each ends in a clear Degraded condition.

(Specs the API server itself rejects are covered by tests/integration/test_crd_validation.py.)
One operator process watches one namespace holding one experiment per case; each must report Degraded with
the reason and a message naming what is wrong, while the operator keeps running and writes nothing it
should not.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client import ApiClient

from canopy_devkit.simulator import free_port
from canopy_operator.api.base import GROUP, PLURAL, VERSION
from tests.support.faults import CHALLENGER, CHAMPION, KEY, condition
from tests.support.kopf_runner import wait_for
from tests.support.kubelet import RENDERED_VALUES, deployment_manifest
from tests.support.operator_process import OperatorProcess

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

SECRET_VALUE = "s3cr3t-never-shown"
DEAD_URL = f"http://127.0.0.1:{free_port()}"
GIT_REPO = "file:///nonexistent/backend.git"


def exp(name: str, *, url: str = DEAD_URL, configmap: str = "canopy-config", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "backend": {"url": url, "requestTimeout": "1s"},
        "challenger": {"prompt": CHALLENGER},
        "analysis": {"interval": "5s"},
        "delivery": {"verifyTimeout": "5s", "configMap": {"name": configmap, "deployment": f"dep-{name}"}},
    }
    body.update(spec)
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "PromptExperiment", "metadata": {"name": name}, "spec": body}


def git(secret: str) -> dict[str, Any]:
    return {"mode": "Git", "verifyTimeout": "5s", "git": {"repository": GIT_REPO, "credentialsSecret": secret}}


# name -> (experiment, Degraded reason, words its message must contain)
CASES: dict[str, tuple[dict[str, Any], str, list[str]]] = {
    "no-configmap": (exp("no-configmap", configmap="absent"), "ConfigMapMissing", ["absent", "not found"]),
    "no-key": (exp("no-key", configmap="cm-no-key"), "ConfigMapMissing", ["cm-no-key", f"no key '{KEY}'"]),
    "bad-values": (exp("bad-values", configmap="cm-bad-values"), "InvalidValues", ["cm-bad-values"]),
    "same-prompt": (
        exp("same-prompt", configmap="cm-same", challenger={"prompt": CHAMPION}),
        "InvalidSpec",
        ["spec.challenger.prompt"],
    ),
    "unreachable": (
        exp("unreachable", configmap="cm-unreachable"),
        "VerifyTimeout",
        ["within 5s", DEAD_URL, "ab_testing=true"],
    ),
    "no-secret": (exp("no-secret", delivery=git("absent-secret")), "GitCredentialsMissing", ["absent-secret"]),
    "secret-without-key": (
        exp("secret-without-key", delivery=git("git-creds")),
        "GitCredentialsMissing",
        ["git-creds", "holds none of the keys"],
    ),
}


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


async def setup_objects(api: ApiClient, namespace: str) -> dict[str, str]:
    """The ConfigMaps, Deployments and Secret the cases refer to; the ConfigMaps' resourceVersions."""
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    configmaps = {
        "cm-no-key": {"other.yaml": RENDERED_VALUES},
        "cm-bad-values": {KEY: "summarize: [unclosed\n"},
        "cm-same": {KEY: RENDERED_VALUES},
        "cm-unreachable": {KEY: RENDERED_VALUES},
    }
    versions = {}
    for name, data in configmaps.items():
        body = {"metadata": {"name": name}, "data": data}
        created = await core.create_namespaced_config_map(namespace, body)  # type: ignore[arg-type]  # a dict body is accepted
        versions[name] = str(created.metadata.resource_version)
    for name in CASES:
        await apps.create_namespaced_deployment(namespace, deployment_manifest(f"dep-{name}"))  # type: ignore[arg-type]  # a dict body is accepted
    secret = {
        "metadata": {
            "name": "git-creds",
            # opted in for the repository, so what is wrong is the key alone
            "labels": {"canopy.genaiops.io/credentials": "true"},
            "annotations": {"canopy.genaiops.io/allowed-urls": GIT_REPO},
        },
        "data": {"user": _b64("canopy"), "pasword": _b64(SECRET_VALUE)},  # a typo: no usable key
    }
    await core.create_namespaced_secret(namespace, secret)  # type: ignore[arg-type]  # a dict body is accepted
    return versions


async def test_contextually_wrong_specs_end_in_clear_conditions(
    admin_api: ApiClient, operator_kubeconfig: Path, namespace: str, tmp_path: Path
) -> None:
    versions = await setup_objects(admin_api, namespace)
    custom = client.CustomObjectsApi(admin_api)
    for body, _, _ in CASES.values():
        await custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    statuses: dict[str, dict[str, Any]] = {}

    async def all_degraded() -> bool:
        listed = await custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
        for item in listed["items"]:
            statuses[item["metadata"]["name"]] = item.get("status") or {}
        return all(statuses.get(name, {}).get("phase") == "Degraded" for name in CASES)

    proc = OperatorProcess(operator_kubeconfig, namespace, tmp_path / "operator")
    proc.start()
    try:
        await wait_for(all_degraded, timeout=90, what="every case Degraded")
        assert proc.returncode() is None, proc.tail()
    finally:
        code = proc.stop()
    assert code == 0, proc.tail()
    problems = []
    for name, (_, reason, words) in CASES.items():
        degraded = condition(statuses[name], "Degraded")
        if degraded.get("reason") != reason or not all(word in degraded.get("message", "") for word in words):
            problems.append(f"{name}: want {reason} mentioning {words}, got {degraded}")
    assert not problems, "\n".join(problems)
    everything = str(statuses) + proc.log()
    assert SECRET_VALUE not in everything
    core = client.CoreV1Api(admin_api)
    for untouched in ("cm-no-key", "cm-bad-values", "cm-same"):  # nothing was written where nothing could be
        cm = await core.read_namespaced_config_map(untouched, namespace)
        assert cm.metadata.resource_version == versions[untouched], f"{untouched} was written"
