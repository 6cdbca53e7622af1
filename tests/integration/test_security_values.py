"""Finding 5 of #14 against a real API server and operator process: what the operator writes loads where it is read.

- The chart's own ``values-test.yaml`` (only ``LLAMA_STACK_URL``) plus ``spec.champion.prompt`` used to become a
  ConfigMap with a ``summarize`` section lacking ``enabled`` and ``model`` (the chart rejects it, the backend
  crashes at start). Now the experiment is ``Degraded/InvalidValues`` naming both keys, and neither the
  ConfigMap nor the Deployment is touched.
- A folded (``>``) champion used to be recorded with ruamel's ``\\x07`` fold markers, and a challenger ending
  in ``?`` was written unquoted into a flow section, which PyYAML (the backend's loader) rejects. Now the
  recorded champion is PyYAML's reading and the written ConfigMap loads with the challenger exactly.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_asyncio import client
from kubernetes_asyncio.client import ApiClient

from canopy_devkit.simulator import free_port
from canopy_operator.api.base import GROUP, PLURAL, VERSION
from canopy_operator.core.startrecord import ANNOTATION as RECORD
from canopy_operator.delivery.configmap import ROLLOUT_ANNOTATION
from tests.support.faults import KEY, condition
from tests.support.kubelet import deployment_manifest
from tests.support.operator_process import OperatorProcess

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

DEAD_URL = f"http://127.0.0.1:{free_port()}"
CHART_VALUES_TEST = 'LLAMA_STACK_URL: "http://llama-stack:8321"\n'
FOLDED_FLOW = (
    "LLAMA_STACK_URL: http://llama-stack:8321\n"
    "summarize:\n"
    "  enabled: true\n"
    "  model: llama32\n"
    "  prompt: >\n"
    "    Summarize the following text\n"
    "    in a clear manner.\n"
    "feedback: {enabled: false}\n"
    "ab_testing: {enabled: false}\n"
)
FLOW = "LLAMA_STACK_URL: http://llama-stack:8321\nsummarize: {enabled: true, model: llama32, prompt: Summarize.}\n"
CHALLENGER = "Could you summarize it in one line?"


def experiment(name: str, configmap: str, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "backend": {"url": DEAD_URL, "requestTimeout": "1s"},
        "challenger": {"prompt": CHALLENGER},
        "analysis": {"interval": "5s"},
        "delivery": {"verifyTimeout": "60s", "configMap": {"name": configmap, "deployment": f"dep-{name}"}},
    }
    body.update(spec)
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "PromptExperiment", "metadata": {"name": name}, "spec": body}


async def wait_until(check: Any, timeout: float, what: str) -> Any:  # noqa: ASYNC109 - a deadline named in the error
    deadline = time.monotonic() + timeout
    while True:
        found = await check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.5)


async def test_written_values_load_in_the_backend_or_the_write_is_refused(
    admin_api: ApiClient, operator_kubeconfig: Path, namespace: str, tmp_path: Path
) -> None:
    core, apps = client.CoreV1Api(admin_api), client.AppsV1Api(admin_api)
    custom = client.CustomObjectsApi(admin_api)
    versions = {}
    for name, text in (("cm-chart-test", CHART_VALUES_TEST), ("cm-folded", FOLDED_FLOW), ("cm-flow", FLOW)):
        created = await core.create_namespaced_config_map(namespace, {"metadata": {"name": name}, "data": {KEY: text}})  # type: ignore[arg-type]  # a dict body is accepted
        versions[name] = created.metadata.resource_version
    for name in ("partial", "folded", "flow"):
        await apps.create_namespaced_deployment(namespace, deployment_manifest(f"dep-{name}"))  # type: ignore[arg-type]  # a dict body is accepted
    champion = {"prompt": "Summarize clearly."}
    await custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, experiment("partial", "cm-chart-test", champion=champion)
    )
    for name in ("folded", "flow"):
        await custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, experiment(name, f"cm-{name}"))

    async def status(name: str) -> dict[str, Any]:
        body = await custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        return dict(body.get("status") or {})

    async def degraded_partial() -> dict[str, Any] | None:
        st = await status("partial")
        return st if st.get("phase") == "Degraded" else None

    async def written(name: str) -> str | None:
        cm = await core.read_namespaced_config_map(name, namespace)
        return cm.data[KEY] if cm.metadata.resource_version != versions[name] else None

    proc = OperatorProcess(operator_kubeconfig, namespace, tmp_path / "operator")
    proc.start()
    try:
        partial = await wait_until(degraded_partial, 90, "experiment partial Degraded")
        folded_text = await wait_until(lambda: written("cm-folded"), 90, "the challenger written into cm-folded")
        flow_text = await wait_until(lambda: written("cm-flow"), 90, "the challenger written into cm-flow")
        # its first status comes at Running (never here: no backend); the champion as read is in the start record
        folded_cm = await core.read_namespaced_config_map("cm-folded", namespace)
        folded_record = json.loads(folded_cm.metadata.annotations[RECORD])
        assert proc.returncode() is None, proc.tail()
    finally:
        code = proc.stop()
    assert code == 0, proc.tail()

    degraded = condition(partial, "Degraded")
    assert degraded["reason"] == "InvalidValues", degraded
    message = degraded["message"]
    assert f"ConfigMap {namespace}/cm-chart-test key {KEY}" in message
    assert "summarize.enabled: required" in message
    assert "add summarize.enabled and summarize.model to the values file" in message
    cm = await core.read_namespaced_config_map("cm-chart-test", namespace)
    assert cm.metadata.resource_version == versions["cm-chart-test"], "a partial summarize section was written"
    assert cm.data[KEY] == CHART_VALUES_TEST
    dep = await apps.read_namespaced_deployment("dep-partial", namespace)
    assert ROLLOUT_ANNOTATION not in (dep.spec.template.metadata.annotations or {}), "the Deployment was rolled"

    loaded = yaml.safe_load(folded_text)
    expected_champion = yaml.safe_load(FOLDED_FLOW)["summarize"]["prompt"]
    assert loaded["summarize"]["prompt"] == expected_champion
    assert loaded["summarize"]["prompt_b"] == CHALLENGER
    assert loaded["feedback"] == {"enabled": True}
    assert loaded["ab_testing"] == {"enabled": True}
    assert folded_text.startswith(FOLDED_FLOW.split("feedback:")[0])  # the folded champion is left byte for byte
    assert folded_record["original"]["prompt"] == expected_champion  # no "\x07" fold markers
    assert yaml.safe_load(flow_text)["summarize"] == {
        "enabled": True,
        "model": "llama32",
        "prompt": "Summarize.",
        "prompt_b": CHALLENGER,
    }
    assert "Traceback" not in proc.log()
