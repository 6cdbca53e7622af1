"""Webhook notifications on a real API server, with the real operator killed and started again (docs/notifications.md).

A Manual-policy experiment names an opted-in webhook Secret whose URL points at a Slack-like receiver on
127.0.0.1 (plain http, which the test machine's operator allows with ``CANOPY_ALLOW_INSECURE_HTTP``, as every
loopback server of the integration tier). Votes decide the test: Decided and AwaitingApproval are posted. The
operator is killed (SIGKILL) while the experiment awaits approval and started again; then the approval
promotes the challenger and Promoted is posted, after one answer 503 that makes the operator try again on a
later pass with the same ``Idempotency-Key``. At the end the receiver has accepted exactly one message per
transition, each with the decision summary, and the webhook URL's secret path is in no status, event or log.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from kubernetes_asyncio import client
from kubernetes_asyncio.client import ApiClient

from canopy_devkit.controlplane import ControlPlane
from canopy_devkit.simulator.runner import bound_port
from tests.support.envtest import Kubectl, namespace_name
from tests.support.experiments import Experiments, deployed_backend, vote_like_ui
from tests.support.kopf_runner import run_operator, wait_for
from tests.support.kubelet import FakeKubelet
from tests.support.operator_process import OperatorProcess

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

TOKEN = "xoxb-T0NOTIFY-B0NOTIFY-s3cretW3bh00kPath"
WAIT = 90.0


@dataclass
class Receiver:
    """A Slack-like incoming webhook: records every post; answers 503 to the first post of the events named."""

    fail_first: set[str] = field(default_factory=set)
    posts: list[tuple[str, int, dict[str, Any]]] = field(default_factory=list)
    """(Idempotency-Key, status answered, JSON body) of every post, in order."""
    port: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        key = request.headers.get("Idempotency-Key", "")
        body = await request.json()
        event = key.split("/")[1] if key.count("/") >= 2 else ""
        status = 200
        if event in self.fail_first and not any(k == key for k, _, _ in self.posts):
            status = 503
        self.posts.append((key, status, body))
        return web.Response(status=status, text="ok" if status == 200 else "busy")

    def accepted(self) -> list[tuple[str, dict[str, Any]]]:
        return [(key, body) for key, status, body in self.posts if status == 200]

    def accepted_events(self) -> list[str]:
        return [key.split("/")[1] for key, _ in self.accepted()]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    recv = Receiver(fail_first={"Promoted"})
    app = web.Application()
    app.router.add_post(f"/hooks/{TOKEN}", recv.handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    recv.port = bound_port(runner, "the webhook receiver")
    try:
        yield recv
    finally:
        await runner.cleanup()


@pytest.fixture
async def backend(admin_api: ApiClient, namespace: str, tmp_path: Path) -> AsyncIterator[FakeKubelet]:
    async with deployed_backend(admin_api, namespace, tmp_path) as kubelet:
        yield kubelet


async def create_webhook_secret(
    api: ApiClient, namespace: str, url: str, allowed: str, *, name: str = "team-webhook"
) -> None:
    body = {
        "metadata": {
            "name": name,
            "labels": {"canopy.genaiops.io/credentials": "true"},
            "annotations": {"canopy.genaiops.io/allowed-urls": allowed},
        },
        "stringData": {"url": url},
    }
    await client.CoreV1Api(api).create_namespaced_secret(namespace, body)  # type: ignore[arg-type]  # dicts serialise as-is


def records(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["key"]: r for r in status.get("notifications", [])}


async def test_each_transition_is_posted_exactly_once_across_an_operator_restart(
    admin_api: ApiClient,
    operator_kubeconfig: Path,
    namespace: str,
    backend: FakeKubelet,
    receiver: Receiver,
    kubectl: Kubectl,
    tmp_path: Path,
) -> None:
    url = f"http://127.0.0.1:{receiver.port}/hooks/{TOKEN}"
    await create_webhook_secret(admin_api, namespace, url, f"http://127.0.0.1:{receiver.port}/hooks/")
    exp = Experiments(admin_api, namespace)
    await exp.create(
        backend.url,
        promotion={"policy": "Manual"},
        notifications={"webhookSecret": "team-webhook", "events": ["AwaitingApproval", "Decided", "Promoted"]},
    )
    proc = OperatorProcess(operator_kubeconfig, namespace, tmp_path / "operator")
    logs: list[str] = []
    proc.start()
    try:
        await exp.wait_phase("Running", timeout=WAIT)
        await vote_like_ui(backend.url, ["challenger"] * 25 + ["champion"] * 5 + ["tie"] * 2, tag="notify")
        status = await exp.wait_phase("AwaitingApproval", timeout=WAIT)
        test_id = status["test"]["id"]
        await wait_for(lambda: len(receiver.accepted()) >= 2, timeout=30, what="Decided and AwaitingApproval posted")
        status = await exp.wait_status(
            lambda s: all(r.get("sentAt") for r in records(s).values()) and len(records(s)) == 2,
            "both records marked sent",
        )
        assert receiver.accepted_events() == ["Decided", "AwaitingApproval"]

        # Killed while it awaits approval (no clean-up at all), then started again.
        assert proc.process is not None
        proc.process.kill()
        proc.process.wait(10)
        logs.append(proc.log())
        proc = proc.again()
        proc.start()
        await asyncio.sleep(8)  # more than one poll interval (5 s) of the new process before the approval
        assert proc.returncode() is None, proc.tail()
        assert receiver.accepted_events() == ["Decided", "AwaitingApproval"], "a restart posted again"

        await exp.patch_spec({"promotion": {"approved": True}})
        status = await exp.wait_phase("Concluded", timeout=WAIT)
        await wait_for(lambda: "Promoted" in receiver.accepted_events(), timeout=60, what="Promoted posted after a 503")
        status = await exp.wait_status(
            lambda s: len(records(s)) == 3 and all(r.get("sentAt") for r in records(s).values()),
            "every record marked sent",
        )
        await asyncio.sleep(6)  # room for a duplicate post to show up
    finally:
        proc.stop()
        logs.append(proc.log())

    # Exactly one accepted message per transition, in order, each for this test and this experiment.
    uid = (await exp.get())["metadata"]["uid"]
    keys = [f"{event}/{test_id}" for event in ("Decided", "AwaitingApproval", "Promoted")]
    assert [key for key, _ in receiver.accepted()] == [f"{uid}/{key}" for key in keys]
    promoted_tries = [status_ for key, status_, _ in receiver.posts if key == f"{uid}/Promoted/{test_id}"]
    assert promoted_tries == [503, 200], "the retry after a 503 carries the same Idempotency-Key"
    assert len(receiver.posts) == 4
    texts = {key.split("/")[1]: body["text"] for key, body in receiver.accepted()}
    for event, text in texts.items():
        assert text.startswith(f"{namespace}/exp {event}, test {test_id}: challenger 25, champion 5, ties 2, p")
        assert ", CS [" in text
    assert "decision challenger: challenger preferred" in texts["Decided"]
    assert texts["AwaitingApproval"].endswith(
        "ManualPolicy: challenger won; set spec.promotion.approved: true to promote"
    )
    assert "challenger preferred 25\u20135 (ties 2)" in texts["Promoted"]
    assert ": promoted (revision " in texts["Promoted"]
    for _, body in receiver.accepted():
        (block,) = body["blocks"]
        assert block["type"] == "section"
        assert block["text"]["text"].startswith(f"*{namespace}/exp ")

    final = records(status)
    assert [r["attempts"] for r in final.values()] == [1, 1, 2]
    assert list(final) == keys

    # The URL's secret path is nowhere: status, events, the operator's logs.
    events = kubectl("get", "events", "-n", namespace, "-o", "json").stdout
    for where, text in {"status": json.dumps(status), "events": events, "logs": "\n".join(logs)}.items():
        assert TOKEN not in text, f"the webhook URL leaked into the {where}"


#: A backend host the test machine's operator does not allow: the experiment degrades on its first pass
#: (BackendNotAllowed), a transition with nothing else to wait for.
REFUSED_BACKEND = "http://backend.not-allowed.example:8000"


async def test_a_webhook_secret_that_may_not_be_used_posts_nothing_and_the_experiment_goes_on(
    admin_api: ApiClient,
    operator_kubeconfig: Path,
    namespace: str,
    receiver: Receiver,
    kubectl: Kubectl,
    control_plane: ControlPlane,
) -> None:
    """The attack: an author names a Secret of the namespace never meant as a webhook (no opt-in label), one
    opted in for other URLs, or another team's (in another namespace). Nothing is posted; each experiment gets
    a NotificationRefused event naming the Secret and the field, and its own condition is unchanged."""
    url = f"http://127.0.0.1:{receiver.port}/hooks/{TOKEN}"
    core = client.CoreV1Api(admin_api)
    unlabelled = {"metadata": {"name": "unlabelled"}, "stringData": {"url": url}}
    await core.create_namespaced_secret(namespace, unlabelled)  # type: ignore[arg-type]  # dicts serialise as-is
    await create_webhook_secret(admin_api, namespace, url, "https://hooks.example.com/", name="other-urls")
    other_team = namespace_name("other-team")
    with control_plane.admin_client() as admin:
        admin.create_or_replace(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": other_team}}, "namespaces"
        )
    try:
        allowed = f"http://127.0.0.1:{receiver.port}/hooks/"
        await create_webhook_secret(admin_api, other_team, url, allowed, name="team-webhook")
        cases = {"exp-unlabelled": "unlabelled", "exp-other-urls": "other-urls", "exp-foreign": "team-webhook"}
        for exp_name, secret in cases.items():
            await Experiments(admin_api, namespace, exp_name).create(
                REFUSED_BACKEND, notifications={"webhookSecret": secret}
            )

        def refusals() -> dict[str, str]:
            raw = json.loads(kubectl("get", "events", "-n", namespace, "-o", "json").stdout)
            return {
                e["involvedObject"]["name"]: e["message"] for e in raw["items"] if e["reason"] == "NotificationRefused"
            }

        with run_operator(operator_kubeconfig, namespace=namespace):
            await wait_for(
                lambda: set(refusals()) == set(cases), timeout=60, what="a NotificationRefused per experiment"
            )
    finally:
        with control_plane.admin_client() as admin:
            admin.delete(f"/api/v1/namespaces/{other_team}")
    assert receiver.posts == []
    messages = refusals()
    for exp_name, secret in cases.items():
        assert f"Secret {namespace}/{secret} (spec.notifications.webhookSecret)" in messages[exp_name]
    assert "is not labelled canopy.genaiops.io/credentials=true" in messages["exp-unlabelled"]
    assert f"may not be sent to http://127.0.0.1:{receiver.port}/... (key url)" in messages["exp-other-urls"]
    assert messages["exp-foreign"].startswith(
        f"Secret {namespace}/team-webhook (spec.notifications.webhookSecret) not found"
    )
    for exp_name in cases:
        status = await Experiments(admin_api, namespace, exp_name).status()
        assert status["phase"] == "Degraded"
        degraded = {c["type"]: c for c in status["conditions"]}["Degraded"]
        assert degraded["reason"] == "BackendNotAllowed"  # the experiment's own story, untouched
        (record,) = status["notifications"]
        assert record["key"] == "Degraded/none"
        assert "sentAt" not in record
        assert record["attempts"] == 1
    everything = kubectl("get", "events", "-n", namespace, "-o", "json").stdout + json.dumps(messages)
    assert TOKEN not in everything
