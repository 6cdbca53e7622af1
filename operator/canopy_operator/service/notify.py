"""Notifications, the shell: the outbox added to a pass's status write, then the posts and their record.

:class:`Notifier` does two things for :meth:`Services.reconcile <canopy_operator.service.services.Services.reconcile>`:

1. :meth:`Notifier.outbox`, before the pass's status write: the transitions the pass made are added to
   ``status.notifications`` (``sentAt`` unset) in that same write (:mod:`canopy_operator.core.notify`);
2. :meth:`Notifier.send`, after it: every due record is posted (Slack-compatible JSON, an ``Idempotency-Key``
   of the experiment's uid and the record key), then ``sentAt``/``attempts`` are written with a
   resourceVersion precondition (on a conflict: read again, apply to the fresh list, write again).

So a crash between the outbox write and the post posts on the next pass (at least once, with the same
idempotency key), a crash after the ``sentAt`` write never posts again, and a restart posts nothing twice.
A status that may be stale (no write in this pass) is read again before anything is posted.

Where to post: the Secret ``spec.notifications.webhookSecret`` (key ``url``) of the experiment's namespace,
used only if it opts in exactly like Git credentials (:func:`canopy_operator.core.credentials.check_opt_in`),
else the operator-wide ``CANOPY_NOTIFY_WEBHOOK_URL``. A refused Secret stops nothing: the pass posts one
Warning event ``NotificationRefused`` naming the Secret and the field, counts an attempt on each due record
(so the refusal is repeated at most :data:`~canopy_operator.core.notify.MAX_ATTEMPTS` times per transition)
and posts nothing. The webhook URL is a secret: it is registered with the redactor when read, and messages
show its ``scheme://host`` at most.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from pydantic import ValidationError

from canopy_operator.api.spec import NotificationSpec
from canopy_operator.api.status import NotificationRecord, PromptExperimentStatus
from canopy_operator.core import notify as core
from canopy_operator.core.credentials import CredentialsRefused, Destination, SecretRef, check_opt_in, shown
from canopy_operator.core.redact import Redactor
from canopy_operator.core.status import StatusUnreadable, read_status
from canopy_operator.k8s.errors import Conflict, NotFound
from canopy_operator.service.credentials import SecretReader
from canopy_operator.service.report import Event
from canopy_operator.sources.webhook import PostResult
from canopy_operator.telemetry.logs import log_event

log = logging.getLogger("canopy_operator.events")

WEBHOOK_FIELD = "spec.notifications.webhookSecret"
URL_KEY = "url"
REFUSED = "NotificationRefused"
FAILED = "NotificationFailed"
CONFLICT_TRIES = 3
"""Writes of the post results tried (each after a fresh read) before they are left to the next pass."""
RETRY_AFTER_SECONDS = 15.0
"""A record that could not be posted waits this long, doubled per attempt, before the next try (in this
process: a restarted operator tries at once)."""
_WAITS_KEPT = 1024


class Poster(Protocol):
    """Posts one message (``sources.webhook.WebhookPoster``)."""

    async def post(self, url: str, payload: dict[str, Any], idempotency_key: str) -> PostResult: ...

    async def aclose(self) -> None: ...


class ExperimentStore(SecretReader, Protocol):
    """What the notifier asks of the API server (``k8s.gateway.Gateway``)."""

    async def read_experiment(self, namespace: str, name: str) -> dict[str, Any]: ...

    async def patch_experiment_status(
        self, namespace: str, name: str, status: dict[str, Any], resource_version: str | None = None
    ) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Target:
    """Where an experiment's notifications go and which ones."""

    events: tuple[str, ...] = ()
    secret: str | None = None
    """``spec.notifications.webhookSecret``."""
    operator_url: bool = False
    """The operator has ``CANOPY_NOTIFY_WEBHOOK_URL``."""

    @property
    def enabled(self) -> bool:
        return bool(self.events) and (self.secret is not None or self.operator_url)


def target_of(spec: Mapping[str, Any] | None, operator_url: str | None) -> Target:
    """The experiment's target, from its raw spec (a spec that is invalid elsewhere still has one; an invalid
    ``notifications`` section has none)."""
    try:
        notifications = NotificationSpec.model_validate((spec or {}).get("notifications") or {})
    except ValidationError:
        return Target()
    return Target(tuple(notifications.events), notifications.webhook_secret, operator_url is not None)


class NotificationRefused(Exception):
    """The webhook Secret may not be used; the message names the Secret and the field, never the URL."""


def _hidden(message: str, url: str) -> str:
    """``message`` with the URL (as the credential rules show it, or raw) cut to its ``scheme://host``."""
    short = core.origin(url) + "/..."
    return message.replace(url, short).replace(shown(url), short)


