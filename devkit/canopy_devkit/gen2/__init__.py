"""A stand-in for the Generation 2 Canopy backend (MLflow-backed), for tests and the local demo.

The Generation 1 simulator (:mod:`canopy_devkit.simulator`) follows a backend whose source we have; the
Generation 2 backend is known from the course material (``../shared/vote-sources.md``), so this is a stand-in:
the same HTTP surface as far as the operator uses it, the prompts read from and the votes written to a **real**
MLflow server over REST, exactly as the Generation 2 backend writes them.

- :mod:`.config`: the Generation 2 config file (``summarization``, ``ab_testing``, ``feedback``);
- :mod:`.mlflow_api`: the MLflow REST calls (traces, assessments, the prompt registry);
- :mod:`.prompts`: registry references to prompt texts, with the MLflow client's alias cache;
- :mod:`.app`: one process's endpoints (aiohttp);
- :mod:`.runner`: :class:`RunningGen2` on the event loop (what the fake kubelet restarts), or
  ``python -m canopy_devkit.gen2``;
- :mod:`.client`: what the UI does (two answers, then a vote), for simulated users and tests.
"""

from canopy_devkit.gen2.app import PROMPT_B_MISSING, flags_of
from canopy_devkit.gen2.client import AbAnswers, Gen2Client, Gen2Error
from canopy_devkit.gen2.config import BackendStartupError, Gen2Config, course_config, load_config, parse_config
from canopy_devkit.gen2.mlflow_api import MlflowApi, MlflowError, PromptVersion
from canopy_devkit.gen2.prompts import PromptNotFound, PromptResolver, prompt_uri
from canopy_devkit.gen2.runner import RunningGen2

__all__ = [
    "PROMPT_B_MISSING",
    "AbAnswers",
    "BackendStartupError",
    "Gen2Client",
    "Gen2Config",
    "Gen2Error",
    "MlflowApi",
    "MlflowError",
    "PromptNotFound",
    "PromptResolver",
    "PromptVersion",
    "RunningGen2",
    "course_config",
    "flags_of",
    "load_config",
    "parse_config",
    "prompt_uri",
]
