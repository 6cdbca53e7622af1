"""A ValuesReader remembers the values of a text it has read (each reconcile pass reads the same ConfigMap)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from canopy_operator.core import values
from canopy_operator.core.values import ManagedKeys, ValuesEditError, ValuesReader
from canopy_operator.delivery import configmap
from canopy_operator.delivery.configmap import ConfigMapDelivery
from tests.support.kubelet import RENDERED_VALUES
from tests.support.values_files import FakeGateway, configmap_delivery, count_parses


def _text(prompt: str = "Summarize") -> str:
    return f"# {uuid.uuid4()}\nsummarize:\n  prompt: {prompt}\nfeedback:\n  enabled: true\n"


def _count_parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    parsed: list[str] = []
    real = values._document

    def counting(text: str, *args: Any, **kwargs: Any) -> Any:
        parsed.append(text)
        return real(text, *args, **kwargs)

    monkeypatch.setattr(values, "_document", counting)
    return parsed


def test_read_managed_parses_a_repeated_text_once(monkeypatch: pytest.MonkeyPatch) -> None:
    read_managed = ValuesReader()
    parsed = _count_parses(monkeypatch)
    text = _text()
    first, second = read_managed(text), read_managed(text)
    assert first == second == ManagedKeys("Summarize", None, True, None)
    assert parsed == [text]


def test_read_managed_reads_a_changed_text_again(monkeypatch: pytest.MonkeyPatch) -> None:
    read_managed = ValuesReader()
    parsed = _count_parses(monkeypatch)
    assert read_managed(_text("Old")).prompt == "Old"
    assert read_managed(_text("New")).prompt == "New"
    assert len(parsed) == 2


def test_read_managed_forgets_the_oldest_text_beyond_its_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    read_managed = ValuesReader(size=2)
    parsed = _count_parses(monkeypatch)
    texts = [_text(f"P{i}") for i in range(3)]
    for text in texts:
        read_managed(text)
    assert len(read_managed.seen) == 2
    assert read_managed(texts[0]).prompt == "P0"
    assert parsed == [*texts, texts[0]]


def test_read_managed_rejects_invalid_yaml_every_time() -> None:
    read_managed = ValuesReader()
    for _ in range(2):
        with pytest.raises(ValuesEditError, match="not valid YAML"):
            read_managed("summarize: [unclosed\n")


async def test_a_start_reads_and_edits_the_text_it_wrote_without_parsing_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """The ConfigMap delivery notes what its editor made: the next pass's read and its check that the config is
    still as written (``write(..., ensure_rolled=True)``) neither parse nor edit that text again (issue #20)."""

    reader = ValuesReader()
    gateway = FakeGateway(f"# {uuid.uuid4()}\n{RENDERED_VALUES}")

    def delivery() -> ConfigMapDelivery:
        return configmap_delivery(gateway, read=reader)

    current = (await delivery().read()).keys
    desired = ManagedKeys(current.prompt, "Provide a brief summary:\n", True, True)
    result = await delivery().write(desired)
    assert result.changed
    parsed = count_parses(monkeypatch)
    edits: list[str] = []
    real_edit = configmap._edit

    def counting_edit(text: str, *args: Any) -> str:
        edits.append(text)
        return real_edit(text, *args)

    monkeypatch.setattr(configmap, "_edit", counting_edit)
    assert (await delivery().read()).keys == desired
    again = await delivery().write(desired, ensure_rolled=True)
    assert not again.changed
    assert again.revision == result.revision
    assert gateway.writes == [gateway.text]  # written once
    assert parsed == []
    assert edits == []
    other = ManagedKeys(current.prompt, None, True, False)  # another change of that text is edited as always
    await delivery().write(other)
    assert edits == [gateway.writes[0]]
    assert len(parsed) >= 2  # the text it started from, and the result


def test_a_text_noted_as_written_reads_as_its_keys_and_is_bounded() -> None:
    reader = ValuesReader(size=2)
    keys = ManagedKeys("a", "b", True, True)
    texts = [_text(f"P{i}") for i in range(3)]
    for text in texts:
        reader.note_written(text, keys)
    assert reader.written_for(texts[0]) is None  # the oldest was dropped
    assert reader.written_for(texts[2]) == keys
    assert reader.remembered(texts[2]) == keys
    assert reader.written_for(texts[2], layout=values.GEN2) is None  # per layout
    assert len(reader.seen) == 2
    assert len(reader.written) <= 2  # digests only, within the same bound
    reader(_text("read, not written"))  # a text only read pushes a written one out of the cache
    assert sum(reader.written_for(t) is not None for t in texts) <= 1
