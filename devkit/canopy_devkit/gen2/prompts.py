"""Prompt texts from the MLflow prompt registry, with the MLflow client's alias cache.

The Generation 2 backend loads its prompts per request (``load_prompt``), so moving an alias needs no restart;
but MLflow 3 clients cache an alias lookup for 60 s (``MLFLOW_ALIAS_PROMPT_CACHE_TTL_SECONDS``): after a move
the old version is served until the cached entry expires. :class:`PromptResolver` does the same with
``ttl`` seconds (``$CANOPY_ALIAS_CACHE_SECONDS`` in the stand-in): an alias and ``latest`` (which moves whenever
a version is registered) are cached for ``ttl`` from their lookup; a version number names an immutable version
and is cached for the life of the process. A new process (a rollout) starts with an empty cache.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from canopy_devkit.gen2.config import LATEST
from canopy_devkit.gen2.mlflow_api import PromptVersion

DEFAULT_ALIAS_CACHE_SECONDS = 60.0
"""MLflow 3 clients' default alias cache."""


class PromptNotFound(LookupError):
    """The registry has no such prompt, version or alias (the backend's request fails)."""


class RegistryReads(Protocol):
    """The registry lookups the resolver makes (:class:`~canopy_devkit.gen2.mlflow_api.MlflowApi`)."""

    async def alias_version(self, name: str, alias: str) -> PromptVersion | None: ...

    async def prompt_version(self, name: str, version: str) -> PromptVersion | None: ...

    async def latest_version(self, name: str) -> PromptVersion | None: ...


def prompt_uri(name: str, ref: str) -> str:
    """``prompts:/<name>/<version>`` for a number, ``prompts:/<name>@<alias>`` otherwise (``latest`` too)."""
    return f"prompts:/{name}/{ref}" if ref.isdigit() else f"prompts:/{name}@{ref}"


class PromptResolver:
    """Registry references to prompt versions, cached like the MLflow client caches them."""

    def __init__(self, registry: RegistryReads, ttl: float, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.registry = registry
        self.ttl = ttl
        self.monotonic = monotonic
        self.lookups = 0
        """Registry calls made so far (a test can tell a cache hit from a lookup)."""
        self._cache: dict[tuple[str, str], tuple[PromptVersion, float]] = {}

    async def resolve(self, name: str, ref: str) -> PromptVersion:
        """The version ``ref`` (a number, an alias or ``latest``) of prompt ``name`` names now, as this process
        sees it (:class:`PromptNotFound` when it names nothing)."""
        key = (name, ref)
        now = self.monotonic()
        cached = self._cache.get(key)
        if cached is not None and now < cached[1]:
            return cached[0]
        self.lookups += 1
        if ref.isdigit():
            found = await self.registry.prompt_version(name, ref)
            expires = float("inf")
        else:
            found = await (
                self.registry.latest_version(name) if ref == LATEST else self.registry.alias_version(name, ref)
            )
            expires = now + self.ttl
        if found is None:
            raise PromptNotFound(f"{prompt_uri(name, ref)} does not exist")
        if expires > now:
            self._cache[key] = (found, expires)
        return found
