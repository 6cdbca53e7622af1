"""Thumbs-down entries reach the ledger before the read position moves past them, each exactly once."""

from __future__ import annotations

from dataclasses import asdict

import pytest

from canopy_operator.api.spec import PromptExperimentSpec
from canopy_operator.api.status import OriginalConfig, PromptExperimentStatus
from canopy_operator.core import lifecycle as lc
from canopy_operator.core.ledger import Ledger
from canopy_operator.core.readings import FeedbackLog, Reading, VoteLog, Window
from canopy_operator.service.collect import poll_votes
from canopy_operator.sources.canopy.models import AbFeedbackList, FeedbackList
from tests.support.collect import CHALLENGER, CHAMPION, NOW, FakeBackend, roundtrip


class Reader:
    """VoteSource over the FakeBackend's stores, through the backend's own answer models."""

    where = "http://canopy-backend:8000"

    def __init__(self, backend: FakeBackend) -> None:
        self.backend = backend

    async def read(self, window: Window) -> Reading:
        ab = AbFeedbackList.model_validate(
            {"total": 0, "prompt_a_wins": 0, "prompt_b_wins": 0, "ties": 0, "entries": []}
        )
        items = [{**asdict(entry)} for entry in self.backend.feedback]
        fb = FeedbackList.model_validate({"total": len(items), "feedback": items})
        return Reading(VoteLog(ab.to_entries(), ab.total), FeedbackLog(fb.to_entries(), fb.total))


class MemoryLedger:
    """LedgerStore in memory; ``fail_saves`` makes the next saves raise (the API server said no)."""

    def __init__(self) -> None:
        self.ledger = Ledger()
        self.saves = 0
        self.loads = 0
        self.fail_saves = False

    def ledger_name(self) -> str:
        return "exp-negatives"

    def dataset_name(self, ledger: Ledger) -> str | None:
        return f"exp-dataset-{len(ledger.entries)}" if ledger.entries else None

    async def load(self) -> Ledger:
        self.loads += 1
        return self.ledger

    async def save(self, ledger: Ledger) -> None:
        if self.fail_saves:
            raise RuntimeError("API server unavailable")
        self.saves += 1
        self.ledger = ledger


SPEC = PromptExperimentSpec.model_validate({"challenger": {"prompt": CHALLENGER}})


def _status() -> PromptExperimentStatus:
    original = OriginalConfig(prompt=CHAMPION, feedback_enabled=True, ab_testing_enabled=False)
    return lc.start_test(SPEC, PromptExperimentStatus(original=original), CHAMPION, NOW)


async def test_new_thumbs_down_are_saved_to_the_ledger_with_counts_in_status() -> None:
    backend, store = FakeBackend(), MemoryLedger()
    backend.thumbs("thumbs_down", "rivers")
    backend.thumbs("thumbs_up", "fine")
    backend.thumbs("thumbs_down", "budgets")
    st, _ = await poll_votes(SPEC, _status(), Reader(backend), NOW, store)
    assert store.ledger.prompts() == ["rivers", "budgets"]
    assert st.negatives.total == 2
    assert st.negatives.since_last_evaluation == 2
    assert st.negatives.ledger_secret == "exp-negatives"
    assert st.negatives.dataset_secret == "exp-dataset-2"


async def test_crash_before_the_status_write_rereads_without_doubles() -> None:
    backend, store = FakeBackend(), MemoryLedger()
    backend.thumbs("thumbs_down", "rivers")
    backend.thumbs("thumbs_down", "budgets")
    before = _status()
    await poll_votes(SPEC, before, Reader(backend), NOW, store)  # ledger saved, then the status write is lost
    st, _ = await poll_votes(SPEC, roundtrip(before), Reader(backend), NOW, store)
    assert store.ledger.prompts() == ["rivers", "budgets"]
    assert store.saves == 1
    assert st.negatives.total == 2  # recovered from the ledger, not counted twice
    assert st.collection.feedback_cursor == 2


async def test_restart_keeps_earlier_entries_and_adds_only_new_ones() -> None:
    backend, store = FakeBackend(), MemoryLedger()
    backend.thumbs("thumbs_down", "before")
    st, _ = await poll_votes(SPEC, _status(), Reader(backend), NOW, store)
    backend.restart()
    backend.thumbs("thumbs_down", "after")
    st, restarted = await poll_votes(SPEC, roundtrip(st), Reader(backend), NOW, store)
    assert restarted
    assert store.ledger.prompts() == ["before", "after"]
    assert st.negatives.total == 2


async def test_failed_ledger_write_leaves_the_read_position_where_it_was() -> None:
    backend, store = FakeBackend(), MemoryLedger()
    backend.thumbs("thumbs_down", "rivers")
    store.fail_saves = True
    with pytest.raises(RuntimeError):
        await poll_votes(SPEC, _status(), Reader(backend), NOW, store)
    store.fail_saves = False
    st, _ = await poll_votes(SPEC, _status(), Reader(backend), NOW, store)
    assert store.ledger.prompts() == ["rivers"]
    assert st.negatives.total == 1


async def test_polls_without_new_thumbs_down_do_not_read_the_ledger() -> None:
    backend, store = FakeBackend(), MemoryLedger()
    backend.thumbs("thumbs_up", "fine")
    st, _ = await poll_votes(SPEC, _status(), Reader(backend), NOW, store)
    await poll_votes(SPEC, st, Reader(backend), NOW, store)
    assert (store.loads, store.saves) == (0, 0)
    assert st.negatives.total == 0
