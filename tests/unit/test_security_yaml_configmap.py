"""Findings 2 and 10 of #14 on the ConfigMap path: the tenant's canopy-config text is parsed off the event loop
with a deadline, and every refusal is ``InvalidValues`` naming the ConfigMap and key (no exception escapes the
pass, nothing is written)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from canopy_operator.core import values
from canopy_operator.core.values import ManagedKeys, ValuesReader
from canopy_operator.delivery import configmap
from canopy_operator.delivery.base import InvalidValues
from tests.support.values_files import KEY, FakeGateway, alias_bomb, deep_flow_nesting
from tests.support.values_files import configmap_delivery as delivery

pytestmark = pytest.mark.timeout(60)  # the hostile texts stalled the old code for 30 s to minutes

VALID = 'LLAMA_STACK_URL: "http://llama:8321"\nsummarize:\n  enabled: true\n  model: llama32\n  prompt: Sum up.\n'
DESIRED = ManagedKeys("Sum up.", "Be brief.", True, True)


async def test_alias_bomb_in_the_configmap_is_invalid_values_naming_the_configmap_key_and_bound() -> None:
    gateway = FakeGateway(alias_bomb(VALID))
    with pytest.raises(InvalidValues) as info:
        await delivery(gateway).read()
    message = str(info.value)
    assert message.startswith(f"ConfigMap team-a/canopy-config key {KEY}: ")
    assert "alias expansion bound" in message
    assert len(message) < 400


async def test_writing_over_an_alias_bomb_is_refused_fast_and_writes_nothing() -> None:
    gateway = FakeGateway(alias_bomb(VALID))
    started = time.thread_time()
    with pytest.raises(InvalidValues, match=r"canopy-config key canopy-config\.yaml: .*alias expansion bound"):
        await delivery(gateway).write(DESIRED)
    assert time.thread_time() - started < 0.5
    assert gateway.writes == []
    assert gateway.annotation is None


async def test_deep_flow_nesting_in_the_configmap_is_invalid_values_not_recursion_error() -> None:
    gateway = FakeGateway(deep_flow_nesting(VALID, 6000))
    with pytest.raises(InvalidValues, match=r"canopy-config key canopy-config\.yaml: .*nested more than 64 deep"):
        await delivery(gateway).read()
    with pytest.raises(InvalidValues, match="depth bound"):
        await delivery(gateway).write(DESIRED)
    assert gateway.writes == []


async def test_an_edit_the_editor_refuses_is_invalid_values_not_an_escaping_value_error() -> None:
    text = VALID.replace("summarize:\n", "base: &s\n") + "summarize: *s\n"  # readable, but not editable in place
    gateway = FakeGateway(text)
    assert (await delivery(gateway).read()).keys.prompt == "Sum up."
    with pytest.raises(InvalidValues, match=r"canopy-config key canopy-config\.yaml: summarize is an alias"):
        await delivery(gateway).write(DESIRED)
    assert gateway.writes == []


async def test_the_values_are_parsed_off_the_event_loop() -> None:
    def slow_read(text: str, **_: object) -> ManagedKeys:
        time.sleep(0.3)  # stands for a long parse
        return ManagedKeys("Sum up.", None, None, None)

    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    try:
        state = await delivery(FakeGateway(VALID), read=slow_read).read()
    finally:
        task.cancel()
    assert state.keys.prompt == "Sum up."
    assert ticks >= 10, f"the event loop ran only {ticks} times during a 0.3 s parse"


async def test_a_parse_past_its_deadline_is_invalid_values_naming_the_time_bound() -> None:
    def stuck_read(text: str, **_: object) -> ManagedKeys:
        time.sleep(1.0)
        return ManagedKeys("Sum up.", None, None, None)

    started = time.perf_counter()
    with pytest.raises(InvalidValues) as info:
        await delivery(FakeGateway(VALID), read=stuck_read, parse_timeout=0.2).read()
    assert time.perf_counter() - started < 0.9
    assert str(info.value) == (
        f"ConfigMap team-a/canopy-config key {KEY}: reading the values took longer than 0.2s (time bound); refused"
    )


async def test_an_edit_past_its_deadline_stops_its_own_parse_and_writes_nothing() -> None:
    long_text = VALID + "".join(f"k{i}: [a, b, c, d]\n" for i in range(20_000))  # ~0.4 MB: seconds to edit
    gateway = FakeGateway(long_text)
    with pytest.raises(InvalidValues, match=r"editing the values took longer than 0\.1s \(time bound\)"):
        await delivery(gateway, parse_timeout=0.1).write(DESIRED)
    assert gateway.writes == []
    await asyncio.sleep(0.5)  # the worker polls the same deadline every few hundred events
    cpu = time.thread_time()
    await asyncio.sleep(0.5)
    assert time.thread_time() - cpu < 0.15, "the worker thread kept parsing after the deadline"


def count_thread_hops(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every hop of the ConfigMap delivery to a worker thread, recorded as it happens."""
    hops: list[object] = []
    real = asyncio.to_thread

    async def counting(work: Any, *args: Any) -> Any:
        hops.append(work)
        return await real(work, *args)

    monkeypatch.setattr(configmap.asyncio, "to_thread", counting)
    return hops


