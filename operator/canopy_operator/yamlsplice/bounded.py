"""Bounded YAML: PyYAML's own scanner, parser and safe constructor, stopped at the first bound a text exceeds.

Text from a party we do not trust is read only through here. PyYAML is the backend's loader (``yaml.safe_load``),
so what this module accepts, positions and loads is exactly what the backend will see. The bounds (``Limits``):

- at most ``max_bytes`` of UTF-8 (1 MiB, the size of a ConfigMap);
- collections nested at most ``max_depth`` deep, block and flow alike, counting what aliases stand for: the
  scanner itself stops at the first ``[``/``{`` or indentation beyond it (PyYAML's scanner spends time
  proportional to the flow depth on every token, so ~12 KB of ``[`` would otherwise cost seconds), and no
  recursive composer, constructor or comparison ever sees a deeper tree (no ``RecursionError``);
- at most ``max_aliases`` alias events, no alias to a collection that is still open (a recursive structure),
  and at most ``max_alias_nodes`` nodes added by alias expansion (a 555-byte "billion laughs" expands to 9**9);
- at most ``max_nodes`` nodes written in the text: PyYAML's pure-Python parser spends 10-25 us on each, so
  this bounds the CPU one text can cost (about 1 s) far below what 1 MiB of ``[a,a,...`` would take
  (16 s), while a values file has a few thousand;
- a caller's deadline (``stop``), polled every few hundred events, so a parse running in a worker thread ends
  soon after the caller gave up on it.

Every check runs while the events stream by, so a hostile text is refused after the few events that prove it.
Errors are :class:`YamlSyntaxError` (not YAML; the message names line and column) or :class:`YamlLimitError`
(a bound; the message names it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.events import (
    AliasEvent,
    CollectionEndEvent,
    CollectionStartEvent,
    Event,
    NodeEvent,
    ScalarEvent,
)

MIB = 1024 * 1024
POLL_EVERY = 256
"""Events between two calls of ``Limits.stop``."""


@dataclass(frozen=True)
class Limits:
    """How much of a text this module reads before refusing it."""

    max_bytes: int = MIB
    max_depth: int = 64
    max_aliases: int = 1000
    max_alias_nodes: int = 100_000
    max_nodes: int = 50_000
    stop: Callable[[], bool] | None = field(default=None, compare=False)
    """Returns True once the caller's deadline has passed (None: no deadline)."""


LIMITS = Limits()


class YamlSyntaxError(ValueError):
    """The text is not YAML; the message names the line and column."""


class YamlLimitError(ValueError):
    """The text exceeds one of the bounds; the message names the bound (``bound``: a short name of it)."""

    def __init__(self, bound: str, message: str) -> None:
        super().__init__(message)
        self.bound = bound


def _where(mark: Any) -> str:
    return "" if mark is None else f" (line {mark.line + 1}, column {mark.column + 1})"


def check_size(text: str, limits: Limits = LIMITS) -> None:
    """Refuse a text above ``limits.max_bytes`` of UTF-8 before anything else looks at it."""
    size = len(text)
    if size * 4 > limits.max_bytes:  # only a long text needs encoding to be measured
        size = len(text.encode("utf-8", "surrogatepass"))
    if size > limits.max_bytes:
        raise YamlLimitError("bytes", f"{size} bytes is more than the {limits.max_bytes} bytes read at most")


@dataclass
class _Open:
    anchor: str | None
    size: int = 1
    height: int = 1


