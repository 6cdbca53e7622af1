"""The prompt-store port: which texts the arms are, and what promoting the winner means for the store.

Today the prompt texts live in the delivered config itself (:class:`ConfigTextPrompts`): the champion is
``spec.champion.prompt`` or the configured ``summarize.prompt``, the challenger is the spec's text, and a
promotion is nothing more than the config write that makes the winner ``summarize.prompt``. A store backed by
the MLflow prompt registry resolves the arms to concrete versions at test start, reports an alias that moved,
and promotes by moving the champion alias exactly once; it implements the same :class:`PromptStore`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from canopy_operator.api.spec import PromptExperimentSpec


@dataclass(frozen=True)
class Arms:
    """The prompts a test compares (``version`` is the store's name for a text, when it has one)."""

    champion: str
    challenger: str
    champion_version: str | None = None
    challenger_version: str | None = None


class PromptStore(Protocol):
    """Where the champion and challenger prompts are kept."""

    async def arms(self, spec: PromptExperimentSpec, configured_prompt: str | None) -> Arms | None:
        """The arms of a new test; None when there is no champion to test against."""
        ...

    async def promote(self, winner: str) -> str | None:
        """Make ``winner`` the champion in the store; the revision it made, or None when the config write
        itself carries the promotion (nothing more to do here)."""
        ...


class ConfigTextPrompts:
    """Prompts as text in the delivered config (``summarize.prompt`` / ``summarize.prompt_b``)."""

    async def arms(self, spec: PromptExperimentSpec, configured_prompt: str | None) -> Arms | None:
        champion = spec.champion.prompt if spec.champion.prompt is not None else configured_prompt
        return None if champion is None else Arms(champion=champion, challenger=spec.challenger.prompt)

    async def promote(self, winner: str) -> str | None:
        return None  # the config write that makes the winner summarize.prompt is the promotion
