"""A write parses each text once (issue #20, "CPU per pass"): the original and the edited values text are each
scanned and parsed by PyYAML once, and Helm's view (positioned nodes) and the backend's (``yaml.safe_load``'s
objects) are both built from that one parse. It was five parses for a one-key change (the original twice, the
edited text three times: the editor's check, the backend's loader, the chart's schema)."""

from __future__ import annotations

import math
from typing import Any

import pytest
import yaml

from canopy_operator.core.values import GEN2, ManagedKeys, ValuesEditError, edit_values, read_managed
from canopy_operator.yamlsplice.bounded import YamlSyntaxError, events, load_events, safe_load
from tests.support.values_files import REALISTIC, count_parses
from tests.unit.test_values_gen2 import CONFIG, START

CHAMPION = "Summarize the following text in a clear and detailed manner:\n"
CHALLENGER = "Provide a brief, concise summary:\nkeep it under three sentences."


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the texts PyYAML's scanner and parser read (every bounded parse makes one loader)."""
    return count_parses(monkeypatch)


def test_a_one_key_write_parses_the_original_and_the_edited_text_once_each(parses: list[int]) -> None:
    current = read_managed(REALISTIC)
    parses.clear()
    out = edit_values(REALISTIC, ManagedKeys(current.prompt, "Summarize in one line.", True, True))
    texts = [n for n in parses if n in (len(REALISTIC), len(out))]  # not the editor's checks of one new scalar
    assert texts == [len(REALISTIC), len(out)]
    assert read_managed(out).prompt_b == "Summarize in one line."


def test_an_unchanged_text_is_parsed_once(parses: list[int]) -> None:
    assert edit_values(REALISTIC, read_managed(REALISTIC)) == REALISTIC
    assert len(parses) == 2  # read_managed, then the edit's one parse


def test_sections_whose_edits_do_not_meet_are_edited_on_one_parse(parses: list[int]) -> None:
    current = read_managed(REALISTIC)
    parses.clear()
    desired = ManagedKeys(current.prompt, "Summarize in one line.", True, True)  # a start: three sections set
    out = edit_values(REALISTIC, desired)
    whole = [n for n in parses if n > 200]  # whole texts, not the editor's checks of one new scalar
    assert whole == [len(REALISTIC), len(out)]  # the original and the result (test_values_batched.py)
    assert read_managed(out) == desired


def test_a_removal_is_edited_one_section_at_a_time(parses: list[int]) -> None:
    current = read_managed(REALISTIC)
    parses.clear()
    desired = ManagedKeys(current.prompt, None, True, False)  # prompt_b removed, ab_testing off: two sections
    out = edit_values(REALISTIC, desired)
    whole = [n for n in parses if n > 200]
    assert whole[0] == len(REALISTIC)
    assert whole[-1] == len(out)
    assert len(whole) == 3  # the original, the text after the first section's edit, the result
    assert read_managed(out) == desired


def test_two_keys_of_one_section_cost_one_parse_of_each_intermediate_result(parses: list[int]) -> None:
    """Generation 2 keeps the challenger and the A/B switch in one section: edited one after the other."""
    text = CONFIG
    parses.clear()
    out = edit_values(text, START, layout=GEN2)
    whole = [n for n in parses if n > 200]
    assert whole[0] == len(text)
    assert whole[-1] == len(out)
    assert len(whole) == 4  # the original, after feedback, after ab_testing.enabled, after the challenger
    assert read_managed(out, layout=GEN2) == START


LOADS = [
    "a: 1\nb: [1, 2.5, .inf, -.nan, null, ~, true, no, 0x1f, 0o17, 1_000]\n",
    "base: &b {x: 1, y: two}\nderived:\n  <<: *b\n  y: 3\nlist: [*b, *b]\n",
    "when: 2001-12-14t21:59:43.10-05:00\nday: 2002-12-14\nbin: !!binary aGVsbG8=\n",
    "s: !!set {a, b}\no: !!omap [{a: 1}, {b: 2}]\np: !!pairs [{a: 1}, {a: 2}]\n",
    'q: "quoted\\ttext"\nblock: |\n  line one\n  line two\nfolded: >-\n  one\n  two\n',
    "",
    "# only a comment\n",
    "--- plain scalar\n",
    "x: !!str 123\ny: !!int '7'\nz: !!float 1\n",
    REALISTIC,
]


@pytest.mark.parametrize("text", LOADS)
def test_loading_the_parsed_events_gives_what_safe_load_gives(text: str) -> None:
    assert _same(load_events(events(text)), safe_load(text))
    assert _same(load_events(events(text)), yaml.safe_load(text))


@pytest.mark.parametrize(
    "text",
    ["a: !!python/object:os.system {}\n", "a: 1\n---\nb: 2\n", "n: " + "9" * 5000 + "\n", "x: !!int nope\n"],
)
def test_loading_the_parsed_events_refuses_what_safe_load_refuses(text: str) -> None:
    with pytest.raises(YamlSyntaxError) as direct:
        safe_load(text)
    with pytest.raises(YamlSyntaxError) as replayed:
        load_events(events(text))
    assert str(replayed.value) == str(direct.value)


def test_an_edit_whose_text_the_backend_cannot_load_is_still_refused() -> None:
    text = "summarize:\n  enabled: true\n  model: m\n  prompt: a\nbig: " + "9" * 5000 + "\n"
    with pytest.raises(ValuesEditError, match="does not load with PyYAML"):
        edit_values(text, ManagedKeys("a", "b", True, True))


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b
