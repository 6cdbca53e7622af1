"""Notifications: which transitions, the outbox, the Slack message, the posts and where they may go.

Statuses are made by the operator's own core (``lifecycle``, ``stats``, ``status.settle``) as a pass makes
them. The shell (:class:`~canopy_operator.service.notify.Notifier`) runs against a fake API server that keeps
one object with a resourceVersion (a write with a stale one is a Conflict, as on a real one) and a fake poster
that records what it was asked to post. The attack of the security tests: an experiment author, who cannot
read the namespace's Secrets, names one in ``spec.notifications.webhookSecret`` (another team's, or one never
meant as a webhook) or one whose URL is plain ``http://``: nothing may be posted, and the refusal names the
Secret and the field, never the URL.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from canopy_operator.api.spec import PromptExperimentSpec
from canopy_operator.api.status import NOTIFICATION_LIMIT, NotificationRecord, PromptExperimentStatus
from canopy_operator.core import lifecycle as lc
from canopy_operator.core import notify
from canopy_operator.core.redact import Redactor
from canopy_operator.core.stats import assess
from canopy_operator.core.status import PassFindings, dump, settle
from canopy_operator.k8s.errors import Conflict, NotFound
from canopy_operator.service.notify import Notifier, Target, target_of
from canopy_operator.service.settings import Settings, SettingsError
from canopy_operator.sources.webhook import MAX_ANSWER_BYTES, PostResult, WebhookPoster
from tests.support.credentials import ALLOWED_URLS, LABEL, Secret

NS, NAME, UID = "team-a", "exp", "0f6c1d5e-uid"
NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
CHAMPION = "Summarize the following text in a clear and detailed manner:\n"
CHALLENGER = "Provide a brief, concise summary:\n"
HOOK = "https://hooks.example.com/services/T0001/B0002/s3cretT0kenXyZ"
SECRET_PATH = "/services/T0001/B0002/s3cretT0kenXyZ"


# -- statuses as the operator makes them ---------------------------------------------------------------------
def spec_of(policy: str = "Manual", **notifications: Any) -> PromptExperimentSpec:
    return PromptExperimentSpec.model_validate(
        {"challenger": {"prompt": CHALLENGER}, "promotion": {"policy": policy}, "notifications": notifications}
    )


def running(spec: PromptExperimentSpec) -> PromptExperimentStatus:
    st = lc.start_test(spec, PromptExperimentStatus(), CHAMPION, NOW)
    st = st.model_copy(update={"delivery": st.delivery.model_copy(update={"verified_at": NOW})})
    return settle(st, PassFindings(), 1, NOW)


def counted(
    spec: PromptExperimentSpec, st: PromptExperimentStatus, challenger: int, champion: int, ties: int = 0
) -> PromptExperimentStatus:
    """A poll that counted these votes and assessed them, settled as the pass's report does."""
    test = st.test
    assert test is not None
    votes = st.votes.model_copy(update={"challenger_wins": challenger, "champion_wins": champion, "ties": ties})
    st = st.model_copy(update={"votes": votes})
    a = assess(lc.settings_of(test), challenger, champion, st.evidence.max_e_value)
    st = lc.apply_assessment(spec, st, a, 1, NOW)
    return settle(st, PassFindings(), 1, NOW)


def concluded(st: PromptExperimentStatus) -> PromptExperimentStatus:
    return settle(lc.conclude(st, "rollout-abc", NOW + timedelta(minutes=1)), PassFindings(), 2, NOW)


def degraded(st: PromptExperimentStatus, reason: str = "VerifyTimeout", message: str = "the backend") -> Any:
    return settle(st, PassFindings(degraded=(reason, message)), 1, NOW)


def events_of(found: tuple[notify.Transition, ...]) -> list[str]:
    return [t.event for t in found]


