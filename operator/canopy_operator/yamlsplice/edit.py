"""Surgical edits of one mapping item in YAML text: replace a value, insert an item, remove an item.

Each function returns ``Edit`` splices computed from a positioned tree (``yamlpos``); ``splice`` applies them.
Only the bytes of the item being changed are touched: the rest of the line's comment is carried over,
indentation follows the surrounding items, anchors on a replaced value are kept, and a block scalar's
trailing blank lines (which separate it from the next item) are left in place.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from canopy_operator.yamlsplice.pos import Alias, Document, Mapping, Node, Scalar, Sequence, key_name
from canopy_operator.yamlsplice.render import render_flow, render_value

Value = str | bool | None


@dataclass(frozen=True)
class Section:
    """A one-item nested mapping to write, such as ``feedback: {enabled: true}``."""

    key: str
    value: Value


New = Value | Section


class YamlEditError(ValueError):
    """The text has a shape this editor will not change by splicing (the message says which key)."""


@dataclass(frozen=True)
class Edit:
    start: int
    end: int
    text: str


def splice(text: str, edits: list[Edit]) -> str:
    """Apply non-overlapping edits (an insertion has ``start == end``)."""
    out = text
    last = len(text) + 1
    for edit in sorted(edits, key=lambda e: (e.start, e.end), reverse=True):
        if edit.end > last:
            raise YamlEditError("overlapping edits")  # pragma: no cover - guarded by construction
        out = out[: edit.start] + edit.text + out[edit.end :]
        last = edit.start
    return out


_COLON = re.compile(r"[ \t]*:")
_COMMENT = re.compile(r"[ \t]*(#.*)?")
_BLOCK_HEADER = re.compile(r"[|>][0-9+-]*")


class Layout:
    """Line arithmetic over one text."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.newline = "\r\n" if "\r\n" in text else "\n"

    def line_start(self, index: int) -> int:
        return self.text.rfind("\n", 0, index) + 1

    def column(self, index: int) -> int:
        return index - self.line_start(index)

    def content_end(self, index: int) -> int:
        """Where the line holding ``index`` stops, before its line break."""
        nl = self.text.find("\n", index)
        if nl < 0:
            return len(self.text)
        return nl - 1 if nl > 0 and self.text[nl - 1] == "\r" else nl

    def line_break_end(self, index: int) -> int:
        """Just past the line break ending the line that holds ``index`` (or the end of the text)."""
        nl = self.text.find("\n", index)
        return len(self.text) if nl < 0 else nl + 1

    def is_blank_line(self, index: int) -> bool:
        return not self.text[index : self.content_end(index)].strip()

    def blank_line_before(self, line_start: int) -> bool:
        return line_start > 0 and self.is_blank_line(self.line_start(line_start - 1))

    def rest_of_line(self, index: int, what: str) -> str:
        """Whitespace and comment after a value; anything else means the line is not ours to rewrite."""
        rest = self.text[index : self.content_end(index)]
        if not _COMMENT.fullmatch(rest):
            raise YamlEditError(f"{what}: unexpected text after the value on its line")
        return rest

    def colon_end(self, key: Node, what: str) -> int:
        match = _COLON.match(self.text, key.end)
        if match is None:
            raise YamlEditError(f"{what}: cannot find the ':' after the key")
        return match.end()

    def step(self, root: Mapping) -> int:
        """The indentation step the file uses (2 unless its first nested block mapping says otherwise)."""
        for key, value in root.items:
            if isinstance(value, Mapping) and not value.flow and value.items:
                step = self.column(value.items[0][0].start) - self.column(key.start)
                if 1 <= step <= 9:
                    return step
        return 2

    def last_end(self, node: Node) -> int:
        """Offset just past the last character of the node's own text (block collections: their last leaf)."""
        if isinstance(node, Mapping | Sequence) and not node.flow:
            last: Node = node.items[-1][1] if isinstance(node, Mapping) else node.items[-1]
            return self.last_end(last)
        return node.end

    def region_end(self, node: Node) -> int:
        """Just past the line break that ends the node (a block scalar keeps its trailing blank lines out)."""
        if isinstance(node, Mapping | Sequence) and not node.flow:
            return self.region_end(node.items[-1][1] if isinstance(node, Mapping) else node.items[-1])
        if isinstance(node, Scalar) and node.style in ("|", ">"):
            return self._block_core_end(node)
        return self.line_break_end(node.end)

    def _block_core_end(self, node: Scalar) -> int:
        """Where a block scalar's content ends: trailing empty lines belong to whatever follows, unless ``+``.

        An empty line holds only spaces, no more than the content's indentation; a line of more spaces, or with
        a tab, is content (PyYAML's reading).
        """
        header = _BLOCK_HEADER.search(self.text, node.start)
        lines = self.text[node.start : node.end].splitlines(keepends=True)
        if header is None or "+" not in header.group(0):
            indent = self._block_indent(header, lines)
            while len(lines) > 1 and _empty_line(lines[-1], indent):
                lines.pop()
        return node.start + sum(len(line) for line in lines)

    def _block_indent(self, header: re.Match[str] | None, lines: list[str]) -> int:
        """The content indentation of a block scalar whose header and lines are given."""
        digits = [ch for ch in (header.group(0) if header else "") if ch.isdigit()]
        if digits:  # explicit: relative to the indentation of the line holding the header
            first = lines[0] if lines else ""
            return len(first) - len(first.lstrip(" ")) + int(digits[0])
        for line in lines[1:]:
            body = line.rstrip("\r\n")
            if body.strip(" "):
                return len(body) - len(body.lstrip(" "))
        return 0

    def block_header(self, node: Scalar) -> tuple[int, str]:
        """End of a block scalar's indicators and the comment after them."""
        header = _BLOCK_HEADER.search(self.text, node.start)
        if header is None:  # pragma: no cover - the parser said this is a block scalar
            raise YamlEditError("block scalar without header")
        return header.end(), self.text[header.end() : self.content_end(header.end())]


