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

Generation 2 (``generation2_problems``; the course's ``config.yaml``, vote-sources.md): the chart sets
``additionalProperties: false`` inside ``summarization``, ``ab_testing`` and ``feedback`` (allowed keys:
:data:`GEN2_SECTIONS`), each present one must be a mapping, every ``enabled`` a real boolean,
``summarization.mlflow_prompt_version`` a string or an integer, and ``ab_testing.mlflow_prompt_b_version`` an
integer of at least 1, a string holding one, or ``latest``. A ``summarization`` section needs ``enabled`` and
``mlflow_prompt`` (the registry's prompt name): the operator cannot choose either. No other key is checked there:
the operator adds nothing but those three sections and checks that every other value is unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from canopy_operator.yamlsplice.pos import (
    Mapping,
    Node,
    Scalar,
    Sequence,
    as_bool,
    as_text,
    deref,
    is_null,
    lookup,
    scalar_kind,
)

SUMMARIZE_KEYS = ("enabled", "model", "prompt", "max_tokens", "temperature", "prompt_b")
SWITCHES = ("feedback", "ab_testing")
"""Sections that hold nothing but ``enabled``."""
FEATURES = ("summarize", *SWITCHES, "information-search", "student-assistant", "shields", "socratic-tutor")
"""The backend's feature sections (its ``/feature-flags``); each one present must hold ``enabled``."""
GEN2_SECTIONS: dict[str, tuple[str, ...]] = {
    "summarization": (
        "enabled",
        "endpoint",
        "model",
        "temperature",
        "max_tokens",
        "mlflow_prompt",
        "mlflow_prompt_version",
    ),
    "ab_testing": ("enabled", "mlflow_prompt_b_version"),
    "feedback": ("enabled",),
}
"""Generation 2: the sections the operator edits and the keys the chart allows in each."""
GEN2_REQUIRED = ("enabled", "mlflow_prompt")
"""Generation 2: what a ``summarization`` section must hold (the operator cannot choose them)."""
_DECIMAL = re.compile(r"[-+]?[0-9]+")
_VERSION = re.compile(r"[1-9][0-9]*")


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


def generation2_problems(root: Mapping | None) -> Iterator[str]:
    """Every Generation 2 schema fact ``root`` breaks, by key path (the module doc lists them)."""
    yield from _duplicates(root, "")
    if root is None:
        return
    for name, allowed in GEN2_SECTIONS.items():
        node = lookup(root, name)
        if node is None:
            continue
        section = deref(node)
        if is_null(node) or not isinstance(section, Mapping):
            yield f"{name}: must be a mapping, found {'null' if is_null(node) else kind(node)}"
            continue
        for key in dict.fromkeys(_keys(section)):
            if key not in allowed:
                yield f"{name}.{key}: unknown key (the chart allows only {', '.join(allowed)})"
        enabled = lookup(section, "enabled")
        if enabled is not None and as_bool(enabled) is None:
            yield f"{name}.enabled: must be a boolean (true or false, unquoted)"
        if name == "summarization":
            yield from _summarization_problems(section)
        elif name == "ab_testing":
            version = lookup(section, "mlflow_prompt_b_version")
            if version is not None and not _is_b_version(version):
                yield (
                    "ab_testing.mlflow_prompt_b_version: must be a registry version (an integer of at least 1, "
                    f"or a string holding one) or latest, found {_shown(version)}"
                )


def _summarization_problems(section: Mapping) -> Iterator[str]:
    missing = [f"summarization.{key}" for key in GEN2_REQUIRED if lookup(section, key) is None]
    if missing:
        them = "them" if len(missing) > 1 else "it"
        yield (
            f"{', '.join(missing)}: required in a summarization section; the operator does not choose {them}: add "
            f"{' and '.join(missing)} to the values file"
        )
    name = lookup(section, "mlflow_prompt")
    if name is not None and (not _is_string(name) or not as_text(name)):
        yield f"summarization.mlflow_prompt: must be a prompt name (a non-empty string), found {_shown(name)}"
    version = lookup(section, "mlflow_prompt_version")
    if version is not None and not (_is_string(version) or _is_integer(version)):
        yield (
            "summarization.mlflow_prompt_version: must be a string (an alias such as champion) or an integer, "
            f"found {_shown(version)}"
        )


def _is_string(node: Node) -> bool:
    target = deref(node)
    return isinstance(target, Scalar) and scalar_kind(target) == "str"


def _is_integer(node: Node) -> bool:
    target = deref(node)
    if not isinstance(target, Scalar) or scalar_kind(target) != "number":
        return False
    return _DECIMAL.fullmatch(target.value) is not None


def _is_b_version(node: Node) -> bool:
    target = deref(node)
    if not isinstance(target, Scalar):
        return False
    if _is_integer(target):
        return int(target.value) >= 1
    return _is_string(target) and (target.value == "latest" or _VERSION.fullmatch(target.value) is not None)


def _shown(node: Node) -> str:
    """How a wrong value is named in a message: a short printable string as written, else its kind."""
    target = deref(node)
    if not isinstance(target, Scalar):
        return kind(node)
    shown = scalar_kind(target)
    if shown == "str":
        short = len(target.value) <= 40 and target.value.isprintable()
        return repr(target.value) if short else "a string"
    return {"null": "null", "bool": "a boolean"}.get(shown, "a number")
