"""The four Helm values the operator manages, read from and written into a human-maintained values file.

Managed keys (contract section 3): ``summarize.prompt``, ``summarize.prompt_b``, ``feedback.enabled`` and
``ab_testing.enabled``. ``apply_managed`` changes only those: it parses the text with ruamel.yaml's
round-trip parser, which gives every node's exact position, and splices new text into just the bytes of the
changed items, so comments, key order, quoting, block scalars, indentation, anchors and document markers
elsewhere stay byte-for-byte (a full re-dump would re-indent and re-wrap the file). Every result is parsed
again and must read back as desired with all other values identical, or ``ValuesEditError`` is raised.

Conflict rule (``check_conflict``), per managed key: the current value is fine when it equals the desired
value ("already desired"), or when the operator has not written yet (``last_applied`` is None: "still the
original"), or when it equals what the operator last wrote ("still ours"). Anything else means a human set
that key to a third value after the operator's last write, and the operator refuses to overwrite it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, fields

from canopy_operator.yamlsplice.edit import (
    Edit,
    Layout,
    New,
    Section,
    Value,
    YamlEditError,
    append_to_document,
    insert_item,
    remove_item,
    replace_value,
    splice,
)
from canopy_operator.yamlsplice.pos import (
    Alias,
    Document,
    Mapping,
    Node,
    Scalar,
    Sequence,
    as_bool,
    as_text,
    compose,
    deref,
    find_item,
    is_aliased,
    is_null,
    lookup,
    to_data,
)


class ValuesEditError(ValueError):
    """The values file cannot be read or edited safely; the message names the key path."""


class ValuesConflict(Exception):
    """A human set managed keys to values that are neither the operator's last write nor the desired ones."""

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths
        super().__init__(
            f"{', '.join(paths)} changed outside the operator since its last write "
            "(now differs from both the last applied and the desired value)"
        )


@dataclass(frozen=True)
class ManagedKeys:
    """The managed values; None means the key (for the booleans: the whole section) is absent."""

    prompt: str | None
    prompt_b: str | None
    feedback_enabled: bool | None
    ab_testing_enabled: bool | None

    def __post_init__(self) -> None:
        if self.prompt_b == "":  # the backend treats an empty challenger as "no A/B test"
            object.__setattr__(self, "prompt_b", None)


#: field name -> (section, key)
PATHS: dict[str, tuple[str, str]] = {
    "prompt": ("summarize", "prompt"),
    "prompt_b": ("summarize", "prompt_b"),
    "feedback_enabled": ("feedback", "enabled"),
    "ab_testing_enabled": ("ab_testing", "enabled"),
}
SUMMARIZE_KEYS = ("enabled", "model", "prompt", "max_tokens", "temperature", "prompt_b")


