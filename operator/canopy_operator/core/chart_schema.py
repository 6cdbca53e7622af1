"""The backend chart's schema facts (contract section 3), checked on a positioned values tree as Helm types it.

- ``LLAMA_STACK_URL`` is required at the top level.
- Every feature section (``summarize``, ``feedback``, ``ab_testing``, and the backend's other features) that is
  present must be a mapping holding ``enabled``: a section without it, or a null one, crashes the backend at
  start-up (``KeyError: 'enabled'`` / ``TypeError``).
- ``additionalProperties: false`` inside every section: ``feedback`` and ``ab_testing`` allow only ``enabled``
  (a real boolean); ``summarize`` allows only :data:`SUMMARIZE_KEYS`, its ``enabled`` is a real boolean, and
  an enabled ``summarize`` needs ``model``. Keys a ``<<`` merge brings in count like written ones (Helm merges
  them into the section).
- At the top level the chart allows no unknown key either; the operator only ever adds the three managed
  sections there, and the editor checks that every other top-level value is unchanged, so that fact needs no
  list of the chart's keys here.
- No duplicate keys (Helm's parser and PyYAML would silently disagree on which one wins).
"""

from __future__ import annotations

from collections.abc import Iterator

from canopy_operator.yamlsplice.pos import Mapping, Node, Scalar, Sequence, as_bool, as_text, deref, is_null, lookup

SUMMARIZE_KEYS = ("enabled", "model", "prompt", "max_tokens", "temperature", "prompt_b")
SWITCHES = ("feedback", "ab_testing")
"""Sections that hold nothing but ``enabled``."""
FEATURES = ("summarize", *SWITCHES, "information-search", "student-assistant", "shields", "socratic-tutor")
"""The backend's feature sections (its ``/feature-flags``); each one present must hold ``enabled``."""


def schema_problems(root: Mapping | None) -> Iterator[str]:
    """Every schema fact ``root`` (the document's top-level mapping, None when empty) breaks, by key path."""
    url = None if root is None else lookup(root, "LLAMA_STACK_URL")
    if url is None or is_null(url):
        yield "LLAMA_STACK_URL: required at the top level"
    yield from _duplicates(root, "")
    if root is None:
        return
    for feature in FEATURES:
        node = lookup(root, feature)
        if node is None:
            continue
        if feature == "summarize":
            yield from _summarize_problems(node)
        elif feature in SWITCHES:
            yield from _switch_problems(feature, node)
        else:
            yield from _feature_problems(feature, node)


def kind(node: Node) -> str:
    target = deref(node)
    if isinstance(target, Mapping):
        return "a mapping"
    return "a list" if isinstance(target, Sequence) else "a scalar"


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


def _keys(mapping: Mapping, depth: int = 0) -> Iterator[str]:
    """The section's keys as Helm sees them: written ones, then those ``<<`` merges bring in."""
    for knode, vnode in mapping.items:
        name = as_text(knode)
        if name != "<<":
            yield name or "?"
            continue
        source = deref(vnode)
        sources = [deref(s) for s in source.items] if isinstance(source, Sequence) else [source]
        for merged in sources:
            if isinstance(merged, Mapping) and depth < 8:
                yield from _keys(merged, depth + 1)


def _null_or_not_a_mapping(section: str, node: Node) -> str | None:
    if is_null(node):
        return f"{section}: must be a mapping holding 'enabled', found null (a null section crashes the backend)"
    if not isinstance(deref(node), Mapping):
        return f"{section}: must be a mapping holding 'enabled', found {kind(node)}"
    return None


def _missing_enabled(section: str) -> str:
    return f"{section}.enabled: required (a {section} section without it crashes the backend)"


def _summarize_problems(node: Node) -> Iterator[str]:
    wrong = _null_or_not_a_mapping("summarize", node)
    section = deref(node)
    if wrong is not None or not isinstance(section, Mapping):
        yield wrong or "summarize: must be a mapping"
        return
    for name in dict.fromkeys(_keys(section)):
        if name not in SUMMARIZE_KEYS:
            yield f"summarize.{name}: unknown key (the chart allows only {', '.join(SUMMARIZE_KEYS)})"
    enabled = lookup(section, "enabled")
    model = lookup(section, "model")
    if enabled is None:
        missing = "summarize.enabled" + ("" if model is not None else " and summarize.model")
        yield (
            "summarize.enabled: required (a summarize section without it crashes the backend); the operator "
            f"does not choose the model: add {missing} to the values file"
        )
    elif as_bool(enabled) is None:
        yield "summarize.enabled: must be a boolean (true or false, unquoted)"
    elif as_bool(enabled) and (model is None or not as_text(model)):
        yield "summarize.model: required when summarize.enabled is true"
    for key in ("prompt", "prompt_b"):
        value = lookup(section, key)
        if value is not None and not is_null(value) and not _is_text(value):
            yield f"summarize.{key}: must be a string"


def _is_text(node: Node) -> bool:
    target = deref(node)
    return isinstance(target, Scalar) and as_text(target) is not None and as_bool(target) is None


def _switch_problems(section: str, node: Node) -> Iterator[str]:
    wrong = _null_or_not_a_mapping(section, node)
    mapping = deref(node)
    if wrong is not None or not isinstance(mapping, Mapping):
        yield wrong or f"{section}: must be a mapping"
        return
    for name in dict.fromkeys(_keys(mapping)):
        if name != "enabled":
            yield f"{section}.{name}: unknown key (the chart allows only enabled)"
    enabled = lookup(mapping, "enabled")
    if enabled is None:
        yield _missing_enabled(section)
    elif as_bool(enabled) is None:
        yield f"{section}.enabled: must be a boolean (true or false, unquoted)"


def _feature_problems(section: str, node: Node) -> Iterator[str]:
    wrong = _null_or_not_a_mapping(section, node)
    if wrong is not None:
        yield wrong
        return
    mapping = deref(node)
    if isinstance(mapping, Mapping) and lookup(mapping, "enabled") is None:
        yield _missing_enabled(section)
