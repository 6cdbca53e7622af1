"""ConfigMap delivery: edit only the managed keys of canopy-config, write with optimistic concurrency, roll.

The backend reads its config once at start-up, so a written ConfigMap takes effect only after the
Deployment rolls; the roll is a pod-template annotation set to the sha256 of the new values text.

The ConfigMap's text is the tenant's: it is read and edited in a worker thread, never on the event loop, within
the parser's bounds (``yamlsplice.bounded``) and a deadline (``parse_timeout``), which the parse itself also
polls, so it stops soon after the pass gave up on it. Any refusal is :class:`InvalidValues` naming the
ConfigMap, its key and what is wrong; nothing is written then.

``layout`` says which keys of the text are the managed ones (``core.values.layout_for`` of the experiment's
backend generation; Generation 1 unless told).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from functools import partial
from typing import Protocol, TypeVar

from canopy_operator.core.startrecord import ANNOTATION as RECORD_ANNOTATION
from canopy_operator.core.values import (
    GEN1,
    ManagedKeys,
    ReadValues,
    ValuesEditError,
    ValuesLayout,
    ValuesReader,
    edit_values,
    read_managed,
)
from canopy_operator.delivery.base import (
    DeliveryError,
    DeliveryTraits,
    Failpoint,
    InvalidValues,
    SourceMissing,
    SourceState,
    WriteResult,
    no_failpoint,
)
from canopy_operator.k8s.errors import Conflict, NotFound
from canopy_operator.k8s.gateway import ConfigMapView
from canopy_operator.k8s.rollout import RolloutView
from canopy_operator.yamlsplice.bounded import LIMITS, Limits

ROLLOUT_ANNOTATION = "canopy.genaiops.io/config-sha256"
CONFLICT_RETRIES = 5
PARSE_TIMEOUT = 5.0
"""Seconds one read or edit of the values text may take (it runs in a worker thread)."""

T = TypeVar("T")


def config_sha(text: str) -> str:
    """sha256 of the values text (the rollout annotation's value)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def is_argo_managed(view: ConfigMapView) -> bool:
    """Argo CD tracks this ConfigMap (its tracking annotation or instance label is present)."""
    if "argocd.argoproj.io/tracking-id" in view.annotations:
        return True
    return "argocd.argoproj.io/instance" in view.labels


class ConfigMapApi(Protocol):
    """The Kubernetes calls ConfigMap delivery makes: the :class:`~canopy_operator.k8s.gateway.Gateway`, or a
    daemon's :class:`~canopy_operator.k8s.watched.WatchedReads` (reads from watches while nothing changed)."""

    async def get_configmap(self, namespace: str, name: str) -> ConfigMapView: ...

    async def write_configmap_key(
        self, view: ConfigMapView, key: str, text: str, *, annotations: Mapping[str, str | None] | None = None
    ) -> str: ...

    async def get_rollout(self, namespace: str, name: str) -> RolloutView: ...

    async def get_pod_template_annotation(self, namespace: str, name: str, key: str) -> str | None: ...

    async def set_pod_template_annotation(self, namespace: str, name: str, key: str, value: str) -> int: ...


class ConfigMapDelivery:
    """Reads and writes the managed keys in one ConfigMap key and rolls one Deployment."""

    traits = DeliveryTraits(carries_record=True)

    def __init__(
        self,
        gateway: ConfigMapApi,
        namespace: str,
        configmap: str,
        key: str,
        deployment: str,
        failpoint: Failpoint = no_failpoint,
        read: ReadValues = read_managed,
        *,
        parse_timeout: float = PARSE_TIMEOUT,
        limits: Limits = LIMITS,
        layout: ValuesLayout = GEN1,
    ) -> None:
        self.gateway = gateway
        self.namespace = namespace
        self.configmap = configmap
        self.key = key
        self.deployment = deployment
        self.failpoint = failpoint
        self.read_keys = read
        self.parse_timeout = parse_timeout
        self.limits = limits
        self.layout = layout

    @property
    def where(self) -> str:
        return f"ConfigMap {self.namespace}/{self.configmap} key {self.key}"

    async def _off_loop(self, what: str, work: Callable[[Limits], T]) -> T:
        """``work(limits)`` in a worker thread, within ``parse_timeout``; refusals become InvalidValues."""
        deadline = time.monotonic() + self.parse_timeout
        limits = replace(self.limits, stop=lambda: time.monotonic() > deadline)
        try:
            async with asyncio.timeout(self.parse_timeout):
                return await asyncio.to_thread(work, limits)
        except TimeoutError:
            raise InvalidValues(
                f"{self.where}: {what} took longer than {self.parse_timeout:g}s (time bound); refused"
            ) from None
        except (ValueError, RecursionError) as exc:  # ValuesEditError, a parser bound, or anything the text causes
            raise InvalidValues(f"{self.where}: {_short(exc)}") from None

    async def _view(self) -> ConfigMapView:
        try:
            view = await self.gateway.get_configmap(self.namespace, self.configmap)
        except NotFound as exc:
            raise SourceMissing(f"ConfigMap {self.namespace}/{self.configmap} not found") from exc
        if self.key not in view.data:
            raise SourceMissing(f"ConfigMap {self.namespace}/{self.configmap} has no key {self.key!r}")
        return view

    async def read(self) -> SourceState:
        view = await self._view()
        text = view.data[self.key]
        remembered: ManagedKeys | None = None
        if isinstance(self.read_keys, ValuesReader):
            # Read before (every idle pass reads the same text): no parse, so no hop to a worker thread.
            try:
                remembered = self.read_keys.remembered(text, layout=self.layout)
            except ValuesEditError as exc:
                raise InvalidValues(f"{self.where}: {_short(exc)}") from None
        if remembered is not None:
            keys = remembered
        else:
            keys = await self._off_loop("reading the values", partial(_read, self.read_keys, text, self.layout))
        return SourceState(
            keys=keys,
            text=text,
            version=view.resource_version,
            argo_managed=is_argo_managed(view),
            record=view.annotations.get(RECORD_ANNOTATION),
            annotation_bytes=sum(len(k.encode()) + len(v.encode()) for k, v in view.annotations.items()),
        )

    async def write(
        self, desired: ManagedKeys, *, ensure_rolled: bool = False, record: str | None = None
    ) -> WriteResult:
        """Apply ``desired`` on top of the latest text; retry on conflict, never clobber a concurrent edit.

        The Deployment rolls when the text changed, or when ``ensure_rolled`` (the operator wrote this text
        before but never saw it live, e.g. it died between the write and the roll) and its annotation differs.
        A write that changes the text sets the start record annotation to ``record`` in the same patch, or
        removes the one there is when ``record`` is None (a record outlives only the write that made it).
        """
        for _attempt in range(CONFLICT_RETRIES):
            view = await self._view()
            text = view.data[self.key]
            new_text = await self._edited(text, desired)
            changed = new_text != text
            if changed:
                try:
                    self.failpoint("before-configmap-write")
                    annotations = _record_patch(view, record)
                    await self.gateway.write_configmap_key(view, self.key, new_text, annotations=annotations)
                except Conflict:
                    continue
                self.failpoint("after-configmap-write")
            rolled = await self._roll(new_text, compare=not changed) if changed or ensure_rolled else False
            return WriteResult(changed=changed, revision=f"config-sha256:{config_sha(new_text)[:12]}", rolled=rolled)
        raise DeliveryError(
            f"ConfigMap {self.namespace}/{self.configmap} kept changing: {CONFLICT_RETRIES} conflicting writes in a row"
        )

    async def _edited(self, text: str, desired: ManagedKeys) -> str:
        """``edit_values(text, desired)``: in a worker thread, unless ``text`` is one the editor made for
        ``desired`` (then it is the answer, unparsed: the edit is idempotent). What the editor makes is noted
        with the reader, so the next read of it is not parsed either."""
        reader = self.read_keys if isinstance(self.read_keys, ValuesReader) else None
        if reader is not None and reader.limits != self.limits:
            reader = None  # what it would refuse under its own bounds is not vouched for under these
        if reader is not None and reader.written_for(text, layout=self.layout) == desired:
            return text
        new_text = await self._off_loop("editing the values", partial(_edit, text, desired, self.layout))
        if reader is not None:
            reader.note_written(new_text, desired, layout=self.layout)
        return new_text

    async def rollout_pending(self) -> str | None:
        """What the Deployment's rollout still waits for; None once every replica runs the written config."""
        view = await self.gateway.get_rollout(self.namespace, self.deployment)
        return view.pending()

    async def _roll(self, text: str, *, compare: bool = True) -> bool:
        """Set the pod template's annotation to the text's digest. ``compare``: read it first and leave a
        Deployment that already has it alone; after a write that changed the text no pod can run it yet, so the
        patch is sent unread (one read fewer per start, issue #20; a patch that sets the value the template has
        changes nothing, so even a concurrent roll of the same text is not rolled twice)."""
        sha = config_sha(text)
        if compare:
            current = await self.gateway.get_pod_template_annotation(
                self.namespace, self.deployment, ROLLOUT_ANNOTATION
            )
            if current == sha:
                return False
        self.failpoint("before-roll")
        await self.gateway.set_pod_template_annotation(self.namespace, self.deployment, ROLLOUT_ANNOTATION, sha)
        self.failpoint("after-roll")
        return True


def _record_patch(view: ConfigMapView, record: str | None) -> dict[str, str | None] | None:
    """The annotations a write sets: the new record, or the removal of a stale one (None: leave them alone)."""
    if record is not None:
        return {RECORD_ANNOTATION: record}
    return {RECORD_ANNOTATION: None} if RECORD_ANNOTATION in view.annotations else None


def _read(read: ReadValues, text: str, layout: ValuesLayout, limits: Limits) -> ManagedKeys:
    """The reader's own bounds apply (``ValuesReader`` caches by text; a repeated text is not parsed again)."""
    return read(text, layout=layout)


def _edit(text: str, desired: ManagedKeys, layout: ValuesLayout, limits: Limits) -> str:
    return edit_values(text, desired, layout=layout, limits=limits)


MAX_MESSAGE = 400
"""Characters of a refusal's text kept in a condition message (status carries short messages only)."""


def _short(exc: BaseException) -> str:
    """A refusal as a condition may carry it: a ``ValueError``'s text (capped), else the exception's type."""
    text = (str(exc) if isinstance(exc, ValueError) else "") or type(exc).__name__
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"
