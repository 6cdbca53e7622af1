"""The MLflow prompt registry as a :class:`~canopy_operator.sources.prompts.PromptStore`.

The champion is an alias (``prompts:/<name>@champion``, what the application loads), the challenger a concrete
version. At test start the alias is resolved and pinned in status; every poll re-reads it, and a moved alias
stops the test (votes for two champions are never pooled). Promotion moves the alias to the challenger's
version, exactly once however often it is asked (a call after a crash finds the alias already there), and never
over someone else's move; the version it named before is kept in status for a rollback. The application caches
alias lookups (60 s by default in MLflow 3 clients), so the promotion completes ``aliasCache`` after the move.
"""

from __future__ import annotations

from typing import Protocol

from canopy_operator.api.base import parse_duration
from canopy_operator.api.spec import MlflowRegistryPrompts, PromptExperimentSpec
from canopy_operator.api.status import TestIdentity
from canopy_operator.sources.prompts import Arms, StoreRefused


class RegistryClient(Protocol):
    """The three registry calls the store makes (``sources.mlflow.client.MlflowClient``)."""

    async def alias_version(self, name: str, alias: str) -> str | None:
        """The version ``alias`` names, or None when the alias (or the prompt) does not exist."""
        ...

    async def version_exists(self, name: str, version: str) -> bool: ...

    async def set_alias(self, name: str, alias: str, version: str) -> None: ...


class MlflowRegistryStore:
    """Arms pinned to registry versions; promotion by one alias move."""

    def __init__(self, client: RegistryClient, config: MlflowRegistryPrompts) -> None:
        self.client = client
        self.name = config.name
        self.alias = config.champion_alias
        self.settle_seconds = parse_duration(config.alias_cache)

    @property
    def ref(self) -> str:
        return f"prompts:/{self.name}@{self.alias}"

    async def arms(self, spec: PromptExperimentSpec, configured_prompt: str | None) -> Arms | None:
        champion = configured_prompt if configured_prompt is not None else self.alias
        if champion.removeprefix("@") != self.alias:
            raise StoreRefused(
                "ChampionNotAlias",
                f"the configured champion is {champion[:64]!r}, not the alias {self.alias!r} of "
                "spec.prompts.mlflow.championAlias: moving the alias would not change what the application serves",
            )
        champion_version = await self.client.alias_version(self.name, self.alias)
        if champion_version is None:
            raise StoreRefused(
                "PromptAliasMissing", f"{self.ref} does not exist (spec.prompts.mlflow.name, championAlias)"
            )
        challenger = str(spec.challenger.version)
        if not await self.client.version_exists(self.name, challenger):
            raise StoreRefused(
                "PromptVersionMissing",
                f"spec.challenger.version {challenger}: prompts:/{self.name}/{challenger} does not exist",
            )
        if challenger == champion_version:
            raise StoreRefused(
                "InvalidSpec", f"spec.challenger.version {challenger} is the version {self.ref} names (the champion)"
            )
        return Arms(
            champion=champion, challenger=challenger, champion_version=champion_version, challenger_version=challenger
        )

    async def check(self, test: TestIdentity) -> None:
        now = await self.client.alias_version(self.name, self.alias)
        if now != test.champion_version:
            raise StoreRefused("PromptAliasMoved", self._moved(test, now))

    async def promote(self, winner: str, test: TestIdentity) -> str | None:
        if test.challenger_version is None or winner != test.challenger_version:
            return None  # the champion stays: the alias already names it
        now = await self.client.alias_version(self.name, self.alias)
        if now == winner:
            return f"{self.ref} names version {winner}"  # moved by an earlier call (a crash came in between)
        if now != test.champion_version:
            raise StoreRefused("PromptAliasMoved", self._moved(test, now) + "; the promotion does not overwrite it")
        await self.client.set_alias(self.name, self.alias, winner)
        return f"{self.ref}: version {test.champion_version} -> {winner}"

    def _moved(self, test: TestIdentity, now: str | None) -> str:
        where = f"version {now}" if now is not None else "nothing (the alias was deleted)"
        return (
            f"{self.ref} moved from version {test.champion_version} to {where} during test {test.id}: votes for two "
            "champions are not pooled; move the alias back, or change the spec to start a new test"
        )
