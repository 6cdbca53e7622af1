"""The four Helm values the operator manages, read from and written into a human-maintained values file.

Managed keys of Generation 1 (contract section 3): ``summarize.prompt``, ``summarize.prompt_b``,
``feedback.enabled`` and ``ab_testing.enabled``. ``apply_managed`` changes only those: it parses the text with
PyYAML's event stream (the backend's own loader, within the bounds of ``yamlsplice.bounded``: size, nesting,
aliases), which gives every node's exact position, and splices new text into just the bytes of the changed items,
so comments, key order, quoting, block scalars, indentation, anchors and document markers elsewhere stay
byte-for-byte (a full re-dump would re-indent and re-wrap the file). Every result is parsed again and must read
back as desired with all other values identical, both as Helm types plain scalars and as ``yaml.safe_load`` (the
backend) loads the file, or ``ValuesEditError`` is raised. ``edit_values`` adds the chart's schema facts
(``validate_values``): that is the text the operator writes, or the error it reports as ``InvalidValues``.

A section is written whole or not at all. ``feedback`` and ``ab_testing`` hold only ``enabled``, so the editor
writes them whole. ``summarize`` also needs ``enabled`` and (when enabled) ``model``, and the operator cannot
know the model: a file without a ``summarize`` section that has both (the chart's own ``values-test.yaml``
holds only ``LLAMA_STACK_URL``) is refused with ``InvalidValues`` naming the missing keys, never completed
with a guess and never written as a partial section the chart rejects and the backend crashes on.

Two layouts. The same :class:`ManagedKeys` live at other paths in each backend generation's file; a
:class:`ValuesLayout` names them, and every function here takes ``layout=`` (default :data:`GEN1`, the one
above; :func:`layout_for` maps ``spec.backend.generation`` to it). :data:`GEN2` is the course's Generation 2
``config.yaml``: ``prompt`` is ``summarization.mlflow_prompt_version`` (the champion's registry reference, usually
the alias ``champion``), ``prompt_b`` is ``ab_testing.mlflow_prompt_b_version`` (the challenger's registry
version: an integer or a string reads as its text, "5"; the operator writes a quoted string, ``'5'``), and the
switches are ``feedback.enabled`` and ``ab_testing.enabled``. ``feedback`` is still written whole, but
``ab_testing`` now holds two managed keys: a None removes just that key (a ``mlflow_prompt_b_version`` that
stays is kept), and the section only once nothing is left in it. ``summarization`` needs ``enabled`` and
``mlflow_prompt``, which the operator cannot know: a file without them is refused naming them, never completed
with a guess. No test runs against a moving challenger: ``edit_values`` refuses ``ab_testing.enabled: true``
beside a ``prompt_b`` that is not a concrete version (``latest``, an alias). ``latest`` is still read, and
written back beside a disabled ``ab_testing`` (restoring the course's original file).

Conflict rule (``check_conflict``), per managed key: the current value is fine when it equals the desired
value ("already desired"), or when the operator has not written yet (``last_applied`` is None: "still the
original"), or when it equals what the operator last wrote ("still ours"). Anything else means a human set
that key to a third value after the operator's last write, and the operator refuses to overwrite it.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from typing import Any, Protocol

from yaml.events import Event

from canopy_operator.core.chart_schema import GEN2_SECTIONS, SUMMARIZE_KEYS, generation2_problems, kind, schema_problems
from canopy_operator.yamlsplice.bounded import LIMITS, Limits, YamlLimitError, events, load_events, safe_load
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
    compose_events,
    deref,
    find_item,
    is_aliased,
    is_null,
    lookup,
    scalar_kind,
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
    """The managed values; None means the key is absent (for a switch of a section that holds nothing else, such
    as ``feedback``: the whole section). Which keys of the file they are depends on the :class:`ValuesLayout`."""

    prompt: str | None
    prompt_b: str | None
    feedback_enabled: bool | None
    ab_testing_enabled: bool | None

    def __post_init__(self) -> None:
        if self.prompt_b == "":  # the backend treats an empty challenger as "no A/B test"
            object.__setattr__(self, "prompt_b", None)


FIELDS = ("prompt", "prompt_b", "feedback_enabled", "ab_testing_enabled")
"""The :class:`ManagedKeys` fields, in their order."""


@dataclass(frozen=True)
class ValuesLayout:
    """Where one backend generation's values file keeps the managed keys, and what its chart allows there."""

    generation: int
    paths: tuple[tuple[str, str], ...]
    """(section, key) of each of :data:`FIELDS`, in that order."""
    prompt_section: str
    """The section holding the champion key (and keys of the human's, such as the model)."""
    allowed: tuple[tuple[str, tuple[str, ...]], ...]
    """Each managed section and the keys the chart allows in it."""
    whole: tuple[str, ...]
    """Sections that hold nothing but their switch: its None removes the section whole."""
    edit_order: tuple[str, ...]
    """The order :func:`apply_managed` edits the fields in (a section's switch before its other keys)."""
    after: tuple[tuple[str, str], ...]
    """(key, neighbour): a new key goes right after its neighbour when the section has it."""
    references: bool
    """The prompt keys hold registry references (an int or a string, read as its text), not prompt texts."""
    schema: Callable[[Mapping | None], Iterator[str]]
    """The chart's schema facts (``core.chart_schema``)."""

    def path(self, name: str) -> tuple[str, str]:
        """(section, key) of the :class:`ManagedKeys` field ``name``."""
        return self.paths[FIELDS.index(name)]

    def dotted(self, name: str) -> str:
        """``section.key`` of the field ``name``, as messages name it."""
        return ".".join(self.path(name))

    def managed_in(self, section: str) -> tuple[str, ...]:
        """The managed keys of ``section``."""
        return tuple(key for sec, key in self.paths if sec == section)

    def partial_sections(self) -> tuple[str, ...]:
        """Managed sections that also hold other keys (the operator edits them key by key)."""
        return tuple(dict.fromkeys(sec for sec, _ in self.paths if sec not in self.whole))


