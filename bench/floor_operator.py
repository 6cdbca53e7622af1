"""The bare-Kopf floor of ``reconcile_bench.py``: the least a Kopf operator does for the operator's first visible write.

One daemon per PromptExperiment (the operator keeps one per experiment too), which
1. merge-patches the experiment's ConfigMap key (``spec.delivery.configMap``) with the text the operator writes
   when a test starts: the chart's values with ``feedback`` and ``ab_testing`` enabled and ``summarize.prompt_b``
   the challenger's prompt; for the benchmark's experiments byte for byte what ``canopy-operator preview --step
   start`` prints (408 bytes; the benchmark checks it). It reads nothing first and rolls no Deployment;
2. merge-patches ``status.phase: Running``;
3. sleeps until Kopf stops it: no API request, timer or wake-up while idle.
Kopf's settings that change its API traffic are the operator's (annotation storage and finalizer under the same
prefix, watch and request timeouts); the daemon's finalizer is Kopf's, as for the operator's daemon. Run as the
operator's ServiceAccount user, like the operator (``FloorProcess`` in ``cluster.py``)::

    KUBECONFIG=... kopf run --all-namespaces --standalone --liveness URL --log-format=json bench/floor_operator.py
"""

from __future__ import annotations

import logging
import textwrap
from typing import Any

import kopf
from kubernetes_asyncio import client, config

GROUP, VERSION, PLURAL = "canopy.genaiops.io", "v1alpha1", "promptexperiments"
MERGE = "application/merge-patch+json"
VALUES = """\
LLAMA_STACK_URL: http://llama-stack.canopy-test.svc.cluster.local:8321
summarize:
  enabled: true
  model: llama32
  max_tokens: 512
  temperature: 0.2
  prompt: |
    Summarize the following text in a clear and detailed manner:
  prompt_b: |
{prompt_b}feedback:
  enabled: true
ab_testing:
  enabled: true
information-search:
  enabled: false
student-assistant:
  enabled: false
"""


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.posting.level = logging.INFO
    settings.watching.server_timeout, settings.watching.client_timeout = 300, 330
    settings.networking.connect_timeout, settings.networking.request_timeout = 10, 60
    await config.load_kube_config()  # KUBECONFIG: the operator's ServiceAccount user
    memo.api = client.ApiClient()


@kopf.on.cleanup()
async def close(memo: Any, **_: Any) -> None:
    await memo.api.close()


@kopf.daemon(GROUP, VERSION, PLURAL, id="floor", cancellation_timeout=10.0)
async def floor(
    name: str, namespace: str | None, spec: kopf.Spec, memo: Any, stopped: kopf.DaemonStopped, **_: Any
) -> None:
    assert namespace is not None, "PromptExperiment is namespaced"
    delivery = spec["delivery"]["configMap"]
    text = VALUES.format(prompt_b=textwrap.indent(spec["challenger"]["prompt"], "    "))
    body = {"data": {delivery.get("key", "canopy-config.yaml"): text}}
    core, custom = client.CoreV1Api(memo.api), client.CustomObjectsApi(memo.api)
    await core.patch_namespaced_config_map(delivery["name"], namespace, body, _content_type=MERGE)  # type: ignore[call-arg]
    status = {"status": {"phase": "Running"}}
    await custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, name, status, _content_type=MERGE
    )  # type: ignore[call-arg]
    await stopped.wait()