async def test_an_idle_pass_does_not_parse_the_same_configmap_text_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nor hop to a worker thread for it (issue #20: every idle pass reads its ConfigMap's text)."""
    parsed: list[str] = []
    real = values._document

    def counting(text: str, *args: Any, **kwargs: Any) -> Any:
        parsed.append(text)
        return real(text, *args, **kwargs)

    monkeypatch.setattr(values, "_document", counting)
    hops = count_thread_hops(monkeypatch)
    reader, gateway = ValuesReader(), FakeGateway(VALID)
    first = await delivery(gateway, read=reader).read()
    assert len(hops) == 1  # a new text is parsed off the event loop
    second = await delivery(gateway, read=reader).read()
    assert first.keys == second.keys == ManagedKeys("Sum up.", None, None, None)
    assert parsed == [VALID]
    assert len(hops) == 1
    gateway.text = VALID.replace("Sum up.", "Sum up!")
    assert (await delivery(gateway, read=reader).read()).keys.prompt == "Sum up!"
    assert len(hops) == 2  # a changed text is new again


async def test_a_refused_configmap_text_is_parsed_once_however_many_passes_read_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    parsed: list[str] = []
    real = values._document

    def counting(text: str, *args: Any, **kwargs: Any) -> Any:
        parsed.append(text)
        return real(text, *args, **kwargs)

    monkeypatch.setattr(values, "_document", counting)
    hops = count_thread_hops(monkeypatch)
    reader, gateway = ValuesReader(), FakeGateway(deep_flow_nesting(VALID, 6000))
    refusals = []
    for _ in range(3):
        with pytest.raises(InvalidValues, match="depth bound") as info:
            await delivery(gateway, read=reader).read()
        refusals.append(str(info.value))
    assert parsed == [gateway.text]
    assert len(hops) == 1  # the remembered refusal is raised again on the event loop, alike
    assert refusals[0].startswith("ConfigMap team-a/canopy-config key canopy-config.yaml: ")
    assert refusals == [refusals[0]] * 3


async def test_a_write_that_changed_the_text_rolls_without_reading_the_deployment_first() -> None:
    """No pod can run a text written a moment ago: the roll is patched unread (one read fewer per start, #20).
    Making sure of a roll for a text already there (``ensure_rolled``) still reads, and leaves a rolled
    Deployment alone."""
    gateway = FakeGateway(VALID)
    first = await delivery(gateway).write(DESIRED)
    assert (first.changed, first.rolled, gateway.annotation_reads) == (True, True, 0)
    assert gateway.annotation is not None
    again = await delivery(gateway).write(DESIRED, ensure_rolled=True)
    assert (again.changed, again.rolled, gateway.annotation_reads) == (False, False, 1)
    gateway.annotation = "an older roll"
    third = await delivery(gateway).write(DESIRED, ensure_rolled=True)
    assert (third.changed, third.rolled, gateway.annotation_reads) == (False, True, 2)