# -- which transitions ---------------------------------------------------------------------------------------
def test_a_manual_decision_is_decided_and_awaiting_approval_then_promoted_after_approval() -> None:
    spec = spec_of("Manual")
    before = running(spec)
    awaiting = counted(spec, before, 25, 5, 2)
    assert awaiting.phase == "AwaitingApproval"
    assert events_of(notify.transitions(before, awaiting)) == ["Decided", "AwaitingApproval"]
    test_id = awaiting.test.id if awaiting.test else ""
    assert {t.key for t in notify.transitions(before, awaiting)} == {
        f"Decided/{test_id}",
        f"AwaitingApproval/{test_id}",
    }
    # The approval: a pending promotion appears (a decision already told), then the promotion concludes.
    approved = spec.model_copy(update={"promotion": spec.promotion.model_copy(update={"approved": True})})
    promoting = settle(lc.approve(approved, awaiting, 2, NOW), PassFindings(), 2, NOW)
    assert promoting.phase == "Promoting"
    assert events_of(notify.transitions(awaiting, promoting)) == ["Decided"]
    assert notify.queue(notify.outbox(before, awaiting), notify.transitions(awaiting, promoting)).notifications == (
        notify.outbox(before, awaiting).notifications
    ), "the Decided record is there already: not queued twice"
    done = concluded(promoting)
    assert done.phase == "Concluded"
    assert [t.key for t in notify.transitions(promoting, done)] == [f"Promoted/{test_id}"]


def test_an_automatic_decision_is_decided_then_promoted() -> None:
    spec = spec_of("Automatic")
    before = running(spec)
    promoting = counted(spec, before, 25, 5)
    assert promoting.phase == "Promoting"
    assert events_of(notify.transitions(before, promoting)) == ["Decided"]
    assert events_of(notify.transitions(promoting, concluded(promoting))) == ["Promoted"]


def test_a_champion_win_is_decided_but_nothing_is_promoted() -> None:
    spec = spec_of("Automatic")
    before = running(spec)
    decided = counted(spec, before, 3, 40)
    assert decided.pending_promotion is not None
    assert decided.pending_promotion.outcome == "champion"
    assert events_of(notify.transitions(before, decided)) == ["Decided"]
    assert notify.transitions(decided, concluded(decided)) == ()


def test_degraded_and_aborted_are_told_when_the_phase_is_entered_only() -> None:
    spec = spec_of()
    before = running(spec)
    down = degraded(before)
    assert events_of(notify.transitions(before, down)) == ["Degraded"]
    assert notify.transitions(down, degraded(down, "Other", "still")) == ()  # no new transition
    aborted = before.model_copy(update={"phase": "Aborted", "message": "spec.abort is set"})
    assert events_of(notify.transitions(before, aborted)) == ["Aborted"]
    assert notify.transitions(aborted, aborted) == ()
    # Degraded before any test started (e.g. an invalid spec): one record with a placeholder test id.
    empty = PromptExperimentStatus()
    assert [t.key for t in notify.transitions(empty, degraded(empty))] == ["Degraded/none"]


def test_a_steady_pass_and_more_votes_after_a_decision_make_no_transition() -> None:
    spec = spec_of()
    before = running(spec)
    assert notify.transitions(before, counted(spec, before, 3, 2)) == ()
    awaiting = counted(spec, before, 25, 5)
    assert notify.transitions(awaiting, awaiting) == ()


def test_a_decision_of_a_new_test_is_a_new_decision() -> None:
    spec = spec_of()
    awaiting = counted(spec, running(spec), 25, 5)
    other = spec_of().model_copy(update={"challenger": spec.challenger.model_copy(update={"prompt": "Other.\n"})})
    fresh = lc.start_test(other, awaiting, CHAMPION, NOW)
    fresh = counted(other, fresh.model_copy(update={"phase": "AwaitingApproval"}), 25, 5)
    assert fresh.test is not None
    assert awaiting.test is not None
    assert fresh.test.id != awaiting.test.id
    assert [t.key for t in notify.transitions(awaiting, fresh)] == [f"Decided/{fresh.test.id}"]


