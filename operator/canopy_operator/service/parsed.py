"""The spec and status of an experiment as its pass parsed them, and what an idle pass may skip (issue #20).

A pass needs the status model twice (the pass itself, and the metrics watch) and the spec once; both are
immutable for a given object version: a spec for a ``(uid, generation)``, a status for a ``resourceVersion``.
:class:`ParsedObject` keeps the last value of each part and parses again only when that part's key changes. A
parse that fails keeps nothing (the pass reports it, as before). The models are never mutated (passes use
``model_copy``).

Between passes only small values stay (:data:`KEPT_BETWEEN_PASSES`: whether the stored status is exactly its
model's dump, one bool); the models themselves are dropped at the end of the pass (:meth:`ParsedObject.
end_pass`). Kept, the spec and status models were about 28 KiB of Python objects per experiment (tracemalloc,
a Running experiment: 14 MiB at 500), while parsing them again costs about 45 microseconds per pass (0.1 % of
a core for 500 experiments polled every 30 s; bench/RESULTS.md).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import Any, TypeVar

T = TypeVar("T")

KEPT_BETWEEN_PASSES = frozenset({"status-as-stored"})
"""The parts whose values are small enough to keep while the daemon sleeps."""


class ParsedObject:
    """The last parsed spec and status of one experiment, by the keys that make them immutable."""

    def __init__(self) -> None:
        self._kept: dict[str, tuple[Hashable, Any]] = {}
        self.parses = 0
        """How many parses were made (for tests)."""

    def get(self, part: str, key: Hashable, raw: Mapping[str, Any], parse: Callable[[Mapping[str, Any]], T]) -> T:
        """``parse(raw)``, or the value kept for ``part`` when it was parsed under the same ``key`` (None: never
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

    def end_pass(self) -> None:
        """Drop what is not kept between passes (the models)."""
        for part in [part for part in self._kept if part not in KEPT_BETWEEN_PASSES]:
            del self._kept[part]
