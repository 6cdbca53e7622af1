"""An experiment that is Running with nothing new to read reports the very same status on its next pass.

Found by bench/reconcile_bench.py: the first idle poll after a delivery added the ConfigDrift condition
("InSync"), one status write per experiment for nothing; the delivering pass now records it.
"""

from __future__ import annotations

from canopy_operator.api.status import PromptExperimentStatus
from tests.unit.test_reconcile_pass_status import FakeBackend, FakeDelivery, body, dump, run_pass


async def test_idle_pass_after_delivery_leaves_status_unchanged() -> None:
    delivery = FakeDelivery()
    backend = FakeBackend(delivery)
    first = await run_pass(body(None), delivery, backend, [])
    assert first.status.phase == "Running"
    written: list[PromptExperimentStatus] = []
    idle = await run_pass(body(dump(first.status)), delivery, backend, written)
    assert dump(idle.status) == dump(first.status)
    assert written == []


async def test_delivering_pass_reports_config_in_sync() -> None:
    delivery = FakeDelivery()
    report = await run_pass(body(None), delivery, FakeBackend(delivery), [])
    drift = {c.type: c for c in report.status.conditions}["ConfigDrift"]
    assert (drift.status, drift.reason) == ("False", "InSync")