# -- the outbox ------------------------------------------------------------------------------------------------
def test_the_outbox_queues_each_key_once_only_the_chosen_events_and_keeps_twenty() -> None:
    spec = spec_of()
    before = running(spec)
    awaiting = counted(spec, before, 25, 5)
    queued = notify.outbox(before, awaiting)
    assert [(r.sent_at, r.attempts) for r in queued.notifications] == [(None, 0), (None, 0)]
    assert notify.outbox(before, queued).notifications == queued.notifications  # a redone pass adds nothing
    only = notify.outbox(before, awaiting, ["AwaitingApproval"])
    assert [notify.split_key(r.key)[0] for r in only.notifications] == ["AwaitingApproval"]
    assert notify.outbox(before, awaiting, []).notifications == []
    full = awaiting.model_copy(
        update={"notifications": [NotificationRecord(key=f"Degraded/t{i}", sent_at=NOW) for i in range(20)]}
    )
    bounded = notify.outbox(before, full)
    assert len(bounded.notifications) == NOTIFICATION_LIMIT
    assert [r.key for r in bounded.notifications[-2:]] == [t.key for t in notify.transitions(before, awaiting)]
    assert bounded.notifications[0].key == "Degraded/t2"  # the oldest went


def test_attempts_sent_retried_and_given_up() -> None:
    record = NotificationRecord(key="Decided/abc")
    sent = notify.attempted(record, "sent", NOW)
    assert (sent.sent_at, sent.attempts, notify.is_due(sent)) == (NOW, 1, False)
    failed = notify.attempted(record, "failed", NOW)
    assert (failed.sent_at, failed.attempts, notify.gave_up(failed)) == (None, notify.MAX_ATTEMPTS, True)
    retried = record
    for _ in range(notify.MAX_ATTEMPTS):
        assert notify.is_due(retried)
        retried = notify.attempted(retried, "retry", NOW)
    assert notify.gave_up(retried)
    assert retried.attempts == notify.MAX_ATTEMPTS
    # An update never undoes a send recorded in a newer list.
    assert notify.with_updates([sent], {record.key: retried}) == [sent]


def test_an_outbox_with_nothing_due_is_seen_without_parsing_and_never_hides_a_due_record() -> None:
    """``none_due`` reads the stored JSON (an idle pass's shortcut): True only when ``due`` finds nothing."""
    record = NotificationRecord(key="Decided/abc")
    sent = notify.attempted(record, "sent", NOW)
    given_up = record
    for _ in range(notify.MAX_ATTEMPTS):
        given_up = notify.attempted(given_up, "retry", NOW)
    retried = notify.attempted(record, "retry", NOW)
    cases = [[], [sent], [given_up], [sent, given_up], [record], [sent, retried], [retried, given_up]]
    for records in cases:
        st = PromptExperimentStatus(notifications=records)
        stored = dump(st)
        assert notify.none_due(stored) == (notify.due(st) == []), records
    assert all(notify.none_due(empty) for empty in (None, {}, {"notifications": None}))
    # Anything it cannot vouch for is left to the full parse.
    for odd in ("x", ["x"], [{"key": "k", "attempts": "1"}], [{"key": "k", "attempts": True, "sentAt": "t"}]):
        assert not notify.none_due({"notifications": odd})


