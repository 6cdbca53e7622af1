"""The Generation 2 scene of the local demo and the end-to-end tests: the registry set up as the course has it,
and the sample experiment pointed at local servers.

    versions = await register_prompts(mlflow.url)            # summarization: 1 (alias champion), 2
    body = local_experiment(load_sample(), backend_url=..., tracking_url=mlflow.url, experiment_id=...)
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from canopy_devkit.gen2.mlflow_api import MlflowApi

PROMPT = "summarization"
CHAMPION_ALIAS = "champion"
CHAMPION_TEXT = "Summarize the following text in a clear and detailed manner: {{text}}"
CHALLENGER_TEXT = "Provide a brief, concise summary: {{text}}"
SAMPLE = Path(__file__).resolve().parents[3] / "manifests" / "samples" / "gen2-experiment.yaml"
"""The shipped sample (found in the repository the kit is installed from, like the demo's other paths)."""


async def register_prompts(
    tracking_url: str,
    name: str = PROMPT,
    texts: Sequence[str] = (CHAMPION_TEXT, CHALLENGER_TEXT),
    alias: str = CHAMPION_ALIAS,
) -> list[str]:
    """Register ``texts`` as versions of prompt ``name`` (in order) and point ``alias`` at the first; the versions."""
    async with MlflowApi(tracking_url) as api:
        versions = [await api.register_prompt(name, text) for text in texts]
        await api.set_alias(name, alias, versions[0])
    return versions


async def alias_version(tracking_url: str, name: str = PROMPT, alias: str = CHAMPION_ALIAS) -> str | None:
    """The version ``prompts:/<name>@<alias>`` names now, read from MLflow (no cache)."""
    async with MlflowApi(tracking_url) as api:
        found = await api.alias_version(name, alias)
    return None if found is None else found.version


def load_sample(path: Path = SAMPLE) -> dict[str, Any]:
    body: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return body


def local_experiment(
    sample: dict[str, Any],
    *,
    backend_url: str,
    tracking_url: str,
    experiment_id: str,
    prompt: str | None = None,
    alias_cache: str = "5s",
    interval: str = "5s",
    verify_timeout: str = "60s",
) -> dict[str, Any]:
    """The sample with its servers on 127.0.0.1 and ConfigMap delivery (no GitOps repository locally); the
    registry's alias cache and the poll interval short, so the loop takes a minute or two."""
    body = copy.deepcopy(sample)
    spec = body["spec"]
    spec["backend"]["url"] = backend_url
    spec["delivery"] = {"mode": "ConfigMap", "verifyTimeout": verify_timeout}
    spec["votes"]["mlflow"].update(trackingUrl=tracking_url, experimentId=experiment_id)
    spec["prompts"]["mlflow"].update(trackingUrl=tracking_url, aliasCache=alias_cache)
    if prompt is not None:
        spec["prompts"]["mlflow"]["name"] = prompt
    spec["analysis"]["interval"] = interval
    return body