class _Budget:
    """The bounds applied to one event stream."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.stack: list[_Open] = []
        self.sizes: dict[str, tuple[int, int]] = {}
        """anchor -> (expanded node count, height) of the node it names (once that node is complete)."""
        self.aliases = 0
        self.expansion = 0
        self.events = 0
        self.nodes = 0

    def _deeper(self, height: int, mark: Any) -> None:
        if len(self.stack) + height > self.limits.max_depth:
            raise YamlLimitError("depth", f"collections nested more than {self.limits.max_depth} deep{_where(mark)}")

    def _complete(self, size: int, height: int, anchor: str | None) -> None:
        if anchor is not None:
            self.sizes[anchor] = (size, height)
        if self.stack:
            parent = self.stack[-1]
            parent.size += size
            parent.height = max(parent.height, height + 1)

    def see(self, event: Event) -> None:
        self.events += 1
        stop = self.limits.stop
        if stop is not None and self.events % POLL_EVERY == 0 and stop():
            raise YamlLimitError("time", "reading took longer than the deadline allows")
        if isinstance(event, NodeEvent):
            self.nodes += 1
            if self.nodes > self.limits.max_nodes:
                where = _where(event.start_mark)
                raise YamlLimitError("nodes", f"more than {self.limits.max_nodes} nodes{where}")
        if isinstance(event, AliasEvent):
            self._alias(event)
        elif isinstance(event, ScalarEvent):
            self._complete(1, 0, event.anchor)
        elif isinstance(event, CollectionStartEvent):
            self._deeper(1, event.start_mark)
            self.stack.append(_Open(event.anchor))
        elif isinstance(event, CollectionEndEvent) and self.stack:
            done = self.stack.pop()
            self._complete(done.size, done.height, done.anchor)

    def _alias(self, event: NodeEvent) -> None:
        self.aliases += 1
        if self.aliases > self.limits.max_aliases:
            raise YamlLimitError("aliases", f"more than {self.limits.max_aliases} aliases{_where(event.start_mark)}")
        anchor = event.anchor or ""
        if any(frame.anchor == anchor for frame in self.stack):
            where = _where(event.start_mark)
            raise YamlLimitError("aliases", f"alias *{anchor} refers to a collection that contains it{where}")
        size, height = self.sizes.get(anchor, (1, 0))  # an unknown anchor is the parser's error, reported later
        self._deeper(height, event.start_mark)
        self.expansion += size
        if self.expansion > self.limits.max_alias_nodes:
            raise YamlLimitError(
                "alias expansion",
                f"aliases expand to more than {self.limits.max_alias_nodes} nodes{_where(event.start_mark)}",
            )
        self._complete(size, height, None)


class _BoundedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` (the backend's loader) that checks every event against a budget."""

    def __init__(self, text: str, limits: Limits) -> None:
        super().__init__(text)
        self.budget = _Budget(limits)

    # Scanner hooks: stop before the scanner runs ahead through a deep flow or block nesting.
    def fetch_flow_collection_start(self, TokenClass: Any) -> None:
        self._check_scan_depth(1)
        super().fetch_flow_collection_start(TokenClass)

    def add_indent(self, column: int) -> bool:
        added: bool = super().add_indent(column)
        if added:
            self._check_scan_depth(0)
        return added

    def _check_scan_depth(self, more: int) -> None:
        depth = len(self.indents) + self.flow_level + more
        if depth > self.budget.limits.max_depth:
            mark = self.get_mark()
            raise YamlLimitError(
                "depth", f"collections nested more than {self.budget.limits.max_depth} deep{_where(mark)}"
            )

    def get_event(self) -> Event:
        event: Event = super().get_event()  # type: ignore[no-untyped-call]  # untyped in types-PyYAML
        self.budget.see(event)
        return event


def _syntax_error(exc: yaml.YAMLError) -> YamlSyntaxError:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1} column {mark.column + 1}: " if mark is not None else ""
        return YamlSyntaxError(f"{where}{exc.problem or exc.context}")
    return YamlSyntaxError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)


def events(text: str, limits: Limits = LIMITS) -> list[Event]:
    """Every event PyYAML's parser makes of ``text``, checked against ``limits``."""
    check_size(text, limits)
    try:
        loader = _BoundedLoader(text, limits)
        try:
            out: list[Event] = []
            while loader.check_event():
                out.append(loader.get_event())
            return out
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise _syntax_error(exc) from None
    except RecursionError:  # pragma: no cover - the depth bound keeps every recursion short
        raise YamlLimitError("depth", "nesting too deep to read") from None


def safe_load(text: str, limits: Limits = LIMITS) -> Any:
    """``yaml.safe_load(text)`` (one document) within ``limits``; constructor failures are syntax errors."""
    check_size(text, limits)
    return _constructed(lambda: _BoundedLoader(text, limits))


class _Replay(yaml.composer.Composer, yaml.constructor.SafeConstructor, yaml.resolver.Resolver):
    """``yaml.SafeLoader``'s composer, resolver and constructor fed with events already parsed (and checked
    against the bounds) by :func:`events`, instead of its scanner and parser reading the text again."""

    yaml_constructors = yaml.SafeLoader.yaml_constructors
    yaml_multi_constructors = yaml.SafeLoader.yaml_multi_constructors
    yaml_implicit_resolvers = yaml.SafeLoader.yaml_implicit_resolvers
    yaml_path_resolvers = yaml.SafeLoader.yaml_path_resolvers

    def __init__(self, parsed: list[Event]) -> None:
        self._events = parsed
        self._next = 0
        yaml.composer.Composer.__init__(self)
        yaml.constructor.SafeConstructor.__init__(self)
        yaml.resolver.Resolver.__init__(self)

    def check_event(self, *choices: type[Event]) -> bool:
        if self._next >= len(self._events):
            return False
        return not choices or isinstance(self._events[self._next], choices)

    def peek_event(self) -> Event | None:
        return self._events[self._next] if self._next < len(self._events) else None

    def get_event(self) -> Event:
        event = self._events[self._next]
        self._next += 1
        return event

    def dispose(self) -> None:
        pass


def load_events(parsed: list[Event]) -> Any:
    """What :func:`safe_load` returns for the text ``parsed`` came from (``events(text, limits)``), without
    scanning and parsing the text again: the same PyYAML composer, resolver and safe constructor, the same
    errors. The bounds were checked when the events were made."""
    return _constructed(lambda: _Replay(parsed))


def _constructed(make: Callable[[], Any]) -> Any:
    try:
        loader = make()
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise _syntax_error(exc) from None
    except RecursionError:  # pragma: no cover - the depth bound keeps every recursion short
        raise YamlLimitError("depth", "nesting too deep to read") from None
    except (ValueError, TypeError, OverflowError) as exc:  # e.g. an integer of more than 4300 digits
        if isinstance(exc, YamlLimitError):
            raise
        raise YamlSyntaxError(f"cannot construct a value: {type(exc).__name__}") from None
