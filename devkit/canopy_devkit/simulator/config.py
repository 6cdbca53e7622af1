"""How the Generation 1 backend turns its config file into feature flags, crashes included.

The backend reads ``$CANOPY_CONFIG_PATH`` once at start with ``yaml.safe_load``. A missing file means every
flag is off; otherwise ``LLAMA_STACK_URL`` must exist and every present feature section must be a mapping
with an ``enabled`` key (``config[name]["enabled"] == True``: a string ``"true"`` is off, ``1`` is on).
Anything else raises at import time, i.e. the pod crash-loops: :class:`BackendStartupError` here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

FLAG_NAMES = (
    "information-search",
    "summarize",
    "student-assistant",
    "shields",
    "feedback",
    "ab_testing",
    "socratic-tutor",
)
"""The seven flags of ``GET /feature-flags``, in the backend's order."""

DEFAULT_SUMMARIZE_PROMPT = "Summarize the following text:"
"""What ``/summarize`` uses when ``summarize.prompt`` is absent."""


class BackendStartupError(Exception):
    """The real backend would crash at start-up with this configuration (the pod would crash-loop)."""


@dataclass(frozen=True)
class BackendConfig:
    """What the process holds after start-up: the parsed tree (``None`` without a file) and the flags."""

    tree: Mapping[str, Any] | None
    flags: Mapping[str, bool] = field(default_factory=dict)

    def enabled(self, name: str) -> bool:
        return self.flags.get(name, False)

    @property
    def summarize(self) -> Mapping[str, Any]:
        """The ``summarize`` section (only read by endpoints that checked the flag first)."""
        section = (self.tree or {}).get("summarize")
        return section if isinstance(section, Mapping) else {}


def load_config(path: str | Path) -> BackendConfig:
    """Read the config file once, as the backend does at start-up."""
    file = Path(path)
    if not file.exists():
        return BackendConfig(tree=None, flags=dict.fromkeys(FLAG_NAMES, False))
    return parse_config(file.read_text(encoding="utf-8"))


def parse_config(text: str) -> BackendConfig:
    """The flags for this config text; :class:`BackendStartupError` where the backend would crash."""
    try:
        tree = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise BackendStartupError(f"config is not valid YAML: {' '.join(str(exc).split())}") from exc
    if not isinstance(tree, dict):
        raise BackendStartupError(f"config must be a mapping, got {type(tree).__name__} (TypeError at start-up)")
    if "LLAMA_STACK_URL" not in tree:
        raise BackendStartupError("KeyError: 'LLAMA_STACK_URL' (required top-level key)")
    flags = {name: _flag(tree, name) for name in FLAG_NAMES}
    if flags["student-assistant"] and "model" not in tree["student-assistant"]:
        raise BackendStartupError("KeyError: 'model' (student-assistant is enabled without a model)")
    return BackendConfig(tree=tree, flags=flags)


def _flag(tree: Mapping[str, Any], name: str) -> bool:
    if name not in tree:
        return False
    section = tree[name]
    if not isinstance(section, dict):
        raise BackendStartupError(f"TypeError: section {name!r} is {type(section).__name__}, not a mapping")
    if "enabled" not in section:
        raise BackendStartupError(f"KeyError: 'enabled' (section {name!r} has no enabled key)")
    # The backend compares with ``== True``: 1 and 1.0 count as on, "true" does not.
    return bool(section["enabled"] == True)  # noqa: E712