async def webhook_url(
    reader: SecretReader,
    namespace: str,
    secret: str,
    *,
    allow_insecure_http: bool,
    redactor: Redactor | None = None,
) -> str:
    """The ``url`` of an opted-in webhook Secret; raises :class:`NotificationRefused` before anything is sent.

    The rules are the credentials' (label, ``allowed-urls`` covering the URL, no plain ``http://`` unless
    allowed), plus: the URL is ``http(s)://`` with a host and no userinfo."""
    ref = SecretRef(namespace, secret, WEBHOOK_FIELD)
    try:
        view = await reader.read_secret(namespace, secret)
    except NotFound:
        raise NotificationRefused(f"{ref} not found") from None
    try:
        check_opt_in(ref, view.labels, view.annotations, [], allow_insecure_http=allow_insecure_http)
    except CredentialsRefused as exc:
        raise NotificationRefused(str(exc)) from None
    url = view.data.get(URL_KEY, "").strip()
    if not url:
        raise NotificationRefused(f"{ref} holds no key {URL_KEY}")
    if redactor is not None:
        register_url(redactor, url)
    problem = core.url_problem(url, allow_insecure_http=allow_insecure_http)
    if problem is not None:
        raise NotificationRefused(f"{ref}: key {URL_KEY} {problem}")
    destination = Destination(f"key {URL_KEY}", url)
    try:
        check_opt_in(ref, view.labels, view.annotations, [destination], allow_insecure_http=allow_insecure_http)
    except CredentialsRefused as exc:
        raise NotificationRefused(_hidden(str(exc), url)) from None
    return url


def register_url(redactor: Redactor, url: str) -> None:
    """Mask a webhook URL in every log line from now on: whole, and its path with the query (the secret)."""
    redactor.register(url)
    _, _, rest = url.partition("://")
    _, slash, path = rest.partition("/")
    if slash and len(path) >= 8:
        redactor.register("/" + path)