# -- the message ---------------------------------------------------------------------------------------------
def test_the_payload_is_slack_compatible_one_bounded_line_without_prompt_texts() -> None:
    spec = spec_of()
    before = running(spec)
    awaiting = notify.outbox(before, counted(spec, before, 25, 5, 2))
    assert awaiting.test is not None
    for record in awaiting.notifications:
        body = notify.payload(NS, NAME, record.key, awaiting)
        assert set(body) == {"text", "blocks"}
        (block,) = body["blocks"]
        assert block["type"] == "section"
        assert block["text"]["type"] == "mrkdwn"
        text = body["text"]
        assert text.startswith(f"{NS}/{NAME} {notify.split_key(record.key)[0]}, test {awaiting.test.id}: ")
        assert "challenger 25, champion 5, ties 2, p=0.031, CS [0.51, 0.98]" in text
        assert "\n" not in text
        assert len(text) <= notify.SUMMARY_LIMIT
        assert CHAMPION.strip() not in json.dumps(body)
        assert CHALLENGER.strip() not in json.dumps(body)
        assert block["text"]["text"].startswith(f"*{NS}/{NAME} {notify.split_key(record.key)[0]}*, test ")
    decided, waiting = (notify.payload(NS, NAME, r.key, awaiting)["text"] for r in awaiting.notifications)
    assert "decision challenger: challenger preferred" in decided
    assert waiting.endswith("ManualPolicy: challenger won; set spec.promotion.approved: true to promote")
    approved = spec.model_copy(update={"promotion": spec.promotion.model_copy(update={"approved": True})})
    promoted = concluded(settle(lc.approve(approved, awaiting, 2, NOW), PassFindings(), 2, NOW))
    text = notify.payload(NS, NAME, f"Promoted/{awaiting.test.id}", promoted)["text"]
    assert "challenger preferred 25\u20135 (ties 2)" in text
    assert "promoted (revision rollout-abc)" in text


def test_text_from_status_can_neither_mention_nor_link_nor_grow() -> None:
    hostile = "<!channel> see <https://evil.example|here> & " + "x" * 5000 + "\n\x1b[31m"
    down = degraded(running(spec_of()), "SourceError", hostile)
    body = notify.payload(NS, NAME, "Degraded/abc", down)
    assert "<" not in body["text"]
    assert ">" not in body["text"]
    assert "&lt;!channel&gt;" in body["text"]
    assert "&amp;" in body["text"]
    assert len(body["text"]) <= 5 * notify.SUMMARY_LIMIT
    assert len(body["blocks"][0]["text"]["text"]) < 3000
    assert "\x1b" not in body["text"]


# -- the shell: a fake API server and a fake poster ------------------------------------------------------------
@dataclass
class FakeApi:
    """One PromptExperiment and the namespace's Secrets, with resourceVersions as the API server keeps them."""

    status: dict[str, Any] = field(default_factory=dict)
    rv: int = 1
    secrets: dict[str, Secret] = field(default_factory=dict)
    secret_reads: list[str] = field(default_factory=list)
    writes: int = 0
    reads: int = 0
    on_patch: Callable[[], None] | None = None

    def obj(self) -> dict[str, Any]:
        return {"metadata": {"name": NAME, "uid": UID, "resourceVersion": str(self.rv)}, "status": self.status}

    def pass_writes(self, status: PromptExperimentStatus) -> dict[str, Any]:
        """What the pass's own status write does (the outbox is in it); the object afterwards."""
        self.status = dump(status)
        self.rv += 1
        return self.obj()

    async def read_secret(self, namespace: str, name: str) -> Secret:
        self.secret_reads.append(f"{namespace}/{name}")
        if name not in self.secrets:
            raise NotFound(f"get Secret {namespace}/{name}: not found")
        return self.secrets[name]

    async def read_experiment(self, namespace: str, name: str) -> dict[str, Any]:
        self.reads += 1
        copy: dict[str, Any] = json.loads(json.dumps(self.obj()))
        return copy

    async def patch_experiment_status(
        self, namespace: str, name: str, status: dict[str, Any], resource_version: str | None = None
    ) -> dict[str, Any]:
        if self.on_patch is not None:
            hook, self.on_patch = self.on_patch, None
            hook()
        if resource_version is not None and resource_version != str(self.rv):
            raise Conflict(f"patch PromptExperiment {namespace}/{name} status: 409 Conflict")
        self.status = {**self.status, **status}
        self.rv += 1
        self.writes += 1
        return self.obj()

    def records(self) -> list[NotificationRecord]:
        return [NotificationRecord.model_validate(r) for r in self.status.get("notifications", [])]