def managed_hash(m: ManagedKeys) -> str:
    """A stable sha256 (hex) of the four managed values."""
    payload = json.dumps([getattr(m, f.name) for f in fields(m)], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()


def _document(text: str) -> Document | None:
    try:
        docs = compose(text)
    except ValueError as exc:
        raise ValuesEditError(f"the values file is not valid YAML: {exc}") from None
    if len(docs) > 1:
        raise ValuesEditError(f"the values file holds {len(docs)} YAML documents; Helm reads exactly one")
    return docs[0] if docs else None


def _root(doc: Document | None) -> Mapping | None:
    if doc is None or doc.root is None or is_null(doc.root):
        return None
    root = deref(doc.root)
    if not isinstance(root, Mapping):
        raise ValuesEditError("the values file's top level is not a mapping")
    return root


def _section(root: Mapping | None, name: str) -> Mapping | None:
    node = None if root is None else lookup(root, name)
    target = None if node is None else deref(node)
    return target if isinstance(target, Mapping) else None


def _read_root(root: Mapping | None) -> ManagedKeys:
    def get(section: str, key: str) -> Node | None:
        mapping = _section(root, section)
        return None if mapping is None else lookup(mapping, key)

    def text(section: str, key: str) -> str | None:
        node = get(section, key)
        return None if node is None else as_text(node)

    def flag(section: str) -> bool | None:
        node = get(section, "enabled")
        return None if node is None else as_bool(node)

    return ManagedKeys(text("summarize", "prompt"), text("summarize", "prompt_b"), flag("feedback"), flag("ab_testing"))


READ_CACHE_SIZE = 2048
"""Distinct texts whose managed values a :class:`ValuesReader` remembers (oldest forgotten first). Every
reconcile pass reads the ConfigMap; parsing the same text again cost a few ms of CPU per pass
(bench/RESULTS.md)."""


def read_managed(text: str) -> ManagedKeys:
    """The managed values as Helm sees them (``yes`` is a boolean, a quoted "true" is not)."""
    return _read_root(_root(_document(text)))


class ValuesReader:
    """:func:`read_managed` that remembers the texts it has read, up to ``size`` (one per operator process)."""

    def __init__(self, size: int = READ_CACHE_SIZE) -> None:
        self.size = size
        self.seen: dict[bytes, ManagedKeys] = {}

    def __call__(self, text: str) -> ManagedKeys:
        key = hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()
        keys = self.seen.get(key)
        if keys is None:
            keys = read_managed(text)
            while len(self.seen) >= self.size:
                del self.seen[next(iter(self.seen))]
            self.seen[key] = keys
        return keys


def _parse(text: str) -> tuple[Document | None, Mapping | None]:
    doc = _document(text)
    return doc, _root(doc)


def apply_managed(text: str, desired: ManagedKeys) -> str:
    """``text`` with the managed keys set to ``desired``; the very same string when nothing changes."""
    doc, root = _parse(text)
    if _read_root(root) == desired:
        return text
    out, out_doc, out_root = text, doc, root
    for name in PATHS:
        want = getattr(desired, name)
        if getattr(_read_root(out_root), name) != want:
            out = splice(out, _edits_for(Layout(out), out_doc, out_root, name, want))
            out_doc, out_root = _parse(out)
    _verify(root, out_root, desired)
    return out


def _edits_for(lay: Layout, doc: Document | None, root: Mapping | None, name: str, want: Value) -> list[Edit]:
    section, key = PATHS[name]
    try:
        if root is None:
            if want is None:
                return []
            return append_to_document(lay, doc, section, Section(key, want), 2)
        if want is None:
            return _unset(lay, root, section, key, is_flag=name.endswith("_enabled"))
        return _set(lay, root, section, key, want)
    except YamlEditError as exc:
        raise ValuesEditError(str(exc)) from None


def _set(lay: Layout, root: Mapping, section: str, key: str, want: Value) -> list[Edit]:
    step = lay.step(root)
    found = find_item(root, section)
    if found is None:
        if lookup(root, section) is not None:
            raise ValuesEditError(f"{section} comes from a '<<' merge; edit the file by hand")
        return insert_item(lay, root, None, section, Section(key, want), step)
    _, skey, svalue = found
    if isinstance(svalue, Alias):
        raise ValuesEditError(f"{section} is an alias of another node; edit the file by hand")
    if isinstance(svalue, Mapping):
        item = find_item(svalue, key)
        if item is not None:
            _refuse_shared_anchor(root, item[2], f"{section}.{key}")
            return replace_value(lay, svalue, item[1], item[2], want, step, f"{section}.{key}")
        after = find_item(svalue, "prompt") if key == "prompt_b" else None
        return insert_item(lay, svalue, None if after is None else after[0], key, want, step)
    if is_null(svalue) and isinstance(svalue, Scalar):
        return replace_value(lay, root, skey, svalue, Section(key, want), step, section)
    raise ValuesEditError(f"{section}: expected a mapping, found {_kind(svalue)}")


def _unset(lay: Layout, root: Mapping, section: str, key: str, is_flag: bool) -> list[Edit]:
    found = find_item(root, section)
    if found is None:
        if lookup(root, section) is not None:
            raise ValuesEditError(f"{section} comes from a '<<' merge; edit the file by hand")
        return []
    index, _, svalue = found
    if is_flag:
        return remove_item(lay, root, index, None, section)
    if not isinstance(svalue, Mapping):
        return []
    item = find_item(svalue, key)
    if item is not None:
        _refuse_shared_anchor(root, item[2], f"{section}.{key}")
        return remove_item(lay, svalue, item[0], found[1], f"{section}.{key}")
    # Only a '<<' merge provides it: hide it with an explicit empty value.
    blank: New = "" if key == "prompt_b" else None
    return insert_item(lay, svalue, None, key, blank, lay.step(root))


def _refuse_shared_anchor(root: Mapping, value: Node, path: str) -> None:
    if isinstance(value, Scalar) and value.anchor and is_aliased(root, value):
        raise ValuesEditError(f"{path} carries anchor &{value.anchor} that other keys use; edit the file by hand")


def _kind(node: Node) -> str:
    target = deref(node)
    if isinstance(target, Mapping):
        return "a mapping"
    return "a list" if isinstance(target, Sequence) else "a scalar"


def _unmanaged(root: Mapping | None) -> object:
    """Everything but the managed keys, as plain data, for the after-edit safety check."""
    if root is None:
        return []
    kept: list[object] = []
    for knode, vnode in root.items:
        name = as_text(knode)
        if name in ("feedback", "ab_testing"):
            continue
        value = to_data(vnode)
        if name == "summarize" and isinstance(deref(vnode), Mapping):
            value = [(k, v) for k, v in value if k not in (("str", "prompt"), ("str", "prompt_b"))]
        if name == "summarize" and not value:
            continue
        kept.append((to_data(knode), value))
    return kept


def _verify(before: Mapping | None, after: Mapping | None, desired: ManagedKeys) -> None:
    got = _read_root(after)
    if got != desired:
        wrong = [".".join(PATHS[n]) for n in PATHS if getattr(got, n) != getattr(desired, n)]
        raise ValuesEditError(f"editing did not produce the desired value of {', '.join(wrong)}")
    if _unmanaged(before) != _unmanaged(after):
        raise ValuesEditError("editing would change values outside the managed keys")


def check_conflict(current: ManagedKeys, last_applied: ManagedKeys | str | None, desired: ManagedKeys) -> None:
    """Raise ``ValuesConflict`` naming every managed key a human moved to a third value (rule: module doc).

    ``last_applied`` may also be the ``managed_hash`` of the last write (all the status keeps); then the rule
    is applied to the four keys together: a file that is neither as last written nor as desired conflicts on
    every key that differs from the desired value.
    """
    if last_applied is None or last_applied == "" or current == desired:
        return
    if isinstance(last_applied, str):
        if managed_hash(current) == last_applied:
            return
        clashes = [".".join(PATHS[n]) for n in PATHS if getattr(current, n) != getattr(desired, n)]
    else:
        clashes = [
            ".".join(PATHS[name])
            for name in PATHS
            if getattr(current, name) not in (getattr(desired, name), getattr(last_applied, name))
        ]
    if clashes:
        raise ValuesConflict(clashes)


def validate_values(text: str) -> list[str]:
    """What would break ``helm template``/the Argo sync or crash the backend; empty means writable."""
    try:
        root = _root(_document(text))
    except ValuesEditError as exc:
        return [str(exc)]
    return list(_schema_problems(root))


def _schema_problems(root: Mapping | None) -> Iterator[str]:
    url = None if root is None else lookup(root, "LLAMA_STACK_URL")
    if url is None or is_null(url):
        yield "LLAMA_STACK_URL: required at the top level"
    yield from _duplicates(root, "")
    if root is None:
        return
    yield from _summarize_problems(lookup(root, "summarize"))
    yield from _switch_problems("feedback", lookup(root, "feedback"), enabled_required=True)
    yield from _switch_problems("ab_testing", lookup(root, "ab_testing"), enabled_required=False)


def _duplicates(mapping: Mapping | None, path: str) -> Iterator[str]:
    if mapping is None:
        return
    seen: set[str] = set()
    for knode, vnode in mapping.items:
        name = as_text(knode) or "?"
        full = f"{path}.{name}" if path else name
        if name in seen:
            yield f"{full}: duplicate key"
        seen.add(name)
        if isinstance(vnode, Mapping):
            yield from _duplicates(vnode, full)


def _summarize_problems(node: Node | None) -> Iterator[str]:
    if node is None or is_null(node):
        return
    section = deref(node)
    if not isinstance(section, Mapping):
        yield f"summarize: must be a mapping, found {_kind(node)}"
        return
    for knode, _ in section.items:
        name = as_text(knode)
        if name not in SUMMARIZE_KEYS and name != "<<":
            yield f"summarize.{name}: unknown key (the chart allows only {', '.join(SUMMARIZE_KEYS)})"
    enabled = lookup(section, "enabled")
    if enabled is not None and as_bool(enabled) is None:
        yield "summarize.enabled: must be a boolean (true or false, unquoted)"
    model = lookup(section, "model")
    if enabled is not None and as_bool(enabled) and (model is None or not as_text(model)):
        yield "summarize.model: required when summarize.enabled is true"
    for key in ("prompt", "prompt_b"):
        value = lookup(section, key)
        if value is not None and not is_null(value) and not _is_text(value):
            yield f"summarize.{key}: must be a string"


def _is_text(node: Node) -> bool:
    target = deref(node)
    return isinstance(target, Scalar) and as_text(target) is not None and as_bool(target) is None


def _switch_problems(section: str, node: Node | None, enabled_required: bool) -> Iterator[str]:
    if node is None or (is_null(node) and not enabled_required):
        return
    mapping = deref(node)
    if not isinstance(mapping, Mapping):
        yield f"{section}: must be a mapping holding 'enabled'" + (
            " (a feedback section without it crashes the backend)" if enabled_required else ""
        )
        return
    for knode, _ in mapping.items:
        name = as_text(knode)
        if name != "enabled":
            yield f"{section}.{name}: unknown key (the chart allows only enabled)"
    enabled = lookup(mapping, "enabled")
    if enabled is None and enabled_required:
        yield f"{section}.enabled: required (a {section} section without it crashes the backend)"
    elif enabled is not None and as_bool(enabled) is None:
        yield f"{section}.enabled: must be a boolean (true or false, unquoted)"