def _empty_line(line: str, indent: int) -> bool:
    body = line.rstrip("\r\n")
    return not body.strip(" ") and len(body) <= indent


def _is_empty_plain(node: Node) -> bool:
    return isinstance(node, Scalar) and node.style is None and node.value == "" and node.tag is None


def _anchor_prefix(node: Node) -> str:
    anchor = node.anchor if isinstance(node, Scalar) else None
    return f"&{anchor} " if anchor else ""


def render_item(lay: Layout, key: str, new: New, column: int, step: int) -> str:
    """Complete block lines ``key: value`` at ``column``, ending with a line break."""
    pad, nl = " " * column, lay.newline
    if isinstance(new, Section):
        return f"{pad}{key}:{nl}" + render_item(lay, new.key, new.value, column + step, step)
    first, following = render_value(new, column, step, nl)
    return f"{pad}{key}: {first}{nl}{following}"


def _render_flow(new: New) -> str:
    if isinstance(new, Section):
        return f"{{{new.key}: {render_flow(new.value)}}}"
    return render_flow(new)


def replace_value(lay: Layout, mapping: Mapping, key: Node, value: Node, new: New, step: int, what: str) -> list[Edit]:
    """Rewrite the value of an existing item, keeping the comment on its line."""
    if mapping.flow:
        if _is_empty_plain(value):
            raise YamlEditError(f"{what}: empty value inside a flow mapping")
        return [Edit(value.start, value.end, _anchor_prefix(value) + _render_flow(new))]
    if isinstance(value, Mapping | Sequence) and not value.flow:
        raise YamlEditError(f"{what}: is a block {type(value).__name__.lower()}, expected a scalar")
    column = lay.column(key.start)
    if isinstance(new, Section):
        return [_scalar_to_section(lay, key, value, new, column + step, step, what)]
    lead = ""
    if _is_empty_plain(value):
        start = lay.colon_end(key, what)
        comment = lay.rest_of_line(start, what)
        end, lead = lay.line_break_end(start), " "
    elif isinstance(value, Scalar) and value.style in ("|", ">"):
        start = value.start
        comment = lay.block_header(value)[1]
        end = lay.region_end(value)
    else:
        start = value.start
        comment = lay.rest_of_line(value.end, what)
        end = lay.line_break_end(value.end)
    first, following = render_value(new, column, step, lay.newline)
    tail = lay.newline if lay.text[start:end].endswith("\n") or following else ""
    return [Edit(start, end, f"{lead}{_anchor_prefix(value)}{first}{comment}{tail}{following}")]