@dataclass
class FakePoster:
    """Answers with the outcomes given, in order (then "sent"); records every post."""

    outcomes: list[str] = field(default_factory=list)
    posts: list[tuple[str, dict[str, Any], str]] = field(default_factory=list)
    closed: int = 0

    async def post(self, url: str, payload: dict[str, Any], idempotency_key: str) -> PostResult:
        self.posts.append((url, payload, idempotency_key))
        outcome = self.outcomes.pop(0) if self.outcomes else "sent"
        detail = {"sent": "HTTP 200", "retry": "HTTP 503", "failed": "HTTP 404"}[outcome]
        return PostResult(outcome, detail)  # type: ignore[arg-type]  # one of the three

    async def aclose(self) -> None:
        self.closed += 1


@dataclass
class Clock:
    at: float = 1000.0

    def __call__(self) -> float:
        return self.at


def webhook_secret(name: str = "hook", url: str = HOOK, allowed: str = "https://hooks.example.com/services/") -> Secret:
    return Secret({"url": url}, {LABEL: "true"}, {ALLOWED_URLS: allowed}, name, NS)


def notifier(api: FakeApi, poster: FakePoster, **kwargs: Any) -> Notifier:
    return Notifier(store=api, open_poster=lambda: poster, now=lambda: NOW, clock=Clock(), **kwargs)


def awaiting_pass(api: FakeApi, n: Notifier, target: Target) -> dict[str, Any]:
    """A pass that decides (Manual): its write carries the outbox; the object after the write."""
    spec = spec_of()
    before = running(spec)
    api.status = dump(before)
    after = n.outbox(target, dump(before), counted(spec, before, 25, 5, 2))
    return api.pass_writes(after)


async def send(n: Notifier, api: FakeApi, target: Target, obj: dict[str, Any], *, fresh: bool) -> Any:
    rv = obj["metadata"]["resourceVersion"]
    return await n.send(NS, NAME, UID, target, obj["status"], rv, fresh=fresh)


TARGET = Target(notify.EVENTS, secret="hook")


async def test_a_pass_posts_its_transitions_once_with_an_idempotency_key_and_records_them() -> None:
    api, poster = FakeApi(secrets={"hook": webhook_secret()}), FakePoster()
    n = notifier(api, poster)
    obj = awaiting_pass(api, n, TARGET)
    assert [(r.sent_at, r.attempts) for r in api.records()] == [(None, 0), (None, 0)]
    events = await send(n, api, TARGET, obj, fresh=True)
    assert events == ()
    assert [url for url, _, _ in poster.posts] == [HOOK, HOOK]
    keys = [r.key for r in api.records()]
    assert [key for _, _, key in poster.posts] == [f"{UID}/{k}" for k in keys]
    assert [(r.sent_at, r.attempts) for r in api.records()] == [(NOW, 1), (NOW, 1)]
    assert api.reads == 0  # this pass wrote the status: nothing to read again
    assert api.secret_reads == [f"{NS}/hook"]
    # The next pass (a restarted operator too) posts nothing: the records say sent.
    await send(n, api, TARGET, api.obj(), fresh=False)
    assert len(poster.posts) == 2


async def test_a_crash_before_the_post_posts_on_the_next_pass_and_a_stale_body_never_posts_twice() -> None:
    api, poster = FakeApi(secrets={"hook": webhook_secret()}), FakePoster()
    obj = awaiting_pass(api, notifier(api, poster), TARGET)  # ... and the process died here
    restarted = notifier(api, poster)
    await send(restarted, api, TARGET, obj, fresh=False)  # the next pass wrote nothing: it reads again first
    assert api.reads == 1
    assert len(poster.posts) == 2
    assert all(r.sent_at == NOW for r in api.records())
    # A pass whose body is still the one from before the sentAt write: the fresh read shows them sent.
    await send(restarted, api, TARGET, obj, fresh=False)
    assert len(poster.posts) == 2


