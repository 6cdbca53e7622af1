"""One pooled HTTP client per experiment for the life of its daemon (issue #20): an idle experiment's passes
reuse one client and one TCP connection instead of a new client and connection per pass."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

import pytest

from canopy_devkit.simulator import RunningSimulator
from canopy_operator.api.spec import PromptExperimentSpec
from canopy_operator.core.readings import Window
from canopy_operator.k8s.gateway import Gateway
from canopy_operator.k8s.watched import WatchedReads
from canopy_operator.service import wiring
from canopy_operator.service.session import ExperimentSession
from canopy_operator.service.settings import Settings
from canopy_operator.sources.http import POOLED_KEEPALIVE_SECONDS
from tests.support.simulator import CHALLENGER, running_simulator, write_config
from tests.support.tcp_proxy import CountingProxy

SETTINGS = Settings()
OPENED: list[str] = []


def _timer(_: str) -> contextlib.nullcontext[None]:
    return contextlib.nullcontext()


def spec(url: str, timeout: str = "10s") -> PromptExperimentSpec:
    return PromptExperimentSpec.model_validate(
        {"challenger": {"prompt": CHALLENGER}, "backend": {"url": url, "requestTimeout": timeout}}
    )


def session() -> ExperimentSession:
    def open_source(s: PromptExperimentSpec) -> wiring.CanopySource:
        OPENED.append(s.backend.url)
        return wiring.source_for(s, SETTINGS, _timer)

    reads = WatchedReads(cast(Gateway, None))  # no Kubernetes call in these tests
    return ExperimentSession("ns/exp", open_source, lambda s: wiring.source_key(s, SETTINGS), reads)


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[RunningSimulator]:
    async with running_simulator(write_config(tmp_path, ab_testing=True, prompt_b=CHALLENGER)) as simulator:
        yield simulator


async def idle_pass(kept: ExperimentSession, s: PromptExperimentSpec) -> None:
    """What an idle Running pass asks its backend: both stores (and the flags, as a verifying pass does)."""
    source = kept.source(s)
    await source.flags()
    await source.read(Window(started_at=datetime.now(UTC)))
    await kept.end_pass()


async def test_idle_passes_reuse_one_client_and_one_tcp_connection(sim: RunningSimulator) -> None:
    OPENED.clear()
    async with CountingProxy(sim.host, sim.port) as proxy:
        url = proxy.url
        kept = session()
        for _ in range(5):
            await idle_pass(kept, spec(url))
        assert kept.opened == 1
        assert proxy.accepted == 1  # five passes, ten requests, one TCP connection
        await kept.aclose()
    assert [url] == OPENED


async def test_a_new_backend_url_replaces_the_client_and_closes_the_old_one(sim: RunningSimulator) -> None:
    async with CountingProxy(sim.host, sim.port) as first, CountingProxy(sim.host, sim.port) as second:
        kept = session()
        await idle_pass(kept, spec(first.url))
        old = kept.source(spec(first.url))
        await idle_pass(kept, spec(second.url))
        assert kept.opened == 2
        assert old.client.closed  # closed at the end of the pass that replaced it
        assert await _eventually_closed(first)  # its connection too
        await idle_pass(kept, spec(second.url, timeout="20s"))  # any setting of the client counts
        assert kept.opened == 3
        await kept.aclose()
        assert kept.closed
        assert await _eventually_closed(second)


async def test_a_closed_session_refuses_to_open_another_client(sim: RunningSimulator) -> None:
    kept = session()
    await idle_pass(kept, spec(sim.url))
    await kept.aclose()
    await kept.aclose()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        kept.source(spec(sim.url))


async def test_the_pooled_client_holds_at_most_four_connections(sim: RunningSimulator) -> None:
    """Six calls at once against a slow backend: four connections, the other calls wait for one of them."""
    sim.faults.delay = 0.3
    async with CountingProxy(sim.host, sim.port) as proxy:
        source = wiring.source_for(spec(proxy.url), SETTINGS, _timer)
        await asyncio.gather(*(source.flags() for _ in range(6)))
        assert proxy.accepted == 4
        await source.aclose()
    assert POOLED_KEEPALIVE_SECONDS > 30  # idle connections outlive the default interval


async def _eventually_closed(proxy: CountingProxy) -> bool:
    for _ in range(50):
        if proxy.open == 0:
            return True
        await asyncio.sleep(0.02)
    return False


async def test_a_failed_pass_closes_the_client_and_the_next_pass_makes_a_new_one(sim: RunningSimulator) -> None:
    """A backend that timed out or answered garbage may have left a connection checked out: never keep it."""
    async with CountingProxy(sim.host, sim.port) as proxy:
        kept = session()
        await idle_pass(kept, spec(proxy.url))
        first = kept.source(spec(proxy.url))
        await kept.end_pass(failed=True)
        assert first.client.closed
        await idle_pass(kept, spec(proxy.url))
        assert kept.opened == 2
        assert proxy.accepted == 2
        await kept.aclose()
