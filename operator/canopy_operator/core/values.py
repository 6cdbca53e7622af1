"""The four Helm values the operator manages, read from and written into a human-maintained values file.

Managed keys (contract section 3): ``summarize.prompt``, ``summarize.prompt_b``, ``feedback.enabled`` and
``ab_testing.enabled``. ``apply_managed`` changes only those: it parses the text with PyYAML's event stream
(the backend's own loader, within the bounds of ``yamlsplice.bounded``: size, nesting, aliases), which gives
every node's exact position, and splices new text into just the bytes of the changed items, so comments, key
order, quoting, block scalars, indentation, anchors and document markers elsewhere stay byte-for-byte (a full
re-dump would re-indent and re-wrap the file). Every result is parsed again and must read back as desired with
all other values identical, both as Helm types plain scalars and as ``yaml.safe_load`` (the backend) loads the
file, or ``ValuesEditError`` is raised. ``edit_values`` adds the chart's schema facts (``validate_values``):
that is the text the operator writes, or the error it reports as ``InvalidValues``.

A section is written whole or not at all. ``feedback`` and ``ab_testing`` hold only ``enabled``, so the editor
writes them whole. ``summarize`` also needs ``enabled`` and (when enabled) ``model``, and the operator cannot
know the model: a file without a ``summarize`` section that has both (the chart's own ``values-test.yaml``
holds only ``LLAMA_STACK_URL``) is refused with ``InvalidValues`` naming the missing keys, never completed
with a guess and never written as a partial section the chart rejects and the backend crashes on.

Conflict rule (``check_conflict``), per managed key: the current value is fine when it equals the desired
value ("already desired"), or when the operator has not written yet (``last_applied`` is None: "still the
original"), or when it equals what the operator last wrote ("still ours"). Anything else means a human set
that key to a third value after the operator's last write, and the operator refuses to overwrite it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, fields
from typing import Any

from canopy_operator.core.chart_schema import kind, schema_problems
from canopy_operator.yamlsplice.bounded import LIMITS, Limits, YamlLimitError, safe_load
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
    """The values file cannot be read or edited safely; the message names the key path (or the bound).

    ``problems``: the chart's schema facts the edited file would break (empty for other refusals)."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = list(problems or [])


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


