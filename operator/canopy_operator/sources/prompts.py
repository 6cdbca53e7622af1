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
from canopy_operator.api.status import TestIdentity


@dataclass(frozen=True)
class Arms:
    """The prompts a test compares (``version`` is the store's name for a text, when it has one)."""

    champion: str
    challenger: str
    champion_version: str | None = None
    challenger_version: str | None = None


class StoreRefused(Exception):
    """The store cannot run or finish this test as the spec says; the message names the field or the alias.

    ``reason`` is the condition reason (``PromptAliasMoved``, ``PromptVersionMissing``, ...)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class PromptStore(Protocol):
    """Where the champion and challenger prompts are kept."""

    @property
    def settle_seconds(self) -> float:
        """How long after :meth:`promote` changed the store the application may still serve the old champion."""
        ...

    async def arms(self, spec: PromptExperimentSpec, configured_prompt: str | None) -> Arms | None:
        """The arms of a new test; None when there is no champion to test against (raises :class:`StoreRefused`)."""
        ...

    async def check(self, test: TestIdentity) -> None:
        """Raise :class:`StoreRefused` when the arms are no longer what the test started with (an alias moved):
        votes from before and after must not be pooled."""
        ...

    async def promote(self, winner: str, test: TestIdentity) -> str | None:
        """Make ``winner`` the champion in the store, exactly once however often it is called (a call after a
        crash finds the work done); what it did, or None when the config write itself carries the promotion."""
        ...


class ConfigTextPrompts:
    """Prompts as text in the delivered config (``summarize.prompt`` / ``summarize.prompt_b``)."""

    settle_seconds = 0.0

    async def arms(self, spec: PromptExperimentSpec, configured_prompt: str | None) -> Arms | None:
        champion = spec.champion.prompt if spec.champion.prompt is not None else configured_prompt
        return None if champion is None else Arms(champion=champion, challenger=spec.challenger_ref)

    async def check(self, test: TestIdentity) -> None:
        return None  # the texts are in the spec and the test's pinned champion: nothing can move under it

    async def promote(self, winner: str, test: TestIdentity) -> str | None:
        return None  # the config write that makes the winner summarize.prompt is the promotion
