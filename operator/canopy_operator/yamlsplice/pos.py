"""A YAML node tree that remembers where every node sits in the text, and Helm's reading of plain scalars.

PyYAML's parser (the backend's own loader, run within the bounds of :mod:`.bounded`) supplies the events and
their marks; this module composes them into nodes whose ``start``/``end`` are character offsets into the
original text, so an editor can splice new text into exactly the bytes of one value and leave every other byte
alone. Aliases stay visible as ``Alias`` nodes (an editor must replace the alias, never the anchored node it
points to), and are never expanded here.

Plain scalars are read the way Helm reads values files (go-yaml v2, YAML 1.1 booleans such as ``yes``),
because that is what decides what the backend finally sees.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from yaml.events import (
    AliasEvent,
    DocumentEndEvent,
    DocumentStartEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
)

from canopy_operator.yamlsplice.bounded import LIMITS, Limits, YamlSyntaxError, events

_TRUE = frozenset({"y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON"})
_FALSE = frozenset({"n", "N", "no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF"})
_NULL = frozenset({"", "~", "null", "Null", "NULL"})
_NUMBER = re.compile(
    r"[-+]?(\.[0-9]+|[0-9][0-9_]*(\.[0-9_]*)?|0x[0-9a-fA-F_]+|0o?[0-7_]+|0b[01_]+)([eE][-+]?[0-9]+)?"
    r"|[-+]?[0-9][0-9_]*(:[0-5]?[0-9])+(\.[0-9_]*)?|[-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN)"
)


@dataclass(eq=False)
class Scalar:
    value: str
    style: str | None
    """None for plain, ``'``, ``"``, ``|`` or ``>``."""
    tag: str | None
    anchor: str | None
    start: int
    end: int


@dataclass(eq=False)
class Mapping:
    flow: bool
    anchor: str | None
    start: int
    end: int
    items: list[tuple[Node, Node]] = field(default_factory=list)


@dataclass(eq=False)
class Sequence:
    flow: bool
    anchor: str | None
    start: int
    end: int
    items: list[Node] = field(default_factory=list)


@dataclass(eq=False)
class Alias:
    target: Node
    start: int
    end: int


Node = Scalar | Mapping | Sequence | Alias


@dataclass(eq=False)
class Document:
    root: Node | None
    end_marker: int | None
    """Offset of an explicit ``...`` document-end marker, if any."""


def compose(text: str, limits: Limits = LIMITS) -> list[Document]:
    """Every document in ``text`` as positioned nodes; raises ``YamlSyntaxError`` or ``YamlLimitError``."""
    return _Composer(events(text, limits)).documents()


def compose_events(parsed: list[Any]) -> list[Document]:
    """:func:`compose` of the events ``events(text, limits)`` made (the text is not parsed again)."""
    return _Composer(parsed).documents()


def _index(mark: Any) -> int:
    return int(mark.index) if mark is not None else 0


class _Composer:
    def __init__(self, events: list[Any]) -> None:
        self._events = events
        self._pos = 0
        self._anchors: dict[str, Node] = {}

    def _next(self) -> Any:
        event = self._events[self._pos]
        self._pos += 1
        return event

    def documents(self) -> list[Document]:
        docs: list[Document] = []
        for index, event in enumerate(self._events):
            if isinstance(event, DocumentStartEvent):
                self._pos = index + 1
                self._anchors = {}
                root = self._node()
                end = self._next()
                marker = _index(end.start_mark) if isinstance(end, DocumentEndEvent) and end.explicit else None
                docs.append(Document(root=root, end_marker=marker))
        return docs

    def _node(self) -> Node:
        event = self._next()
        node: Node
        if isinstance(event, AliasEvent):
            if event.anchor not in self._anchors:
                line = event.start_mark.line + 1 if event.start_mark is not None else 0
                raise YamlSyntaxError(f"line {line}: unknown or recursive alias *{event.anchor}")
            return Alias(self._anchors[event.anchor], _index(event.start_mark), _index(event.end_mark))
        if isinstance(event, ScalarEvent):
            tag = None if event.tag is None else str(event.tag)
            node = Scalar(event.value, event.style, tag, event.anchor, _index(event.start_mark), _index(event.end_mark))
        elif isinstance(event, MappingStartEvent):
            node = self._mapping(event)
        elif isinstance(event, SequenceStartEvent):
            node = self._sequence(event)
        else:  # pragma: no cover - the parser guarantees a node event here
            raise YamlSyntaxError(f"unexpected {type(event).__name__}")
        if event.anchor is not None:
            self._anchors[event.anchor] = node
        return node

    def _mapping(self, start: Any) -> Mapping:
        node = Mapping(bool(start.flow_style), start.anchor, _index(start.start_mark), _index(start.end_mark))
        while not isinstance(self._events[self._pos], MappingEndEvent):
            key = self._node()
            node.items.append((key, self._node()))
        node.end = _index(self._next().end_mark)
        return node

    def _sequence(self, start: Any) -> Sequence:
        node = Sequence(bool(start.flow_style), start.anchor, _index(start.start_mark), _index(start.end_mark))
        while not isinstance(self._events[self._pos], SequenceEndEvent):
            node.items.append(self._node())
        node.end = _index(self._next().end_mark)
        return node


