"""A ValuesReader remembers the values of a text it has read (each reconcile pass reads the same ConfigMap)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from canopy_operator.core import values
from canopy_operator.core.values import ManagedKeys, ValuesEditError, ValuesReader


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
