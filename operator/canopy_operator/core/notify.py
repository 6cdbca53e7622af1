"""Notifications, the pure part: which transitions a pass made, the outbox in status, and the message.

A webhook (a Slack-compatible incoming webhook: ``{"text": ..., "blocks": [...]}``) is told about five
transitions, each at most once per test (``status.notifications`` records them by key ``<event>/<test id>``):

- ``Decided``: the test reached a decision (``evidence.decision`` left ``continue``, or a
  ``pendingPromotion`` appeared);
- ``AwaitingApproval``: the phase became ``AwaitingApproval`` (a Manual policy, or the evaluation gate);
- ``Promoted``: a new ``PromotionRecord`` whose outcome is ``challenger`` (the challenger became the
  champion; other outcomes keep the champion, which ``Decided`` already told);
- ``Degraded``: the phase became ``Degraded``;
- ``Aborted``: the phase became ``Aborted``.

Exactly once across restarts rests on an outbox: a transition is added to ``status.notifications`` (``sentAt``
unset) in the same status write that records the transition itself, and a key already there is never added
again. After that write the shell posts the unsent records and writes their ``sentAt`` (or ``attempts``).
A record with no ``sentAt`` and :data:`MAX_ATTEMPTS` attempts has been given up.

The message is one bounded line built from the status (never a prompt text): the experiment, the test id, the
votes, the p-value, the confidence sequence and what happened (the phase message, a condition's reason).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from canopy_operator.api.conditions import ConditionType as C
from canopy_operator.api.spec import ALL_NOTIFICATION_EVENTS, NotificationEvent
from canopy_operator.api.status import (
    NOTIFICATION_LIMIT,
    ConfidenceSequence,
    NotificationRecord,
    PromptExperimentStatus,
)
from canopy_operator.core.credentials import normalize_url
from canopy_operator.core.stats import format_p_value

MAX_ATTEMPTS = 5
"""Posts tried for one record before it is given up (``sentAt`` stays unset, ``attempts`` at this value)."""
SUMMARY_LIMIT = 500
"""Characters of the one-line summary before Slack escaping (escaped, it stays under a section's 3000)."""
NO_TEST = "none"
"""The test id in a key when the experiment has no test yet (e.g. Degraded on an invalid spec)."""
EVENTS: tuple[NotificationEvent, ...] = ALL_NOTIFICATION_EVENTS
Outcome = Literal["sent", "retry", "failed"]
"""What one post did: accepted (2xx), try again on a later pass (429, 5xx, no answer), or never (other 4xx)."""


@dataclass(frozen=True)
class Transition:
    """One transition a pass made, for one test."""

    event: NotificationEvent
    test_id: str

    @property
    def key(self) -> str:
        return record_key(self.event, self.test_id)


def record_key(event: str, test_id: str) -> str:
    """``<event>/<test id>``, the record's key and (with the experiment's uid) the idempotency key."""
    return f"{event}/{test_id}"


def split_key(key: str) -> tuple[str, str]:
    """``(event, test id)`` of a record key."""
    event, _, test_id = key.partition("/")
    return event, test_id


# -- which transitions -------------------------------------------------------------------------------------
def transitions(before: PromptExperimentStatus, after: PromptExperimentStatus) -> tuple[Transition, ...]:
    """The transitions from ``before`` (the status the pass started from) to ``after`` (the one it writes),
    in the order they happen: Decided, AwaitingApproval, Promoted, Degraded, Aborted."""
    found: list[Transition] = []
    test_id = after.test.id if after.test is not None else NO_TEST
    same_test = before.test is not None and after.test is not None and before.test.id == after.test.id
    if after.test is not None:
        was_decided = same_test and before.evidence.decision != "continue"
        had_pending = same_test and before.pending_promotion is not None
        pending = after.pending_promotion
        if (after.evidence.decision != "continue" and not was_decided) or (pending is not None and not had_pending):
            found.append(Transition("Decided", pending.test_id if pending is not None else test_id))
    if _entered(before, after, "AwaitingApproval"):
        found.append(Transition("AwaitingApproval", test_id))
    known = {record.test_id for record in before.promotions}
    for record in after.promotions:
        if record.test_id not in known and record.outcome == "challenger":
            found.append(Transition("Promoted", record.test_id))
    if _entered(before, after, "Degraded"):
        found.append(Transition("Degraded", test_id))
    if _entered(before, after, "Aborted"):
        found.append(Transition("Aborted", test_id))
    return tuple(found)


def _entered(before: PromptExperimentStatus, after: PromptExperimentStatus, phase: str) -> bool:
    """The phase is ``phase`` now and was something else when the pass started."""
    return after.phase == phase and before.phase != phase


# -- the outbox ----------------------------------------------------------------------------------------------
def queue(
    status: PromptExperimentStatus, found: Iterable[Transition], events: Sequence[str] = EVENTS
) -> PromptExperimentStatus:
    """``status`` with a record (``sentAt`` unset) for every transition in ``events`` whose key it does not
    hold yet; the list keeps its newest :data:`~canopy_operator.api.status.NOTIFICATION_LIMIT` records."""
    records = list(status.notifications)
    keys = {record.key for record in records}
    for transition in found:
        if transition.event in events and transition.key not in keys:
            records.append(NotificationRecord(key=transition.key))
            keys.add(transition.key)
    if len(records) == len(status.notifications):
        return status
    return status.model_copy(update={"notifications": records[-NOTIFICATION_LIMIT:]})


def outbox(
    before: PromptExperimentStatus, after: PromptExperimentStatus, events: Sequence[str] = EVENTS
) -> PromptExperimentStatus:
    """The status a pass writes, with its transitions queued (see the module doc)."""
    return queue(after, transitions(before, after), events)


def due(status: PromptExperimentStatus) -> list[NotificationRecord]:
    """Records still to post, oldest first: not sent, not given up."""
    return [record for record in status.notifications if is_due(record)]


def none_due(raw_status: Mapping[str, Any] | None) -> bool:
    """Whether a status as stored (JSON, camelCase) plainly holds no record to post: no ``notifications``, or
    every one sent or given up. False when unsure (a malformed record): the caller then parses the status.
    Lets an idle pass skip validating its whole status to look at an empty outbox (issue #20)."""
    records = (raw_status or {}).get("notifications")
    if not records:
        return True
    if not isinstance(records, list):
        return False
    for record in records:
        if not isinstance(record, dict):
            return False
        attempts = record.get("attempts", 0)
        if not isinstance(attempts, int) or isinstance(attempts, bool):
            return False
        if record.get("sentAt") is None and attempts < MAX_ATTEMPTS:
            return False
    return True


def is_due(record: NotificationRecord) -> bool:
    return record.sent_at is None and record.attempts < MAX_ATTEMPTS


def gave_up(record: NotificationRecord) -> bool:
    return record.sent_at is None and record.attempts >= MAX_ATTEMPTS


def attempted(record: NotificationRecord, outcome: Outcome, now: datetime) -> NotificationRecord:
    """The record after one post (or one refused look at the webhook, counted as an attempt)."""
    if outcome == "sent":
        return record.model_copy(update={"sent_at": now, "attempts": record.attempts + 1})
    attempts = MAX_ATTEMPTS if outcome == "failed" else min(record.attempts + 1, MAX_ATTEMPTS)
    return record.model_copy(update={"attempts": max(attempts, record.attempts)})


def with_updates(
    records: Sequence[NotificationRecord], updates: Mapping[str, NotificationRecord]
) -> list[NotificationRecord]:
    """``records`` with the still-due ones replaced by their update (by key); others are left as they are, so
    an update applied to a newer list never undoes a send recorded there."""
    return [updates[r.key] if r.key in updates and is_due(r) else r for r in records]


# -- the message ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Numbers:
    challenger_wins: int
    champion_wins: int
    ties: int
    p_value: float
    cs: ConfidenceSequence | None


def _numbers(status: PromptExperimentStatus, event: str, test_id: str) -> _Numbers | None:
    """The votes and evidence of ``test_id``: from its promotion record (Promoted), the active test, or its
    entry in the test history (a record posted late, after the test moved on)."""
    record = next((r for r in reversed(status.promotions) if r.test_id == test_id), None)
    if record is not None and (event == "Promoted" or status.test is None or status.test.id != test_id):
        return _Numbers(
            record.challenger_wins, record.champion_wins, record.ties, record.p_value, record.confidence_sequence
        )
    if status.test is not None and status.test.id == test_id:
        v, e = status.votes, status.evidence
        return _Numbers(v.challenger_wins, v.champion_wins, v.ties, e.p_value, e.confidence_sequence)
    past = next((t for t in reversed(status.test_history) if t.test_id == test_id), None)
    if past is not None:
        return _Numbers(past.challenger_wins, past.champion_wins, past.ties, past.p_value, None)
    return None


def _condition(status: PromptExperimentStatus, type_: str) -> tuple[str, str] | None:
    """(reason, message) of a condition that is True."""
    for c in status.conditions:
        if c.type == type_ and c.status == "True":
            return c.reason, c.message
    return None


def _what(status: PromptExperimentStatus, event: str, test_id: str) -> str:
    """What happened, in the status's own words (never a prompt text)."""
    current = status.test is not None and status.test.id == test_id
    if event == "Decided":
        pending = status.pending_promotion
        if pending is not None and pending.test_id == test_id:
            return f"decision {pending.outcome}: {status.evidence.reason or pending.summary}"
        if current and status.evidence.decision != "continue":
            return f"decision {status.evidence.decision}: {status.evidence.reason}"
        record = next((r for r in reversed(status.promotions) if r.test_id == test_id), None)
        return f"decision {record.outcome}: {record.summary}" if record is not None else "decided"
    if event == "Promoted":
        record = next((r for r in reversed(status.promotions) if r.test_id == test_id), None)
        return f"{record.summary} (revision {record.revision})" if record is not None else "promoted"
    if event == "AwaitingApproval":
        condition = _condition(status, C.AWAITING_APPROVAL)
        if current and status.phase == "AwaitingApproval":
            reason = condition[0] if condition else "ManualPolicy"
            return f"{reason}: {status.message}"
        return "waited for approval"
    if event == "Degraded":
        condition = _condition(status, C.DEGRADED)
        if condition is None:
            return "degraded (recovered since)"
        reason, message = condition
        return f"{reason}: {message or status.message}"
    if event == "Aborted":
        return status.message or "aborted"
    return status.message


def one_line(text: str, limit: int = SUMMARY_LIMIT) -> str:
    """``text`` on one line of printable characters, at most ``limit`` characters."""
    line = "".join(ch if ch.isprintable() else " " for ch in " ".join(text.split()))
    return line if len(line) <= limit else line[: limit - 3] + "..."


def summary(namespace: str, name: str, key: str, status: PromptExperimentStatus) -> str:
    """The one-line decision summary of a record, e.g. ``team-a/exp Decided, test 3f2a...: challenger 25,
    champion 5, ties 2, p<0.001, CS [0.66, 0.93]; decision challenger: ...``."""
    event, test_id = split_key(key)
    head = f"{namespace}/{name} {event}"
    if test_id and test_id != NO_TEST:
        head += f", test {test_id}"
    numbers = _numbers(status, event, test_id)
    if numbers is not None:
        head += (
            f": challenger {numbers.challenger_wins}, champion {numbers.champion_wins}, ties {numbers.ties}, "
            f"{format_p_value(numbers.p_value)}"
        )
        if numbers.cs is not None:
            head += f", CS [{numbers.cs.lower:.2f}, {numbers.cs.upper:.2f}]"
    return one_line(f"{head}; {_what(status, event, test_id)}")


def slack_escape(text: str) -> str:
    """Slack's three control characters escaped, so no text from status can mention, link or format."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def payload(namespace: str, name: str, key: str, status: PromptExperimentStatus) -> dict[str, Any]:
    """The Slack-compatible JSON of one record: the plain ``text`` fallback and one section block."""
    line = summary(namespace, name, key, status)
    title = one_line(f"{namespace}/{name} {split_key(key)[0]}")
    rest = line[len(title) :] if line.startswith(title) else f": {line}"
    section = f"*{slack_escape(title)}*{slack_escape(rest)}"
    return {"text": slack_escape(line), "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": section}}]}


# -- the webhook URL -----------------------------------------------------------------------------------------
def url_problem(url: str, *, allow_insecure_http: bool) -> str | None:
    """Why ``url`` cannot be a webhook (never repeating it), or None: an ``https://`` URL with a host (plain
    ``http://`` only with ``CANOPY_ALLOW_INSECURE_HTTP``), no userinfo."""
    normal = normalize_url(url)
    scheme = urlsplit(url.strip()).scheme.lower() if normal is not None else ""
    if normal is None or scheme not in ("http", "https") or "@" in urlsplit(url.strip()).netloc:
        return "is not an https:// URL with a host"
    if scheme == "http" and not allow_insecure_http:
        return "is a plain http:// URL; use https, or start the operator with CANOPY_ALLOW_INSECURE_HTTP=true"
    return None


def origin(url: str) -> str:
    """``scheme://host[:port]`` of a URL, the most of a webhook URL any message shows (its path is a secret)."""
    parts = urlsplit(url.strip())
    host = parts.hostname or "?"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = f"[{host}]" if ":" in host else host
    return f"{parts.scheme.lower() or '?'}://{netloc}" + (f":{port}" if port is not None else "")
