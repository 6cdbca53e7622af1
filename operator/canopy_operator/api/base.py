"""Shared base model and identifiers of the canopy.genaiops.io API."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BaseModel, ConfigDict, StringConstraints
from pydantic.alias_generators import to_camel

GROUP = "canopy.genaiops.io"
VERSION = "v1alpha1"
KIND = "PromptExperiment"
PLURAL = "promptexperiments"
SINGULAR = "promptexperiment"
SHORT_NAMES = ("pexp",)
API_VERSION = f"{GROUP}/{VERSION}"
FINALIZER = f"{GROUP}/finalizer"
"""The finalizer Kopf keeps on every experiment (its delete handler restores the config)."""

#: A Go-style duration such as ``30s``, ``5m`` or ``1h30m`` (what ``metav1.Duration`` accepts, minus ``us``/``ns``).
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
Duration = Annotated[str, StringConstraints(pattern=DURATION_PATTERN)]

_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")


def parse_duration(text: str) -> float:
    """Seconds in a duration string; raises ``ValueError`` on anything the CRD pattern would reject."""
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"not a duration: {text!r} (expected e.g. 30s, 5m, 1h30m)")
    return sum(float(num) * _UNIT_SECONDS[unit] for num, unit in _PART.findall(text))


class ApiModel(BaseModel):
    """Base of every API model: camelCase on the wire, docstrings become CRD descriptions."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        use_attribute_docstrings=True,
        extra="forbid",
        validate_default=True,
    )