def deref(node: Node) -> Scalar | Mapping | Sequence:
    """The node an alias stands for (or the node itself)."""
    while isinstance(node, Alias):
        node = node.target
    return node


def scalar_kind(node: Scalar) -> str:
    """How Helm types the scalar: ``null``, ``bool``, ``number`` or ``str``."""
    if node.tag is not None and node.tag not in ("!", "tag:yaml.org,2002:str", "!!str"):
        short = node.tag.rsplit(":", 1)[-1].lstrip("!")
        return {"bool": "bool", "null": "null", "int": "number", "float": "number"}.get(short, "str")
    if node.style is not None or node.tag is not None:
        return "str"
    if node.value in _NULL:
        return "null"
    if node.value in _TRUE or node.value in _FALSE:
        return "bool"
    if _NUMBER.fullmatch(node.value):
        return "number"
    return "str"


def is_null(node: Node) -> bool:
    target = deref(node)
    return isinstance(target, Scalar) and scalar_kind(target) == "null"


def as_bool(node: Node) -> bool | None:
    """The boolean Helm reads, or None when the node is not a real boolean."""
    target = deref(node)
    if not isinstance(target, Scalar) or scalar_kind(target) != "bool":
        return None
    return target.value in _TRUE or target.value.lower() == "true"


def as_text(node: Node) -> str | None:
    """The scalar's text (None for null or a collection)."""
    target = deref(node)
    if not isinstance(target, Scalar) or scalar_kind(target) == "null":
        return None
    return target.value


def key_name(node: Node) -> str | None:
    target = deref(node)
    return target.value if isinstance(target, Scalar) else None


def find_item(mapping: Mapping, key: str) -> tuple[int, Node, Node] | None:
    """The explicit item named ``key`` (index, key node, value node); merge keys are not followed."""
    for index, (knode, vnode) in enumerate(mapping.items):
        if key_name(knode) == key:
            return index, knode, vnode
    return None


def lookup(mapping: Mapping, key: str) -> Node | None:
    """The value Helm sees for ``key``: the explicit item, else the first ``<<`` merge that has it."""
    found = find_item(mapping, key)
    if found is not None:
        return found[2]
    merged = find_item(mapping, "<<")
    if merged is None:
        return None
    source = deref(merged[2])
    sources = [deref(s) for s in source.items] if isinstance(source, Sequence) else [source]
    for candidate in sources:
        if isinstance(candidate, Mapping):
            value = lookup(candidate, key)
            if value is not None:
                return value
    return None


def to_data(node: Node | None) -> Any:
    """Plain Python data (aliases resolved, ``<<`` kept as an ordinary key) for semantic comparisons."""
    if node is None:
        return None
    target = deref(node)
    if isinstance(target, Mapping):
        return [(to_data(k), to_data(v)) for k, v in target.items]
    if isinstance(target, Sequence):
        return [to_data(item) for item in target.items]
    kind = scalar_kind(target)
    if kind == "null":
        return None
    if kind == "bool":
        return as_bool(target)
    return (kind, target.value)


def is_aliased(root: Node, node: Node) -> bool:
    """Whether an alias anywhere under ``root`` points at ``node``."""
    if isinstance(root, Alias):
        return root.target is node
    if isinstance(root, Mapping):
        return any(is_aliased(k, node) or is_aliased(v, node) for k, v in root.items)
    if isinstance(root, Sequence):
        return any(is_aliased(item, node) for item in root.items)
    return False
