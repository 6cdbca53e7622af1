"""What an operator's on-call sees: the metrics endpoint scraped and the JSON logs read during a real run.

The real operator runs against the real API server with the simulator (restarted on every rollout by the
fake kubelet); the metrics server is the one the CLI starts, on a free 127.0.0.1 port.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client import ApiClient

from canopy_devkit.kubelet import FakeKubelet, running_backend
from canopy_devkit.voters import fixed_picks, post_votes
from canopy_operator.api.base import GROUP, PLURAL, VERSION
from canopy_operator.telemetry.logs import prompt_ref
from tests.support.kopf_runner import run_operator, wait_for
from tests.support.observability import LogCapture, Samples, json_logs, scrape, served, value

pytestmark = pytest.mark.integration

CHAMPION = "Summarize the following text in a clear and detailed manner:\n"
CHALLENGER = "Provide a brief, concise summary:\n"
SECRET = "tok-s3cr3t-4242"
P = "canopy_operator_"


@pytest.fixture
async def backend(admin_api: ApiClient, namespace: str, tmp_path: Path) -> AsyncIterator[FakeKubelet]:
    async with running_backend(admin_api, namespace, tmp_path) as kubelet:
        yield kubelet


@pytest.fixture
def metrics_port(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """The operator serves its metrics on this free 127.0.0.1 port (read from the environment at start-up)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    monkeypatch.setenv("CANOPY_METRICS_PORT", str(port))
    monkeypatch.setenv("CANOPY_METRICS_ADDR", "127.0.0.1")
    return port


def experiment(url: str) -> dict[str, Any]:
    spec = {
        "backend": {"url": url},
        "challenger": {"prompt": CHALLENGER},
        "analysis": {"interval": "5s"},
        "delivery": {"verifyTimeout": "30s"},
    }
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "PromptExperiment", "metadata": {"name": "exp"}, "spec": spec}


async def phase_is(api: ApiClient, namespace: str, phase: str) -> bool:
    obj = await client.CustomObjectsApi(api).get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "exp")
    return bool(obj.get("status", {}).get("phase") == phase)


