"""The spec and status of an experiment as its daemon last parsed them (issue #20, "CPU per pass").

An idle pass used to validate the same spec and status into models on every pass (and the pass's metrics watch
validated the status once more): about 8 % of the idle operator's CPU at 500 experiments (py-spy). Both are
immutable for a given object version: a spec for a ``(uid, generation)``, a status for a ``resourceVersion``.
:class:`ParsedObject` keeps the last model of each and parses again only when that key changes. A parse that
fails keeps nothing (the pass reports it, as before). The models are never mutated (passes use ``model_copy``).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import Any, TypeVar

T = TypeVar("T")


class ParsedObject:
    """The last parsed spec and status of one experiment, by the keys that make them immutable."""

    def __init__(self) -> None:
        self._kept: dict[str, tuple[Hashable, Any]] = {}
        self.parses = 0
        """How many parses were made (for tests)."""

    def get(self, part: str, key: Hashable, raw: Mapping[str, Any], parse: Callable[[Mapping[str, Any]], T]) -> T:
        """``parse(raw)``, or the model kept for ``part`` when it was parsed under the same ``key`` (None: never
        kept, always parsed)."""
        kept = self._kept.get(part)
        if key is not None and kept is not None and kept[0] == key:
            value: T = kept[1]
            return value
        self.parses += 1
        value = parse(raw)
        if key is not None:
            self._kept[part] = (key, value)
        return value