async def test_a_conflict_on_the_record_write_is_applied_to_the_fresh_object() -> None:
    api, poster = FakeApi(secrets={"hook": webhook_secret()}), FakePoster()
    n = notifier(api, poster)
    obj = awaiting_pass(api, n, TARGET)

    def someone_writes() -> None:  # e.g. Kopf's annotations after an approval: a new resourceVersion
        api.rv += 1

    api.on_patch = someone_writes
    await send(n, api, TARGET, obj, fresh=True)
    assert all(r.sent_at == NOW for r in api.records())
    await send(n, api, TARGET, api.obj(), fresh=False)
    assert len(poster.posts) == 2


async def test_a_4xx_gives_up_at_once_and_is_never_tried_again() -> None:
    api, poster = FakeApi(secrets={"hook": webhook_secret()}), FakePoster(["failed", "sent"])
    n = notifier(api, poster)
    events = await send(n, api, TARGET, awaiting_pass(api, n, TARGET), fresh=True)
    first, second = api.records()
    assert (first.sent_at, first.attempts) == (None, notify.MAX_ATTEMPTS)
    assert (second.sent_at, second.attempts) == (NOW, 1)
    (event,) = events
    assert event[:2] == ("Warning", "NotificationFailed")
    assert first.key in event[2]
    assert "HTTP 404" in event[2]
    n.clock.at += 3600  # type: ignore[attr-defined]  # the test's Clock
    await send(n, api, TARGET, api.obj(), fresh=False)
    assert len(poster.posts) == 2


async def test_5xx_is_retried_on_later_passes_with_a_wait_and_given_up_after_five_attempts() -> None:
    api, poster = FakeApi(secrets={"hook": webhook_secret()}), FakePoster(["retry"] * 10)
    n = notifier(api, poster)
    clock = n.clock
    assert isinstance(clock, Clock)
    events = await send(n, api, TARGET, awaiting_pass(api, n, TARGET), fresh=True)
    assert events == ()
    assert len(poster.posts) == 1
    assert [r.attempts for r in api.records()] == [1, 0]
    await send(n, api, TARGET, api.obj(), fresh=True)
    assert len(poster.posts) == 1, "a failed record waits before it is tried again"
    for _ in range(notify.MAX_ATTEMPTS - 1):
        clock.at += 3600
        events = await send(n, api, TARGET, api.obj(), fresh=True)
    first = api.records()[0]
    assert (first.sent_at, first.attempts) == (None, notify.MAX_ATTEMPTS)
    assert [e[1] for e in events] == ["NotificationFailed"]
    assert "after 5 attempts: HTTP 503" in events[0][2]
    assert [key for _, _, key in poster.posts].count(f"{UID}/{first.key}") == notify.MAX_ATTEMPTS
    poster.outcomes.clear()
    clock.at += 3600
    await send(n, api, TARGET, api.obj(), fresh=True)
    assert [r.sent_at for r in api.records()] == [None, NOW]  # the given-up one stays given up


async def test_without_any_webhook_nothing_is_queued_or_posted() -> None:
    api, poster = FakeApi(), FakePoster()
    n = notifier(api, poster)
    none = target_of({"notifications": {}}, None)
    assert not none.enabled
    awaiting_pass(api, n, none)
    assert api.records() == []
    operator_wide = target_of({}, "https://hooks.example.com/services/ops")
    assert operator_wide.enabled
    assert operator_wide.secret is None
    n = notifier(api, poster, operator_url="https://hooks.example.com/services/ops")
    await send(n, api, operator_wide, awaiting_pass(api, n, operator_wide), fresh=True)
    assert [url for url, _, _ in poster.posts] == ["https://hooks.example.com/services/ops"] * 2
    assert api.secret_reads == []
    # events filter and an invalid notifications section
    assert target_of({"notifications": {"events": ["Promoted"]}}, None).events == ("Promoted",)
    assert not target_of({"notifications": {"events": ["Nope"]}}, "https://x.example/h").enabled


