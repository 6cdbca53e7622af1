"""The PromptExperiment API: pydantic models are the single source of truth for the CRD."""

from canopy_operator.api.base import API_VERSION, GROUP, KIND, PLURAL, VERSION, parse_duration
from canopy_operator.api.spec import PromptExperimentSpec
from canopy_operator.api.status import PromptExperimentStatus

__all__ = [
    "API_VERSION",
    "GROUP",
    "KIND",
    "PLURAL",
    "VERSION",
    "PromptExperimentSpec",
    "PromptExperimentStatus",
    "parse_duration",
]
