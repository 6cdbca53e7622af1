"""Render one scalar value as YAML text that Helm (go-yaml) and the backend read back unchanged.

Multi-line texts become literal block scalars (``|`` or ``|-`` as their trailing newline needs, with an
indentation indicator when the first line starts with a space; texts ending in blank lines are quoted instead,
because ``|+`` would swallow any blank line written after it); single-line texts stay plain when that is
unambiguous in YAML 1.1 and 1.2 alike, else single-quoted, else double-quoted with escapes. Inside a flow
collection (``summarize: {...}``) a plain scalar must also avoid ``?``, ``:`` and ``#``, which end it there for
PyYAML. Every rendering is parsed back, in the context it will be written to (block or flow), with the
positioned parser and with ``yaml.safe_load`` (the backend's loader) before it is used; anything that does not
survive falls back to double quotes, which always do.
"""

from __future__ import annotations

from canopy_operator.yamlsplice.bounded import safe_load
from canopy_operator.yamlsplice.pos import Mapping, Node, Scalar, compose, deref, scalar_kind

_SAFE_PUNCTUATION = frozenset(" _.,;!?()/'\"-+=%$@&*<>")
_FLOW_UNSAFE = frozenset(",[]{}?:#")
_SPECIAL_WORDS = frozenset({"y", "n", "yes", "no", "true", "false", "on", "off", "null", "nan", "inf"})
_LINE_BREAKS = frozenset("\r\x85\u2028\u2029")
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r", "\0": "\\0"}


def render_bool(value: bool) -> str:
    return "true" if value else "false"


def double_quoted(text: str) -> str:
    """Always-correct rendering: JSON-like escapes for anything unprintable."""
    out: list[str] = []
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ch == " " or ch.isprintable():
            out.append(ch)
        elif ord(ch) < 0x100:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) < 0x10000:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    return '"' + "".join(out) + '"'


def _plain_ok(text: str, flow: bool) -> bool:
    if not text or not text[0].isalpha() or text != text.strip() or text.lower() in _SPECIAL_WORDS:
        return False
    for ch in text:
        if flow and ch in _FLOW_UNSAFE:
            return False
        if not (ch.isalnum() or ch in _SAFE_PUNCTUATION):
            return False
    return True


def _only_value(node: Node | None) -> Node | None:
    """The value of a mapping's single item (None when ``node`` is not such a mapping)."""
    target = None if node is None else deref(node)
    if not isinstance(target, Mapping) or len(target.items) != 1:
        return None
    return target.items[0][1]


def _reads_back(rendered: str, expected: str, flow: bool = False) -> bool:
    """Whether ``k: rendered`` (``k: {k: rendered}`` in flow context) reads back as the text ``expected``."""
    document = f"k: {{k: {rendered}}}\n" if flow else f"k: {rendered}"
    if not document.endswith("\n"):
        document += "\n"
    try:
        docs = compose(document)
        loaded = safe_load(document)
    except ValueError:
        return False
    if len(docs) != 1:
        return False
    node = _only_value(docs[0].root)
    if flow:
        node = _only_value(node)
    want = {"k": {"k": expected}} if flow else {"k": expected}
    if node is None or loaded != want:
        return False
    target = deref(node)
    return isinstance(target, Scalar) and scalar_kind(target) == "str" and target.value == expected


def render_inline(text: str, flow: bool = False) -> str:
    """A single-line rendering (plain, single- or double-quoted) that reads back as ``text``."""
    if _plain_ok(text, flow) and _reads_back(text, text, flow):
        return text
    if all(ch.isprintable() for ch in text):
        quoted = "'" + text.replace("'", "''") + "'"
        if _reads_back(quoted, text, flow):
            return quoted
    return double_quoted(text)


def _block_lines(text: str, header: str, indent: str, newline: str) -> str:
    lines = text.split("\n")
    if text.endswith("\n"):
        lines = lines[:-1]
    body = newline.join(indent + line if line else "" for line in lines)
    return f"{header}{newline}{body}{newline}"


def render_block(text: str, step: int, newline: str = "\n") -> tuple[str, str] | None:
    """``(header, body)`` of a literal block scalar for ``text`` (None when a block cannot carry it).

    ``body`` is indented by ``step`` relative to its key and ends with a line break; the caller prefixes
    the key's own indentation to each non-empty body line via ``indent_body``.
    """
    if "\n" not in text or not text.strip("\n") or any(ch in _LINE_BREAKS for ch in text):
        return None
    if any(not (ch.isprintable() or ch in "\n\t") for ch in text):
        return None
    trailing = len(text) - len(text.rstrip("\n"))
    if trailing > 1:  # "|+" would swallow any blank line a human later puts after it
        return None
    chomp = "-" if trailing == 0 else ""
    first = next(line for line in text.split("\n") if line)
    indicator = str(step) if first.startswith((" ", "\t")) else ""
    header = f"|{indicator}{chomp}"
    sample = _block_lines(text, header, " " * step, "\n")
    if not _reads_back(sample, text):
        return None
    body = _block_lines(text, "", " " * step, newline)[len(newline) :]
    return header, body


def indent_body(body: str, indent: int, newline: str = "\n") -> str:
    """Shift every non-empty line of a rendered block body right by ``indent`` spaces."""
    if indent == 0:
        return body
    pad = " " * indent
    return newline.join(pad + line if line else "" for line in body.split(newline))


def render_value(value: str | bool | None, key_column: int, step: int, newline: str = "\n") -> tuple[str, str]:
    """``(first_line_text, following_lines)`` of ``value`` in block context for a key at ``key_column``.

    ``first_line_text`` goes after ``key: `` (a scalar, or a block header); ``following_lines`` is empty or
    the indented block body ending with a line break.
    """
    if value is None:
        return "null", ""
    if isinstance(value, bool):
        return render_bool(value), ""
    block = render_block(value, step, newline)
    if block is None:
        return render_inline(value), ""
    header, body = block
    return header, indent_body(body, key_column, newline)


def render_flow(value: str | bool | None) -> str:
    """A rendering valid inside a flow collection (``{...}``)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return render_bool(value)
    return render_inline(value, flow=True)