# -- where a notification may go (security-model rule 1) -----------------------------------------------------
REFUSALS = {
    "another team's Secret (not in this namespace)": (
        {},
        "Secret team-a/hook (spec.notifications.webhookSecret) not found",
    ),
    "a Secret that never opted in": (
        {"hook": Secret({"url": HOOK}, {}, {}, "hook", NS)},
        f"is not labelled {LABEL}=true",
    ),
    "allowed-urls that do not cover the URL": (
        {"hook": webhook_secret(allowed="https://hooks.example.com/other")},
        "may not be sent to https://hooks.example.com/... (key url): no prefix",
    ),
    "a look-alike prefix": (
        {"hook": webhook_secret(url="https://hooks.example.com.evil.example/services/x", allowed=HOOK)},
        "no prefix in its",
    ),
    "plain http:// without the operator's flag": (
        {
            "hook": webhook_secret(
                url="http://hooks.example.com/services/T/B/tok3n", allowed="http://hooks.example.com/"
            )
        },
        "plain http://",
    ),
    "an ssh:// URL": (
        {"hook": webhook_secret(url="ssh://hooks.example.com/x", allowed="ssh://hooks.example.com/")},
        "is not an https:// URL",
    ),
    "userinfo in the URL": (
        {"hook": webhook_secret(url="https://u:p4ssw0rd@hooks.example.com/services/x")},
        "is not an https:// URL",
    ),
    "no url key": (
        {"hook": Secret({"token": "x" * 20}, {LABEL: "true"}, {ALLOWED_URLS: HOOK}, "hook", NS)},
        "holds no key url",
    ),
}


@pytest.mark.parametrize("case", list(REFUSALS))
async def test_a_secret_that_may_not_be_used_posts_nothing_and_says_why_without_the_url(
    case: str, caplog: pytest.LogCaptureFixture
) -> None:
    secrets, expected = REFUSALS[case]
    api, poster = FakeApi(secrets=dict(secrets)), FakePoster()
    n = notifier(api, poster, redactor=Redactor())
    caplog.set_level(logging.DEBUG)
    events = await send(n, api, TARGET, awaiting_pass(api, n, TARGET), fresh=True)
    assert poster.posts == []
    assert api.secret_reads == [f"{NS}/hook"], "only the experiment's own namespace is looked in"
    (event,) = events
    assert event[:2] == ("Warning", "NotificationRefused")
    assert "Secret team-a/hook (spec.notifications.webhookSecret)" in event[2]
    assert expected in event[2]
    assert "nothing was posted" in event[2]
    everything = json.dumps([events, api.status]) + caplog.text
    for secret in (SECRET_PATH, "/services/T/B/tok3n", "p4ssw0rd", "/services/x"):
        assert secret not in everything
    assert [r.attempts for r in api.records()] == [1, 1]  # counted, so it is said at most five times


async def test_refusals_end_after_five_attempts() -> None:
    api, poster = FakeApi(secrets={}), FakePoster()
    n = notifier(api, poster)
    clock = n.clock
    assert isinstance(clock, Clock)
    await send(n, api, TARGET, awaiting_pass(api, n, TARGET), fresh=True)
    said = 1
    for _ in range(10):
        clock.at += 3600
        said += len([e for e in await send(n, api, TARGET, api.obj(), fresh=True) if e[1] == "NotificationRefused"])
    assert said == notify.MAX_ATTEMPTS
    assert all(notify.gave_up(r) for r in api.records())