def _dump(records: Sequence[NotificationRecord]) -> list[dict[str, Any]]:
    return [r.model_dump(mode="json", by_alias=True, exclude_none=True) for r in records]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Notifier:
    """The process's notifier: its webhook poster factory, settings and what it waits for."""

    store: ExperimentStore
    open_poster: Callable[[], Poster]
    operator_url: str | None = field(default=None, repr=False)
    allow_insecure_http: bool = False
    redactor: Redactor | None = None
    count: Callable[[str], None] = lambda _result: None
    now: Callable[[], datetime] = utcnow
    clock: Callable[[], float] = time.monotonic
    waits: dict[tuple[str, str, str], float] = field(default_factory=dict)
    """(namespace, name, key) -> monotonic time before which a failed record is not tried again."""

    def __post_init__(self) -> None:
        if self.operator_url and self.redactor is not None:
            register_url(self.redactor, self.operator_url)

    def target(self, spec: Mapping[str, Any] | None) -> Target:
        return target_of(spec, self.operator_url)

    def outbox(
        self, target: Target, before: Mapping[str, Any] | None, after: PromptExperimentStatus
    ) -> PromptExperimentStatus:
        """``after`` with the pass's transitions queued (``before``: the raw status the pass started from)."""
        if not target.enabled:
            return after
        try:
            start = read_status(before)
        except StatusUnreadable:
            return after
        return core.outbox(start, after, target.events)

    async def send(
        self,
        namespace: str,
        name: str,
        uid: str,
        target: Target,
        status: Mapping[str, Any] | None,
        resource_version: str | None,
        *,
        fresh: bool,
    ) -> tuple[Event, ...]:
        """Post the due records of ``status`` (read again unless ``fresh``: this pass wrote it) and record the
        results; the events to post. Raises only for the API server (the caller logs and goes on)."""
        if core.none_due(status):
            return ()
        try:
            st = read_status(status)
        except StatusUnreadable:
            return ()
        if not self._due(namespace, name, st):
            return ()
        if not fresh:
            obj = await self.store.read_experiment(namespace, name)
            resource_version = obj.get("metadata", {}).get("resourceVersion")
            try:
                st = read_status(obj.get("status"))
            except StatusUnreadable:
                return ()
        due = self._due(namespace, name, st)
        if not due:
            return ()
        try:
            url = await self._url(namespace, target)
        except NotificationRefused as exc:
            self.count("refused")
            message = f"{exc}; nothing was posted (the experiment goes on)"
            updates = {r.key: core.attempted(r, "retry", self.now()) for r in due}
            events: list[Event] = [("Warning", REFUSED, message)]
            for record in updates.values():
                self._wait(namespace, name, record)
            events += self._gave_up(namespace, name, updates.values(), "the webhook Secret was refused")
            await self._record(namespace, name, st, resource_version, updates)
            return tuple(events)
        if url is None:
            return ()  # no webhook any more: the records wait for one
        return await self._post_all(namespace, name, uid, st, resource_version, due, url)

    def _due(self, namespace: str, name: str, st: PromptExperimentStatus) -> list[NotificationRecord]:
        """The due records up to the first one still waiting after a failed try (the order is kept)."""
        now, out = self.clock(), []
        for record in core.due(st):
            if self.waits.get((namespace, name, record.key), 0.0) > now:
                break
            out.append(record)
        return out

    async def _url(self, namespace: str, target: Target) -> str | None:
        if target.secret is None:
            return self.operator_url
        return await webhook_url(
            self.store, namespace, target.secret, allow_insecure_http=self.allow_insecure_http, redactor=self.redactor
        )

    async def _post_all(
        self,
        namespace: str,
        name: str,
        uid: str,
        st: PromptExperimentStatus,
        resource_version: str | None,
        due: Sequence[NotificationRecord],
        url: str,
    ) -> tuple[Event, ...]:
        updates: dict[str, NotificationRecord] = {}
        results: dict[str, str] = {}
        poster = self.open_poster()
        try:
            for record in due:
                payload = core.payload(namespace, name, record.key, st)
                result = await poster.post(url, payload, f"{uid}/{record.key}")
                updates[record.key] = core.attempted(record, result.outcome, self.now())
                results[record.key] = result.detail
                self._log(namespace, name, updates[record.key], result)
                if result.outcome == "retry":
                    break  # the webhook is down or busy: the rest wait for a later pass too
        finally:
            await poster.aclose()
        events = self._gave_up(namespace, name, updates.values(), results)
        await self._record(namespace, name, st, resource_version, updates)
        return tuple(events)

    def _log(self, namespace: str, name: str, record: NotificationRecord, result: PostResult) -> None:
        obj = f"{namespace}/{name}"
        sent = result.outcome == "sent"
        self.count("sent" if sent else "failed")
        self._wait(namespace, name, record)
        log_event(
            log,
            "notification_sent" if sent else "notification_failed",
            obj,
            level=logging.INFO if sent else logging.WARNING,
            key=record.key,
            attempts=record.attempts,
            result=result.detail,
            gave_up=core.gave_up(record),
        )

    def _wait(self, namespace: str, name: str, record: NotificationRecord) -> None:
        """After a failed try, the record waits (doubling per attempt); sent or given up, it waits no more."""
        slot = (namespace, name, record.key)
        if not core.is_due(record):
            self.waits.pop(slot, None)
            return
        if len(self.waits) >= _WAITS_KEPT:
            self.waits.clear()  # a bound, not a schedule: forgetting a wait only means an earlier try
        self.waits[slot] = self.clock() + RETRY_AFTER_SECONDS * 2 ** max(record.attempts - 1, 0)

    def _gave_up(
        self,
        namespace: str,
        name: str,
        records: Iterable[NotificationRecord],
        why: Mapping[str, str] | str,
    ) -> list[Event]:
        events: list[Event] = []
        for record in records:
            if not core.gave_up(record):
                continue
            self.waits.pop((namespace, name, record.key), None)
            detail = why if isinstance(why, str) else why.get(record.key, "")
            message = f"gave up posting {record.key} to the webhook after {record.attempts} attempts: {detail}"
            events.append(("Warning", FAILED, message))
        return events

    async def _record(
        self,
        namespace: str,
        name: str,
        st: PromptExperimentStatus,
        resource_version: str | None,
        updates: Mapping[str, NotificationRecord],
    ) -> None:
        """Write the records' new ``sentAt``/``attempts`` with a resourceVersion precondition; on a conflict,
        read the object again and apply the updates to its list (a send recorded there is never undone)."""
        records = list(st.notifications)
        for _ in range(CONFLICT_TRIES):
            new = core.with_updates(records, updates)
            if new == records:
                return
            try:
                await self.store.patch_experiment_status(
                    namespace, name, {"notifications": _dump(new)}, resource_version
                )
                return
            except Conflict:
                obj = await self.store.read_experiment(namespace, name)
                resource_version = obj.get("metadata", {}).get("resourceVersion")
                try:
                    records = list(read_status(obj.get("status")).notifications)
                except StatusUnreadable:
                    return
        log_event(
            log,
            "notification_record_failed",
            f"{namespace}/{name}",
            level=logging.WARNING,
            message=f"could not record the notification results after {CONFLICT_TRIES} conflicts; "
            "unsent records are posted again on the next pass",
        )