GEN1 = ValuesLayout(
    generation=1,
    paths=(("summarize", "prompt"), ("summarize", "prompt_b"), ("feedback", "enabled"), ("ab_testing", "enabled")),
    prompt_section="summarize",
    allowed=(("summarize", SUMMARIZE_KEYS), ("feedback", ("enabled",)), ("ab_testing", ("enabled",))),
    whole=("feedback", "ab_testing"),
    edit_order=FIELDS,
    after=(("prompt_b", "prompt"),),
    references=False,
    schema=schema_problems,
)
"""Generation 1 (contract section 3): prompt texts in ``summarize``."""
GEN2 = ValuesLayout(
    generation=2,
    paths=(
        ("summarization", "mlflow_prompt_version"),
        ("ab_testing", "mlflow_prompt_b_version"),
        ("feedback", "enabled"),
        ("ab_testing", "enabled"),
    ),
    prompt_section="summarization",
    allowed=tuple(GEN2_SECTIONS.items()),
    whole=("feedback",),
    edit_order=("prompt", "feedback_enabled", "ab_testing_enabled", "prompt_b"),
    after=(("mlflow_prompt_version", "mlflow_prompt"), ("mlflow_prompt_b_version", "enabled")),
    references=True,
    schema=generation2_problems,
)
"""Generation 2 (vote-sources.md): registry references in ``summarization`` and ``ab_testing``."""
LAYOUTS = {1: GEN1, 2: GEN2}


def layout_for(generation: int) -> ValuesLayout:
    """The layout of ``spec.backend.generation``."""
    try:
        return LAYOUTS[generation]
    except KeyError:
        raise ValueError(f"no values layout for backend generation {generation!r}") from None


#: field name -> (section, key) of Generation 1 (kept for callers that predate layouts)
PATHS: dict[str, tuple[str, str]] = dict(zip(FIELDS, GEN1.paths, strict=True))