async def test_an_opted_in_secret_over_http_is_used_when_the_operator_allows_it() -> None:
    url = "http://127.0.0.1:8123/hooks/T/B/tok3n"
    api = FakeApi(secrets={"hook": webhook_secret(url=url, allowed="http://127.0.0.1:8123/hooks/")})
    poster = FakePoster()
    n = notifier(api, poster, allow_insecure_http=True)
    await send(n, api, TARGET, awaiting_pass(api, n, TARGET), fresh=True)
    assert [u for u, _, _ in poster.posts] == [url, url]


def test_the_operator_wide_url_is_checked_at_start_up_without_repeating_it() -> None:
    assert Settings.from_env({}).notify_webhook_url is None
    assert Settings.from_env({"CANOPY_NOTIFY_WEBHOOK_URL": HOOK}).notify_webhook_url == HOOK
    assert HOOK not in repr(Settings.from_env({"CANOPY_NOTIFY_WEBHOOK_URL": HOOK}))
    http = "http://hooks.example.com/services/T/B/tok3n"
    with pytest.raises(SettingsError, match="CANOPY_NOTIFY_WEBHOOK_URL is a plain http://") as refused:
        Settings.from_env({"CANOPY_NOTIFY_WEBHOOK_URL": http})
    assert "tok3n" not in str(refused.value)
    allowed = {"CANOPY_NOTIFY_WEBHOOK_URL": http, "CANOPY_ALLOW_INSECURE_HTTP": "true"}
    assert Settings.from_env(allowed).notify_webhook_url == http


def test_the_webhook_url_is_masked_in_logs_once_read() -> None:
    redactor = Redactor()
    Notifier(store=FakeApi(), open_poster=FakePoster, operator_url=HOOK, redactor=redactor)
    assert SECRET_PATH not in redactor(f"POST {HOOK} 200; path {SECRET_PATH}")


# -- the adapter ---------------------------------------------------------------------------------------------
async def post_to(handler: Callable[[httpx.Request], httpx.Response]) -> tuple[PostResult, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    async with WebhookPoster(transport=httpx.MockTransport(record), timeout=5) as poster:
        result = await poster.post(HOOK, {"text": "hi", "blocks": []}, f"{UID}/Decided/abc")
    return result, seen


@pytest.mark.parametrize(
    ("status", "outcome"),
    [(200, "sent"), (204, "sent"), (429, "retry"), (500, "retry"), (503, "retry"), (404, "failed"), (400, "failed")],
)
async def test_the_poster_classifies_answers(status: int, outcome: str) -> None:
    result, seen = await post_to(lambda _: httpx.Response(status, text="ok"))
    assert result == PostResult(outcome, f"HTTP {status}")  # type: ignore[arg-type]  # a literal outcome
    (request,) = seen
    assert request.method == "POST"
    assert str(request.url) == HOOK
    assert request.headers["Idempotency-Key"] == f"{UID}/Decided/abc"
    assert request.headers["Content-Type"] == "application/json"
    assert json.loads(request.content) == {"text": "hi", "blocks": []}


async def test_the_poster_follows_no_redirect_and_never_names_the_url() -> None:
    result, seen = await post_to(lambda _: httpx.Response(302, headers={"Location": "https://evil.example/x"}))
    assert result.outcome == "failed"
    assert len(seen) == 1


async def test_the_poster_reads_a_huge_answer_no_further_than_its_bound() -> None:
    pulled = 0

    async def endless() -> Any:
        nonlocal pulled
        while True:
            pulled += 1
            yield b"x" * 4096

    result, _ = await post_to(lambda _: httpx.Response(200, content=endless()))
    assert result.outcome == "sent"
    assert pulled * 4096 <= MAX_ANSWER_BYTES + 2 * 4096


async def test_a_webhook_that_is_down_is_retried_later_and_not_named() -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"connection refused to {request.url}", request=request)

    result, _ = await post_to(down)
    assert result.outcome == "retry"
    assert SECRET_PATH not in result.detail
    assert "hooks.example.com" not in result.detail
