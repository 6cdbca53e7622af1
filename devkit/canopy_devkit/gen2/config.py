"""How the Generation 2 stand-in turns its config file into feature flags and prompt references.

The course's Generation 2 ``config.yaml`` (``../shared/vote-sources.md``; the layout the operator edits is
``canopy_operator.core.values.GEN2``)::

    summarization: {enabled, endpoint, model, temperature, max_tokens, mlflow_prompt, mlflow_prompt_version}
    ab_testing: {enabled, mlflow_prompt_b_version}
    feedback: {enabled}

It is read once at start (``$CANOPY_CONFIG_PATH``), like a pod. A missing file means every flag is off. What the
stand-in assumes where the course material says nothing, the Generation 1 rules (contract section 3): every present
section must be a mapping with an ``enabled`` key, compared with ``== True``, or the process crashes at start
(:class:`~canopy_devkit.simulator.BackendStartupError`); an enabled ``summarization`` needs ``mlflow_prompt``. A
missing ``mlflow_prompt_version`` serves the newest version (MLflow's default for an unversioned prompt). No
``mlflow_prompt_b_version`` (absent, null or empty) means no challenger: ``/summarize/ab`` answers 400.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from canopy_devkit.simulator.config import BackendStartupError

FLAG_NAMES = ("summarization", "feedback", "ab_testing")
"""The flags of the stand-in's ``GET /feature-flags``, in this order."""
LATEST = "latest"
"""The registry reference that names the newest version of a prompt."""

__all__ = [
    "FLAG_NAMES",
    "LATEST",
    "BackendStartupError",
    "Gen2Config",
    "course_config",
    "load_config",
    "parse_config",
]


@dataclass(frozen=True)
class Gen2Config:
    """What the process holds after start-up: the parsed tree (None without a file) and the flags."""

    tree: Mapping[str, Any] | None
    flags: Mapping[str, bool] = field(default_factory=dict)

    def enabled(self, name: str) -> bool:
        return self.flags.get(name, False)

    def _section(self, name: str) -> Mapping[str, Any]:
        section = (self.tree or {}).get(name)
        return section if isinstance(section, Mapping) else {}

    @property
    def prompt_name(self) -> str:
        """``summarization.mlflow_prompt``: the registered prompt both arms are versions of."""
        return str(self._section("summarization").get("mlflow_prompt", ""))

    @property
    def champion_ref(self) -> str:
        """``summarization.mlflow_prompt_version``: an alias (``champion``, ``@champion``), a number or latest."""
        return reference(self._section("summarization").get("mlflow_prompt_version")) or LATEST

    @property
    def challenger_ref(self) -> str | None:
        """``ab_testing.mlflow_prompt_b_version``: a number or latest; None when no challenger is configured."""
        return reference(self._section("ab_testing").get("mlflow_prompt_b_version"))


def reference(value: object) -> str | None:
    """A registry reference as the config holds it (an int or a string) as text; None when absent or empty."""
    if value is None or isinstance(value, bool):
        return None
    text = str(value).strip().removeprefix("@")
    return text or None


def load_config(path: str | Path) -> Gen2Config:
    """Read the config file once, as the process does at start-up."""
    file = Path(path)
    if not file.exists():
        return Gen2Config(tree=None, flags=dict.fromkeys(FLAG_NAMES, False))
    return parse_config(file.read_text(encoding="utf-8"))


def parse_config(text: str) -> Gen2Config:
    """The flags for this config text; :class:`BackendStartupError` where the process would crash."""
    try:
        tree = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise BackendStartupError(f"config is not valid YAML: {' '.join(str(exc).split())}") from exc
    if tree is None:
        tree = {}
    if not isinstance(tree, dict):
        raise BackendStartupError(f"config must be a mapping, got {type(tree).__name__} (TypeError at start-up)")
    flags = {name: _flag(tree, name) for name in FLAG_NAMES}
    if flags["summarization"] and not tree["summarization"].get("mlflow_prompt"):
        raise BackendStartupError("KeyError: 'mlflow_prompt' (summarization is enabled without a prompt name)")
    return Gen2Config(tree=tree, flags=flags)


def _flag(tree: Mapping[str, Any], name: str) -> bool:
    if name not in tree:
        return False
    section = tree[name]
    if not isinstance(section, dict):
        raise BackendStartupError(f"TypeError: section {name!r} is {type(section).__name__}, not a mapping")
    if "enabled" not in section:
        raise BackendStartupError(f"KeyError: 'enabled' (section {name!r} has no enabled key)")
    return bool(section["enabled"] == True)  # noqa: E712 - as Generation 1: 1 counts as on, "true" does not


def course_config(prompt: str = "summarization", *, champion: str = "champion") -> str:
    """The course's ``canopy/test/backend/config.yaml`` before an experiment: A/B and thumbs off, the champion
    an alias, the challenger the course's ``latest`` (what a ConfigMap or the GitOps repo holds)."""
    return f"""\
# Canopy backend (Generation 2), test environment: the course's canopy/test/backend/config.yaml.
summarization:
  enabled: true
  endpoint: http://llama-stack.canopy-test.svc.cluster.local:8321/v1
  model: llama32
  temperature: 0.7
  max_tokens: 4096
  mlflow_prompt: {prompt}
  mlflow_prompt_version: {champion}

ab_testing:
  enabled: false
  mlflow_prompt_b_version: latest

feedback:
  enabled: false
"""
