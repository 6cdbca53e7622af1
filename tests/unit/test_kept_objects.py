"""What the operator keeps of an experiment between passes carries no ``metadata.managedFields`` (issue #20).

managedFields were more than half of the Python objects of a kept experiment (about 30 of 51 KiB for a
Running one); nothing in the operator reads them. Two copies are kept: the one Kopf holds for the daemon (its
``body``), and the object the daemon's last status write returned (until the watch delivers it).
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import AsyncIterator
from typing import Any

import kopf
import pytest
from kubernetes_asyncio import client

from canopy_operator.handlers.experiment import wake as wake_handler
from canopy_operator.k8s.gateway import Gateway

MANAGED = [
    {
        "manager": "kopf",
        "operation": "Update",
        "apiVersion": "canopy.genaiops.io/v1alpha1",
        "fieldsType": "FieldsV1",
        "fieldsV1": {"f:status": {"f:phase": {}, "f:conditions": {}}},
        "subresource": "status",
    }
]


wake: Any = wake_handler  # the decorated function, called as Kopf calls it (its type is Kopf's callback protocol)


def kept(raw: dict[str, Any]) -> kopf.Body:
    """The view Kopf keeps of ``raw`` and hands its handlers and the daemon."""
    source: Any = raw
    return kopf.Body(source)


def experiment() -> dict[str, Any]:
    return {
        "apiVersion": "canopy.genaiops.io/v1alpha1",
        "kind": "PromptExperiment",
        "metadata": {
            "name": "exp",
            "namespace": "ns",
            "resourceVersion": "7",
            "generation": 2,
            "finalizers": ["canopy.genaiops.io/finalizer"],
            "managedFields": copy.deepcopy(MANAGED),
        },
        "spec": {"challenger": {"prompt": "b"}},
        "status": {"phase": "Running"},
    }


async def test_the_body_kopf_keeps_for_the_daemon_loses_its_managed_fields() -> None:
    raw = experiment()
    body = kept(raw)
    await wake(memo={}, meta=body.meta, body=body)
    assert "managedFields" not in raw["metadata"]
    expected = experiment()
    del expected["metadata"]["managedFields"]
    assert raw == expected  # nothing else of it changed
    assert dict(body) == expected


async def test_an_object_without_managed_fields_is_left_as_it_is() -> None:
    raw = experiment()
    del raw["metadata"]["managedFields"]
    before = copy.deepcopy(raw)
    await wake(memo={}, meta=kept(raw).meta, body=kept(raw))
    assert raw == before


@pytest.fixture
async def api_server() -> AsyncIterator[str]:
    """Answers every request with the experiment, managedFields included, as the API server does."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            (int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")),
            0,
        )
        if length:
            await reader.readexactly(length)
        path = head.split(b" ")[1]
        obj = experiment()
        payload = {"kind": "PromptExperimentList", "items": [obj]} if b"fieldSelector" in path else obj
        body = json.dumps(payload).encode()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body))
        writer.write(body)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        await server.wait_closed()


async def test_the_objects_the_gateway_returns_carry_no_managed_fields(api_server: str) -> None:
    api = client.ApiClient(client.Configuration(host=api_server))
    try:
        gateway = Gateway(api, deadline=10)
        written = await gateway.patch_experiment_status("ns", "exp", {"phase": "Running"}, "6")
        read = await gateway.read_experiment("ns", "exp")
    finally:
        await api.close()
    for obj in (written, read):
        assert "managedFields" not in obj["metadata"]
        assert obj["metadata"]["resourceVersion"] == "7"
        assert obj["status"] == {"phase": "Running"}


async def test_a_refused_status_write_is_a_conflict_naming_the_write() -> None:
    """The status write reads the API server's answer as JSON (no model classes); a 409 is still a Conflict."""
    from canopy_operator.k8s.errors import Conflict

    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(x.split(b":")[1]) for x in head.split(b"\r\n") if x.lower().startswith(b"content-length"))
        await reader.readexactly(length)
        status = {"kind": "Status", "status": "Failure", "reason": "Conflict", "code": 409, "message": "modified"}
        body = json.dumps(status).encode()
        head = b"HTTP/1.1 409 Conflict\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
        writer.write(head % len(body))
        writer.write(body)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(refuse, "127.0.0.1", 0)
    api = client.ApiClient(client.Configuration(host=f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"))
    try:
        with pytest.raises(Conflict, match="patch PromptExperiment ns/exp status"):
            await Gateway(api, deadline=10).patch_experiment_status("ns", "exp", {"phase": "Running"}, "6")
    finally:
        await api.close()
        server.close()
        await server.wait_closed()