def delta(after: Samples, before: Samples, name: str, /, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


async def run_to_promotion(
    admin_api: ApiClient, kubeconfig: Path, namespace: str, backend: FakeKubelet, port: int
) -> tuple[Samples, Samples, LogCapture]:
    """Create the experiment (its backend URL carries a credential), vote 25:5 (2 ties), scrape at the end."""
    url_with_secret = backend.url.replace("http://", f"http://canopy:{SECRET}@")
    await client.CustomObjectsApi(admin_api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, experiment(url_with_secret)
    )
    before: Samples = {}  # the operator's registry starts with the process: every counter from zero
    with json_logs() as logs, run_operator(kubeconfig, namespace=namespace):
        await wait_for(lambda: phase_is(admin_api, namespace, "Running"), timeout=60, what="phase Running")
        await post_votes(backend.url, fixed_picks(challenger=25, champion=5, ties=2), seed=3)
        await wait_for(lambda: phase_is(admin_api, namespace, "Concluded"), timeout=90, what="phase Concluded")
        promotions = value(before, P + "promotions_total", outcome="challenger")

        def promotion_published() -> bool:
            # The pass writes status first and publishes right after: a scrape may fall in between.
            return value(scrape(port), P + "promotions_total", outcome="challenger") > promotions

        await wait_for(promotion_published, timeout=30, what="the promotion in the metrics")
        after = scrape(port)
    return before, after, logs


async def test_metrics_endpoint_serves_every_metric_with_the_run_s_values(
    admin_api: ApiClient, operator_kubeconfig: Path, namespace: str, backend: FakeKubelet, metrics_port: int
) -> None:
    before, after, _ = await run_to_promotion(admin_api, operator_kubeconfig, namespace, backend, metrics_port)
    exp = {"namespace": namespace, "name": "exp"}

    assert value(after, P + "experiments", phase="Concluded") == 1
    assert value(after, P + "experiments", phase="Running") == 0
    for side, count in (("challenger", 25), ("champion", 5), ("tie", 2)):
        assert value(after, P + "votes_total", side=side, **exp) == count
        assert value(after, P + "experiment_votes", side=side, **exp) == count
    # 25-5 under the default method (betting): CS [0.5124, 0.9810] (docs/decision-rule.md's golden table).
    assert value(after, P + "experiment_win_rate_lower_ratio", **exp) == pytest.approx(0.5124, abs=5e-5)
    assert value(after, P + "experiment_win_rate_upper_ratio", **exp) == pytest.approx(0.9810, abs=5e-5)
    assert 0 < value(after, P + "experiment_p_value", **exp) < 0.05
    assert delta(after, before, P + "decisions_total", outcome="challenger") == 1
    assert delta(after, before, P + "decisions_total", outcome="champion") == 0
    assert delta(after, before, P + "promotions_total", outcome="challenger") == 1
    changed = delta(after, before, P + "config_deliveries_total", mode="configmap", result="changed")
    assert changed == backend.rollouts == 2
    assert delta(after, before, P + "config_deliveries_total", mode="configmap", result="failed") == 0
    assert {labels["result"] for labels in served(after, P + "evaluation_runs_total")} >= {"passed", "failed", "error"}
    assert delta(after, before, P + "evaluation_runs_total", result="passed") == 0  # no evaluation configured
    assert {labels["kind"] for labels in served(after, P + "backend_errors_total")} >= {"unreachable", "http_5xx"}
    for endpoint in ("/feature-flags", "/summarize/ab", "/feedback/ab", "/feedback"):
        polls = delta(after, before, P + "backend_poll_duration_seconds_count", endpoint=endpoint)
        assert polls >= 1, endpoint
    assert delta(after, before, P + "backend_poll_duration_seconds_sum", endpoint="/feedback/ab") > 0
    passes = delta(after, before, P + "reconcile_duration_seconds_count")
    assert passes >= 4
    assert 0 < delta(after, before, P + "reconcile_duration_seconds_sum") < passes * 30


async def test_logs_are_json_events_without_secrets_or_prompt_texts(
    admin_api: ApiClient, operator_kubeconfig: Path, namespace: str, backend: FakeKubelet, metrics_port: int
) -> None:
    _, _, logs = await run_to_promotion(admin_api, operator_kubeconfig, namespace, backend, metrics_port)
    records = logs.records()  # every line is one JSON object
    obj = f"{namespace}/exp"
    mine = [r for r in records if r.get("object") == obj]
    events = [r["event"] for r in mine]

    for expected in ("experiment_started", "config_delivered", "votes_synced", "decision_made", "prompt_promoted"):
        assert expected in events, f"{expected} missing from {sorted(set(events))}"
    assert events.count("decision_made") == 1
    assert events.count("prompt_promoted") == 1
    assert events.index("experiment_started") < events.index("decision_made") < events.index("prompt_promoted")
    started = logs.events("experiment_started")[0]
    assert started["champion_prompt"] == prompt_ref(CHAMPION)
    assert "***@127.0.0.1" in started["backend"]
    synced = [r for r in mine if r["event"] == "votes_synced"]
    assert (synced[-1]["challenger_wins"], synced[-1]["champion_wins"], synced[-1]["ties"]) == (25, 5, 2)
    assert sum(r["new_votes"] for r in synced) == 32
    decision = logs.events("decision_made")[0]
    assert decision["decision"] == "challenger"
    promoted = logs.events("prompt_promoted")[0]
    assert promoted["promoted_hash"] != ""
    delivered = [r for r in mine if r["event"] == "config_delivered"]
    assert {r["mode"] for r in delivered} == {"configmap"}
    for record in records:
        assert {"ts", "level", "logger", "event", "message"} <= set(record), record
    assert SECRET not in logs.text
    for text in (CHAMPION.strip(), CHALLENGER.strip(), "article 3-"):
        assert text not in logs.text, f"{text!r} appears in the logs"