def managed_hash(m: ManagedKeys) -> str:
    """A stable sha256 (hex) of the four managed values."""
    payload = json.dumps([getattr(m, f.name) for f in fields(m)], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()


def _document(text: str, limits: Limits = LIMITS) -> Document | None:
    try:
        docs = compose(text, limits)
    except YamlLimitError as exc:
        raise ValuesEditError(f"refused to read the values file ({exc.bound} bound): {exc}") from None
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


def read_managed(text: str, *, limits: Limits = LIMITS) -> ManagedKeys:
    """The managed values as Helm sees them (``yes`` is a boolean, a quoted "true" is not)."""
    return _read_root(_root(_document(text, limits)))


class ValuesReader:
    """:func:`read_managed` that remembers the texts it has read, up to ``size`` (one per operator process).

    A text it refused is remembered too (the same ``ValuesEditError`` is raised again without parsing), so a
    hostile text costs its parse once, not once per pass. Safe to call from worker threads (the delivery
    parses off the event loop): at worst two threads parse the same new text once each."""

    def __init__(self, size: int = READ_CACHE_SIZE, limits: Limits = LIMITS) -> None:
        self.size = size
        self.limits = limits
        self.seen: dict[bytes, ManagedKeys | str] = {}

    def __call__(self, text: str) -> ManagedKeys:
        key = hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()
        keys = self.seen.get(key)
        if keys is None:
            try:
                keys = read_managed(text, limits=self.limits)
            except ValuesEditError as exc:
                keys = str(exc)
            while len(self.seen) >= self.size:
                try:
                    self.seen.pop(next(iter(self.seen)), None)
                except (StopIteration, RuntimeError):  # another thread changed it meanwhile
                    break
            self.seen[key] = keys
        if isinstance(keys, str):
            raise ValuesEditError(keys)
        return keys


def _parse(text: str, limits: Limits) -> tuple[Document | None, Mapping | None]:
    doc = _document(text, limits)
    return doc, _root(doc)


def apply_managed(text: str, desired: ManagedKeys, *, limits: Limits = LIMITS) -> str:
    """``text`` with the managed keys set to ``desired``; the very same string when nothing changes.

    The result reads back as ``desired`` with every other value unchanged, as Helm types it and as PyYAML (the
    backend) loads it; anything else raises ``ValuesEditError``. Schema facts are ``validate_values``'s job
    (``edit_values`` does both)."""
    doc, root = _parse(text, limits)
    if _read_root(root) == desired:
        return text
    out, out_doc, out_root = text, doc, root
    for name in PATHS:
        want = getattr(desired, name)
        if getattr(_read_root(out_root), name) != want:
            out = splice(out, _edits_for(Layout(out), out_doc, out_root, name, want))
            out_doc, out_root = _parse(out, limits)
    _verify(root, out_root, desired)
    verify_loaded(text, out, desired, limits=limits)
    return out


def edit_values(text: str, desired: ManagedKeys, *, limits: Limits = LIMITS) -> str:
    """The text the operator writes for ``desired``: :func:`apply_managed`, then the chart's schema facts.

    Raises ``ValuesEditError`` saying what is wrong; nothing is to be written then."""
    edited = apply_managed(text, desired, limits=limits)
    problems = validate_values(edited, limits=limits)
    if problems:
        raise ValuesEditError(f"the edited file would break the chart: {'; '.join(problems)}", problems)
    return edited


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
    raise ValuesEditError(f"{section}: expected a mapping, found {kind(svalue)}")


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


def loaded_keys(data: Any) -> ManagedKeys:
    """The managed keys of a document as ``yaml.safe_load`` returned it (the backend's view)."""

    def get(section: str, key: str) -> Any:
        mapping = data.get(section) if isinstance(data, dict) else None
        return mapping.get(key) if isinstance(mapping, dict) else None

    def text(section: str, key: str) -> str | None:
        value = get(section, key)
        return value if isinstance(value, str) else None

    def flag(section: str) -> bool | None:
        value = get(section, "enabled")
        return value if isinstance(value, bool) else None

    return ManagedKeys(text("summarize", "prompt"), text("summarize", "prompt_b"), flag("feedback"), flag("ab_testing"))


def verify_loaded(before: str, after: str, desired: ManagedKeys, *, limits: Limits = LIMITS) -> None:
    """``after`` loads with ``yaml.safe_load`` (the backend's loader) to ``desired`` for the managed keys and
    to exactly what ``before`` loads to for everything else; ``ValuesEditError`` otherwise."""
    try:
        old, new = safe_load(before, limits), safe_load(after, limits)
    except YamlLimitError as exc:
        raise ValuesEditError(f"refused to read the values file ({exc.bound} bound): {exc}") from None
    except ValueError as exc:
        raise ValuesEditError(f"the edited file does not load with PyYAML (the backend's loader): {exc}") from None
    got = loaded_keys(new)
    wrong = [".".join(PATHS[n]) for n in PATHS if getattr(got, n) != getattr(desired, n)]
    if wrong:
        raise ValuesEditError(
            f"the edited file loads with PyYAML (the backend's loader) to other values of {', '.join(wrong)}"
        )
    if _canonical(_without_managed(old)) != _canonical(_without_managed(new)):
        raise ValuesEditError("editing would change values outside the managed keys as PyYAML loads them")


def _without_managed(data: Any) -> dict[Any, Any]:
    if not isinstance(data, dict):
        return {}
    out = {k: v for k, v in data.items() if k not in ("feedback", "ab_testing")}
    summarize = out.get("summarize", {})
    if isinstance(summarize, dict) or summarize is None:
        rest = {k: v for k, v in (summarize or {}).items() if k not in ("prompt", "prompt_b")}
        if rest:
            out["summarize"] = rest
        else:
            out.pop("summarize", None)
    return out


def _canonical(value: Any) -> object:
    """A comparable form that tells 1, 1.0 and True apart and equates NaN with NaN."""
    if isinstance(value, dict):
        return ("map", tuple((_canonical(k), _canonical(v)) for k, v in value.items()))
    if isinstance(value, list):
        return ("seq", tuple(_canonical(v) for v in value))
    if isinstance(value, set):
        return ("set", tuple(sorted(repr(_canonical(v)) for v in value)))
    if isinstance(value, str | bytes | bool | int) or value is None:
        return (type(value).__name__, value)
    return (type(value).__name__, repr(value))


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


def validate_values(text: str, *, limits: Limits = LIMITS) -> list[str]:
    """What would break ``helm template``/the Argo sync or crash the backend; empty means writable."""
    try:
        root = _root(_document(text, limits))
    except ValuesEditError as exc:
        return [str(exc)]
    return list(schema_problems(root))
