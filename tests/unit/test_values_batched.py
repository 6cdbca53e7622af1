"""The sections a start changes are edited at once, on one parse (issue #20): the text written is byte for byte
the one the section-at-a-time editor writes, for every file and every change, and a start parses two texts
(the original and the result) instead of four.

The property runs both editors over the adversarial values files and prompts of the security property
(``test_security_yaml_property``) and compares their texts and their refusals."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from canopy_operator.core import values
from canopy_operator.core.values import GEN1, GEN2, LIMITS, ManagedKeys, ValuesEditError, read_managed
from tests.support.kubelet import RENDERED_VALUES
from tests.support.values_files import count_parses
from tests.unit.test_security_yaml_property import FILES, flags, prompts
from tests.unit.test_values_gen2 import BARE, CONFIG, PROMOTED, START

CHALLENGER = "Provide a brief, concise summary:\n"


def one_at_a_time(text: str, desired: ManagedKeys, layout: values.ValuesLayout = GEN1) -> str:
    before = values._parse(text, LIMITS)
    if values._read_root(before.root, layout) == desired:
        return text
    return values._one_section_at_a_time(text, before, desired, layout, LIMITS)[0]


def outcome(edit: object, *args: object) -> str:
    try:
        return str(edit(*args))  # type: ignore[operator]
    except ValuesEditError as exc:
        return f"refused: {exc}"


@settings(max_examples=400, deadline=timedelta(seconds=2), suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(sorted(FILES)),
    prompt=st.one_of(st.none(), prompts),
    prompt_b=st.one_of(st.none(), prompts),
    feedback=flags,
    ab=flags,
)
def test_the_batched_edit_writes_what_the_section_at_a_time_edit_writes(
    name: str, prompt: str | None, prompt_b: str | None, feedback: bool | None, ab: bool | None
) -> None:
    original = FILES[name]
    desired = ManagedKeys(prompt, prompt_b, feedback, ab)
    assert outcome(values.apply_managed, original, desired) == outcome(one_at_a_time, original, desired)


@pytest.mark.parametrize("name", sorted(FILES))
@pytest.mark.parametrize(
    "change",
    ["start", "promote", "conclude", "all-off"],
)
def test_the_lifecycle_changes_write_the_same_text_both_ways(name: str, change: str) -> None:
    original = FILES[name]
    try:
        current = read_managed(original)
    except ValuesEditError:
        pytest.skip("not a file the operator reads")
    desired = {
        "start": ManagedKeys(current.prompt, CHALLENGER, True, True),
        "promote": ManagedKeys(CHALLENGER, None, True, False),
        "conclude": ManagedKeys(current.prompt, None, True, False),
        "all-off": ManagedKeys(current.prompt, None, False, False),
    }[change]
    assert outcome(values.apply_managed, original, desired) == outcome(one_at_a_time, original, desired)


@pytest.mark.parametrize("text", [CONFIG, BARE], ids=["course-config", "bare"])
@pytest.mark.parametrize(
    "desired",
    [START, PROMOTED, ManagedKeys("7", None, False, False), ManagedKeys("champion", "9", True, False)],
    ids=str,
)
def test_the_gen2_layout_writes_the_same_text_both_ways(text: str, desired: ManagedKeys) -> None:
    def batched(original: str, keys: ManagedKeys) -> str:
        return values.apply_managed(original, keys, layout=GEN2)

    def sequential(original: str, keys: ManagedKeys) -> str:
        return one_at_a_time(original, keys, GEN2)

    assert outcome(batched, text, desired) == outcome(sequential, text, desired)


@pytest.mark.parametrize(
    ("text", "desired"),
    [
        # feedback's block gives the step (2); removing it leaves summarize's (4) for the section inserted
        ("feedback:\n  enabled: true\nsummarize:\n    prompt: x\n", ManagedKeys("x", None, None, True)),
        (
            "summarize:\n    prompt: x\n    prompt_b: y\nab_testing:\n  enabled: true\n",
            ManagedKeys("x", None, True, None),
        ),
    ],
    ids=["removed-feedback-then-ab", "removed-challenger-and-ab"],
)
def test_removals_are_edited_one_at_a_time(text: str, desired: ManagedKeys) -> None:
    assert outcome(values.apply_managed, text, desired) == outcome(one_at_a_time, text, desired)


def test_a_start_parses_the_original_and_the_result_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """The chart's values as a start edits them: three sections (prompt_b, feedback, ab_testing), two parses."""
    current = read_managed(RENDERED_VALUES)
    seen = count_parses(monkeypatch)
    out = values.edit_values(RENDERED_VALUES, ManagedKeys(current.prompt, CHALLENGER, True, True))
    whole = [n for n in seen if n > 200]  # whole texts, not the editor's checks of one new scalar
    assert whole == [len(RENDERED_VALUES), len(out)]
    assert out == one_at_a_time(RENDERED_VALUES, ManagedKeys(current.prompt, CHALLENGER, True, True))