def managed_hash(m: ManagedKeys) -> str:
    """A stable sha256 (hex) of the four managed values."""
    payload = json.dumps([getattr(m, f.name) for f in fields(m)], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()


def _document(text: str, limits: Limits = LIMITS) -> Document | None:
    return _document_of(_events(text, limits))


def _events(text: str, limits: Limits) -> list[Event]:
    """The text scanned and parsed once (PyYAML's parser, within ``limits``); both views are built from this."""
    try:
        return events(text, limits)
    except YamlLimitError as exc:
        raise ValuesEditError(f"refused to read the values file ({exc.bound} bound): {exc}") from None
    except ValueError as exc:
        raise ValuesEditError(f"the values file is not valid YAML: {exc}") from None


def _document_of(parsed: list[Event]) -> Document | None:
    try:
        docs = compose_events(parsed)
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


def _read_root(root: Mapping | None, layout: ValuesLayout) -> ManagedKeys:
    def get(name: str) -> Node | None:
        section, key = layout.path(name)
        mapping = _section(root, section)
        return None if mapping is None else lookup(mapping, key)

    def text(name: str) -> str | None:
        node = get(name)
        if node is None:
            return None
        return _reference(node) if layout.references else as_text(node)

    def flag(name: str) -> bool | None:
        node = get(name)
        return None if node is None else as_bool(node)

    return ManagedKeys(text("prompt"), text("prompt_b"), flag("feedback_enabled"), flag("ab_testing_enabled"))


_DECIMAL = re.compile(r"[-+]?(0|[1-9][0-9]*)")


def _reference(node: Node) -> str | None:
    """A registry reference as text: a string as written, a decimal integer as its number (``+5`` is "5")."""
    target = deref(node)
    if not isinstance(target, Scalar) or scalar_kind(target) not in ("str", "number"):
        return None
    if scalar_kind(target) == "number" and _DECIMAL.fullmatch(target.value):
        return str(int(target.value))
    return target.value


READ_CACHE_SIZE = 2048
"""Distinct texts whose managed values a :class:`ValuesReader` remembers (oldest forgotten first). Every
reconcile pass reads the ConfigMap; parsing the same text again cost a few ms of CPU per pass
(bench/RESULTS.md)."""


def read_managed(text: str, *, layout: ValuesLayout = GEN1, limits: Limits = LIMITS) -> ManagedKeys:
    """The managed values as Helm sees them (``yes`` is a boolean, a quoted "true" is not)."""
    return _read_root(_root(_document(text, limits)), layout)


class ReadValues(Protocol):
    """How an adapter reads the managed keys of a text: :func:`read_managed`, or a :class:`ValuesReader`."""

    def __call__(self, text: str, /, *, layout: ValuesLayout = GEN1) -> ManagedKeys: ...


class ValuesReader:
    """:func:`read_managed` that remembers the texts it has read, up to ``size`` (one per operator process);
    a text is remembered per layout (the same text reads differently in each).

    A text it refused is remembered too (the same ``ValuesEditError`` is raised again without parsing), so a
    hostile text costs its parse once, not once per pass. Safe to call from worker threads (the delivery
    parses off the event loop): at worst two threads parse the same new text once each."""

    def __init__(self, size: int = READ_CACHE_SIZE, limits: Limits = LIMITS) -> None:
        self.size = size
        self.limits = limits
        self.seen: dict[tuple[ValuesLayout, bytes], ManagedKeys | str] = {}
        self.written: dict[tuple[ValuesLayout, bytes], None] = {}
        """Which of the texts in ``seen`` the editor made (:meth:`note_written`): digests only, within the same
        bound, so the cache holds no more than it did."""

    def note_written(self, text: str, keys: ManagedKeys, /, *, layout: ValuesLayout = GEN1) -> None:
        """``text`` is what :func:`edit_values` returned for ``keys``: it reads as ``keys`` (the editor checked
        that on its own parse of it) and the chart's schema facts hold. So reading it again needs no parse, and
        editing it for ``keys`` again gives it back unchanged (the edit is idempotent): a start's later passes
        neither parse nor edit the text it wrote (issue #20)."""
        key = _text_key(text, layout)
        _bounded_put(self.seen, key, keys, self.size)
        _bounded_put(self.written, key, None, self.size)

    def written_for(self, text: str, /, *, layout: ValuesLayout = GEN1) -> ManagedKeys | None:
        """The keys the editor made ``text`` for (:meth:`note_written`), or None: not a text it made (or one the
        cache has let go of)."""
        key = _text_key(text, layout)
        keys = self.seen.get(key)
        return keys if key in self.written and isinstance(keys, ManagedKeys) else None

    def remembered(self, text: str, /, *, layout: ValuesLayout = GEN1) -> ManagedKeys | None:
        """What reading ``text`` gave before, without parsing (``ValuesEditError`` again for a text it refused),
        or None when it must be parsed: a caller may then read it on the event loop instead of a worker thread.
        One lookup, so a concurrent eviction cannot turn it into a parse."""
        keys = self.seen.get(_text_key(text, layout))
        if isinstance(keys, str):
            raise ValuesEditError(keys)
        return keys

    def __call__(self, text: str, /, *, layout: ValuesLayout = GEN1) -> ManagedKeys:
        key = _text_key(text, layout)
        keys = self.seen.get(key)
        if keys is None:
            try:
                keys = read_managed(text, layout=layout, limits=self.limits)
            except ValuesEditError as exc:
                keys = str(exc)
            _bounded_put(self.seen, key, keys, self.size)
        if isinstance(keys, str):
            raise ValuesEditError(keys)
        return keys


def _bounded_put(cache: dict[Any, Any], key: Any, value: Any, size: int) -> None:
    """``cache[key] = value``, the oldest entries dropped first to stay within ``size`` (thread-safe enough: at
    worst another thread's concurrent change ends the eviction early)."""
    while len(cache) >= size:
        try:
            cache.pop(next(iter(cache)), None)
        except (StopIteration, RuntimeError):  # another thread changed it meanwhile
            break
    cache[key] = value


def _text_key(text: str, layout: ValuesLayout) -> tuple[ValuesLayout, bytes]:
    return layout, hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


@dataclass(frozen=True)
class _Parsed:
    """One parse of a text: PyYAML's events (made once), and the positioned document built from them."""

    events: list[Event]
    doc: Document | None
    root: Mapping | None


def _parse(text: str, limits: Limits) -> _Parsed:
    parsed = _events(text, limits)
    doc = _document_of(parsed)
    return _Parsed(parsed, doc, _root(doc))


def apply_managed(text: str, desired: ManagedKeys, *, layout: ValuesLayout = GEN1, limits: Limits = LIMITS) -> str:
    """``text`` with the managed keys set to ``desired``; the very same string when nothing changes.

    The result reads back as ``desired`` with every other value unchanged, as Helm types it and as PyYAML (the
    backend) loads it; anything else raises ``ValuesEditError``. Schema facts are ``validate_values``'s job
    (``edit_values`` does both)."""
    return _apply(text, desired, layout, limits)[0]


def _apply(text: str, desired: ManagedKeys, layout: ValuesLayout, limits: Limits) -> tuple[str, Mapping | None]:
    """:func:`apply_managed` and the edited text's root. Each text (the original, and the result of each splice)
    is scanned and parsed once: Helm's view (the positioned document) and the backend's (``yaml.safe_load``'s
    objects) are both built from that one parse's events."""
    before = _parse(text, limits)
    current = _read_root(before.root, layout)
    if current == desired:
        return text, before.root
    batched = _batched(text, before, current, desired, layout, limits)
    out, after = batched if batched is not None else _one_section_at_a_time(text, before, desired, layout, limits)
    _verify(before.root, after.root, desired, layout)
    _verify_loaded(lambda: (load_events(before.events), load_events(after.events)), desired, layout)
    return out, after.root


def _one_section_at_a_time(
    text: str, before: _Parsed, desired: ManagedKeys, layout: ValuesLayout, limits: Limits
) -> tuple[str, _Parsed]:
    """Each managed key that differs, in ``layout.edit_order``, spliced into the text the previous one made."""
    out, after = text, before
    for name in layout.edit_order:
        want = getattr(desired, name)
        if getattr(_read_root(after.root, layout), name) != want:
            out = splice(out, _edits_for(Layout(out), after.doc, after.root, name, want, layout))
            after = _parse(out, limits)
    return out, after


def _batched(
    text: str, before: _Parsed, current: ManagedKeys, desired: ManagedKeys, layout: ValuesLayout, limits: Limits
) -> tuple[str, _Parsed] | None:
    """Every differing key's edits made on the original parse and spliced at once, then parsed once: the same
    text as :func:`_one_section_at_a_time` when the keys live in different sections and their edits neither
    overlap nor touch, for one parse instead of one per section (a start changes three: ``prompt_b``,
    ``feedback`` and ``ab_testing``, issue #20). None (edit one section at a time) otherwise, and whenever the
    result does not read back as ``desired`` or the batch meets anything the editor refuses, and for a removal (the
    text after it may read a different indentation step)."""
    names = [name for name in layout.edit_order if getattr(current, name) != getattr(desired, name)]
    sections = [layout.path(name)[0] for name in names]
    if len(names) < 2 or before.root is None or len(set(sections)) != len(sections):
        return None
    if any(getattr(desired, name) is None for name in names):
        return None  # a removal can take away the block the indentation step is read from: one at a time
    lay = Layout(text)
    edits: list[Edit] = []
    try:
        for name in names:
            made = _edits_for(lay, before.doc, before.root, name, getattr(desired, name), layout)
            if not made:
                return None
            edits.extend(made)
    except ValuesEditError:
        return None
    ordered = sorted(edits, key=lambda e: (e.start, e.end))
    if any(later.start <= earlier.end for earlier, later in itertools.pairwise(ordered)):
        return None  # where edits meet, their order would matter
    out = splice(text, edits)
    try:
        after = _parse(out, limits)
    except ValueError:  # a bound or a syntax error: the one-at-a-time way says what it is, if anything
        return None
    return (out, after) if _read_root(after.root, layout) == desired else None


def edit_values(text: str, desired: ManagedKeys, *, layout: ValuesLayout = GEN1, limits: Limits = LIMITS) -> str:
    """The text the operator writes for ``desired``: :func:`apply_managed`, then the chart's schema facts.

    Raises ``ValuesEditError`` saying what is wrong; nothing is to be written then. The original text and the
    edited one are parsed once each (plus once per intermediate splice when several sections change and their
    edits cannot be made at once, :func:`_batched`)."""
    moving = _moving_challenger(desired, layout)
    if moving is not None:
        raise ValuesEditError(moving, [moving])
    edited, root = _apply(text, desired, layout, limits)
    problems = list(layout.schema(root))  # validate_values(edited), on the root already parsed
    if problems:
        raise ValuesEditError(f"the edited file would break the chart: {'; '.join(problems)}", problems)
    return edited


_CONCRETE = re.compile(r"[1-9][0-9]*")


def _moving_challenger(desired: ManagedKeys, layout: ValuesLayout) -> str | None:
    """Why ``desired`` would run an A/B test against a challenger that can change under it (None: it would not)."""
    if not layout.references or not desired.ab_testing_enabled or desired.prompt_b is None:
        return None
    if _CONCRETE.fullmatch(desired.prompt_b):
        return None
    return (
        f"{layout.dotted('prompt_b')}: the challenger must be a concrete registry version (a number such as 5) "
        f"while {layout.dotted('ab_testing_enabled')} is true, not {desired.prompt_b[:40]!r}: 'latest' or an "
        "alias would change the arm under the running test"
    )


def _edits_for(
    lay: Layout, doc: Document | None, root: Mapping | None, name: str, want: Value, layout: ValuesLayout
) -> list[Edit]:
    section, key = layout.path(name)
    try:
        if root is None:
            if want is None:
                return []
            return append_to_document(lay, doc, section, Section(key, want), 2)
        if want is None:
            return _unset(lay, root, section, key, layout, blank="" if name == "prompt_b" else None)
        return _set(lay, root, section, key, want, dict(layout.after).get(key))
    except YamlEditError as exc:
        raise ValuesEditError(str(exc)) from None


def _set(lay: Layout, root: Mapping, section: str, key: str, want: Value, neighbour: str | None) -> list[Edit]:
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
        after = find_item(svalue, neighbour) if neighbour is not None else None
        return insert_item(lay, svalue, None if after is None else after[0], key, want, step)
    if is_null(svalue) and isinstance(svalue, Scalar):
        return replace_value(lay, root, skey, svalue, Section(key, want), step, section)
    raise ValuesEditError(f"{section}: expected a mapping, found {kind(svalue)}")


def _unset(lay: Layout, root: Mapping, section: str, key: str, layout: ValuesLayout, blank: New) -> list[Edit]:
    found = find_item(root, section)
    if found is None:
        if lookup(root, section) is not None:
            raise ValuesEditError(f"{section} comes from a '<<' merge; edit the file by hand")
        return []
    index, _, svalue = found
    if section in layout.whole:
        return remove_item(lay, root, index, None, section)
    if not isinstance(svalue, Mapping):
        return []
    item = find_item(svalue, key)
    if item is not None:
        _refuse_shared_anchor(root, item[2], f"{section}.{key}")
        if len(svalue.items) == 1 and section != layout.prompt_section:  # its last key: the section goes whole
            return remove_item(lay, root, index, None, section)
        return remove_item(lay, svalue, item[0], found[1], f"{section}.{key}")
    # Only a '<<' merge provides it: hide it with an explicit empty value.
    return insert_item(lay, svalue, None, key, blank, lay.step(root))


def _refuse_shared_anchor(root: Mapping, value: Node, path: str) -> None:
    if isinstance(value, Scalar) and value.anchor and is_aliased(root, value):
        raise ValuesEditError(f"{path} carries anchor &{value.anchor} that other keys use; edit the file by hand")


def _unmanaged(root: Mapping | None, layout: ValuesLayout) -> object:
    """Everything but the managed keys, as plain data, for the after-edit safety check."""
    if root is None:
        return []
    partial = layout.partial_sections()
    kept: list[object] = []
    for knode, vnode in root.items:
        name = as_text(knode)
        if name in layout.whole:
            continue
        value = to_data(vnode)
        if name in partial and isinstance(deref(vnode), Mapping):
            managed = [("str", key) for key in layout.managed_in(name)]
            value = [(k, v) for k, v in value if k not in managed]
        if name in partial and not value:
            continue
        kept.append((to_data(knode), value))
    return kept


def _verify(before: Mapping | None, after: Mapping | None, desired: ManagedKeys, layout: ValuesLayout) -> None:
    got = _read_root(after, layout)
    if got != desired:
        wrong = [layout.dotted(n) for n in FIELDS if getattr(got, n) != getattr(desired, n)]
        raise ValuesEditError(f"editing did not produce the desired value of {', '.join(wrong)}")
    if _unmanaged(before, layout) != _unmanaged(after, layout):
        raise ValuesEditError("editing would change values outside the managed keys")


def loaded_keys(data: Any, *, layout: ValuesLayout = GEN1) -> ManagedKeys:
    """The managed keys of a document as ``yaml.safe_load`` returned it (the backend's view)."""

    def get(name: str) -> Any:
        section, key = layout.path(name)
        mapping = data.get(section) if isinstance(data, dict) else None
        return mapping.get(key) if isinstance(mapping, dict) else None

    def text(name: str) -> str | None:
        value = get(name)
        if layout.references and isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        return value if isinstance(value, str) else None

    def flag(name: str) -> bool | None:
        value = get(name)
        return value if isinstance(value, bool) else None

    return ManagedKeys(text("prompt"), text("prompt_b"), flag("feedback_enabled"), flag("ab_testing_enabled"))


def verify_loaded(
    before: str, after: str, desired: ManagedKeys, *, layout: ValuesLayout = GEN1, limits: Limits = LIMITS
) -> None:
    """``after`` loads with ``yaml.safe_load`` (the backend's loader) to ``desired`` for the managed keys and
    to exactly what ``before`` loads to for everything else; ``ValuesEditError`` otherwise."""
    _verify_loaded(lambda: (safe_load(before, limits), safe_load(after, limits)), desired, layout)


def _verify_loaded(load: Callable[[], tuple[Any, Any]], desired: ManagedKeys, layout: ValuesLayout) -> None:
    """:func:`verify_loaded` of the two documents ``load`` returns (as ``yaml.safe_load`` loads them)."""
    try:
        old, new = load()
    except YamlLimitError as exc:
        raise ValuesEditError(f"refused to read the values file ({exc.bound} bound): {exc}") from None
    except ValueError as exc:
        raise ValuesEditError(f"the edited file does not load with PyYAML (the backend's loader): {exc}") from None
    got = loaded_keys(new, layout=layout)
    wrong = [layout.dotted(n) for n in FIELDS if getattr(got, n) != getattr(desired, n)]
    if wrong:
        raise ValuesEditError(
            f"the edited file loads with PyYAML (the backend's loader) to other values of {', '.join(wrong)}"
        )
    if _canonical(_without_managed(old, layout)) != _canonical(_without_managed(new, layout)):
        raise ValuesEditError("editing would change values outside the managed keys as PyYAML loads them")


def _without_managed(data: Any, layout: ValuesLayout) -> dict[Any, Any]:
    if not isinstance(data, dict):
        return {}
    out = {k: v for k, v in data.items() if k not in layout.whole}
    for name in layout.partial_sections():
        section = out.get(name, {})
        if isinstance(section, dict) or section is None:
            managed = layout.managed_in(name)
            rest = {k: v for k, v in (section or {}).items() if k not in managed}
            if rest:
                out[name] = rest
            else:
                out.pop(name, None)
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


def check_conflict(
    current: ManagedKeys, last_applied: ManagedKeys | str | None, desired: ManagedKeys, *, layout: ValuesLayout = GEN1
) -> None:
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
        clashes = [layout.dotted(n) for n in FIELDS if getattr(current, n) != getattr(desired, n)]
    else:
        clashes = [
            layout.dotted(name)
            for name in FIELDS
            if getattr(current, name) not in (getattr(desired, name), getattr(last_applied, name))
        ]
    if clashes:
        raise ValuesConflict(clashes)


def validate_values(text: str, *, layout: ValuesLayout = GEN1, limits: Limits = LIMITS) -> list[str]:
    """What would break ``helm template``/the Argo sync or crash the backend; empty means writable."""
    try:
        root = _root(_document(text, limits))
    except ValuesEditError as exc:
        return [str(exc)]
    return list(layout.schema(root))