def _scalar_to_section(lay: Layout, key: Node, value: Node, new: Section, column: int, step: int, what: str) -> Edit:
    """Turn ``key: ~`` (or an empty value) into a nested block mapping holding ``new``."""
    if not isinstance(value, Scalar) or value.style is not None or value.anchor:
        raise YamlEditError(f"{what}: expected a mapping or nothing")
    start = lay.colon_end(key, what)
    after = start if _is_empty_plain(value) else value.end
    comment = lay.rest_of_line(after, what)
    body = render_item(lay, new.key, new.value, column, step)
    return Edit(start, lay.line_break_end(after), f"{comment}{lay.newline}{body}")


def insert_item(lay: Layout, mapping: Mapping, after: int | None, key: str, new: New, step: int) -> list[Edit]:
    """Add ``key: new`` after item ``after`` (default: the last item)."""
    if mapping.flow:
        if not mapping.items:
            return [Edit(mapping.start + 1, mapping.start + 1, f"{key}: {_render_flow(new)}")]
        anchor = mapping.items[-1 if after is None else after][1]
        return [Edit(anchor.end, anchor.end, f", {key}: {_render_flow(new)}")]
    column = lay.column(mapping.items[0][0].start)
    anchor = mapping.items[-1 if after is None else after][1]
    position = lay.region_end(anchor)
    text = render_item(lay, key, new, column, step)
    if position == len(lay.text) and lay.text and not lay.text.endswith("\n"):
        text = lay.newline + text
    return [Edit(position, position, text)]


def remove_item(lay: Layout, mapping: Mapping, index: int, parent_key: Node | None, what: str) -> list[Edit]:
    """Delete one item; a nested block mapping left empty becomes ``{}`` (null would delete Helm defaults)."""
    key, value = mapping.items[index]
    if mapping.flow:
        if len(mapping.items) == 1:
            return [Edit(mapping.start + 1, mapping.end - 1, "")]
        if index + 1 < len(mapping.items):
            return [Edit(key.start, mapping.items[index + 1][0].start, "")]
        return [Edit(lay.last_end(mapping.items[index - 1][1]), value.end, "")]
    start = lay.line_start(key.start)
    if lay.text[start : key.start].strip():
        raise YamlEditError(f"{what}: the key does not start its own line")
    end = lay.region_end(value)
    previous_end = lay.region_end(mapping.items[index - 1][1]) if index > 0 else 0
    separated = start > 0 and lay.blank_line_before(start) and lay.line_start(start - 1) >= previous_end
    if separated and (end == len(lay.text) or lay.is_blank_line(end)):
        start = lay.line_start(start - 1)  # drop the blank line that separated the removed item
    edits = [Edit(start, end, "")]
    if len(mapping.items) == 1 and parent_key is not None:
        colon = lay.colon_end(parent_key, what)
        edits.append(Edit(colon, colon, " {}"))
    return edits


def append_to_document(lay: Layout, doc: Document | None, key: str, new: New, step: int) -> list[Edit]:
    """Add a top-level item to a document that has no mapping yet (empty, comments only, or null)."""
    position = len(lay.text) if doc is None or doc.end_marker is None else doc.end_marker
    text = render_item(lay, key, new, 0, step)
    if position > 0 and lay.text[position - 1] != "\n":
        text = lay.newline + text
    edits = [Edit(position, position, text)]
    root = None if doc is None else doc.root
    if isinstance(root, Scalar) and root.value:  # drop an explicit ``~``/``null`` root beside the new mapping
        edits.append(Edit(root.start, root.end, ""))
    if isinstance(root, Alias):
        raise YamlEditError("the document root is an alias")
    return edits


def item_path(parent: str, key: Node) -> str:
    name = key_name(key) or "?"
    return f"{parent}.{name}" if parent else name
