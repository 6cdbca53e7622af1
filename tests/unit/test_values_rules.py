"""Schema checks, the conflict rule, the managed hash and the round-trip property of the values editor."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from canopy_operator.core.values import (
    ManagedKeys,
    ValuesConflict,
    apply_managed,
    check_conflict,
    managed_hash,
    read_managed,
    validate_values,
)
from tests.support.values_files import REALISTIC

VALID = "LLAMA_STACK_URL: http://llama:8321\nsummarize:\n  enabled: true\n  model: llama32\n"


def test_validate_accepts_a_realistic_file() -> None:
    assert validate_values(REALISTIC) == []


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("  temprature: 0.3\n", "summarize.temprature: unknown key"),
        ("feedback:\n  enabled: true\n  store: memory\n", "feedback.store: unknown key"),
        ("ab_testing:\n  enabled: 'true'\n", "ab_testing.enabled: must be a boolean"),
        ("feedback:\n  comment: x\n", "feedback.enabled: required"),
        ("feedback:\n", "feedback: must be a mapping"),
        ("  prompt: [a, b]\n", "summarize.prompt: must be a string"),
    ],
)
def test_validate_names_the_key_path_of_a_schema_violation(extra: str, message: str) -> None:
    problems = validate_values(VALID + extra)
    assert any(p.startswith(message) for p in problems), problems


def test_validate_requires_llama_stack_url() -> None:
    assert validate_values("summarize:\n  enabled: false\n") == ["LLAMA_STACK_URL: required at the top level"]


def test_validate_requires_a_model_when_summarize_is_enabled() -> None:
    problems = validate_values("LLAMA_STACK_URL: u\nsummarize:\n  enabled: true\n")
    assert problems == ["summarize.model: required when summarize.enabled is true"]


def test_validate_reports_broken_yaml_with_its_line() -> None:
    (problem,) = validate_values("LLAMA_STACK_URL: u\nsummarize: [\n")
    assert "not valid YAML" in problem
    assert "line" in problem


def test_validate_reports_a_duplicate_key() -> None:
    assert validate_values(VALID + "  model: other\n") == ["summarize.model: duplicate key"]


OURS = ManagedKeys("champion", "challenger", True, True)


def test_check_conflict_accepts_a_file_still_as_the_operator_left_it() -> None:
    check_conflict(OURS, OURS, ManagedKeys("challenger", None, True, False))


def test_check_conflict_accepts_a_file_already_as_desired() -> None:
    desired = ManagedKeys("challenger", None, True, False)
    check_conflict(desired, OURS, desired)


def test_check_conflict_accepts_the_original_before_the_first_write() -> None:
    check_conflict(ManagedKeys("human", None, None, None), None, OURS)


def test_check_conflict_names_a_key_a_human_changed_since_the_last_write() -> None:
    human = ManagedKeys("champion", "a human's challenger", True, True)
    with pytest.raises(ValuesConflict, match=r"^summarize\.prompt_b changed outside the operator") as info:
        check_conflict(human, OURS, ManagedKeys("champion", "next challenger", True, True))
    assert info.value.paths == ["summarize.prompt_b"]


def test_check_conflict_treats_a_human_revert_to_the_original_as_a_conflict() -> None:
    reverted = ManagedKeys("champion", None, True, False)
    with pytest.raises(ValuesConflict) as info:
        check_conflict(reverted, OURS, ManagedKeys("champion", "next challenger", True, True))
    assert info.value.paths == ["summarize.prompt_b", "ab_testing.enabled"]


def test_check_conflict_works_from_the_hash_the_status_keeps() -> None:
    nxt = ManagedKeys("champion", "next challenger", True, True)
    check_conflict(OURS, managed_hash(OURS), nxt)
    human = ManagedKeys("champion", "a human's challenger", True, False)
    with pytest.raises(ValuesConflict) as info:
        check_conflict(human, managed_hash(OURS), nxt)
    assert info.value.paths == ["summarize.prompt_b", "ab_testing.enabled"]


def test_managed_hash_differs_when_any_key_differs_and_ignores_empty_prompt_b() -> None:
    base = managed_hash(OURS)
    assert managed_hash(ManagedKeys("champion", "challenger", True, True)) == base
    assert managed_hash(ManagedKeys("champion", "challenger", True, None)) != base
    assert managed_hash(ManagedKeys("champion", "", True, None)) == managed_hash(
        ManagedKeys("champion", None, True, None)
    )
    assert len(base) == 64


prompts = st.one_of(
    st.none(),
    st.text(max_size=60),
    st.text(alphabet=st.sampled_from(" \t\n:#'\"-|>&*!%@`{}[],?ÄéΩ語🙂\\"), max_size=40),
    st.lists(st.text(max_size=12), max_size=4).map("\n".join).map(lambda s: s + "\n"),
)
flags = st.one_of(st.none(), st.booleans())


@settings(max_examples=100, deadline=None)
@given(prompt=prompts, prompt_b=prompts, feedback=flags, ab=flags)
def test_apply_round_trips_arbitrary_prompt_texts(
    prompt: str | None, prompt_b: str | None, feedback: bool | None, ab: bool | None
) -> None:
    desired = ManagedKeys(prompt, prompt_b, feedback, ab)
    out = apply_managed(REALISTIC, desired)
    assert read_managed(out) == desired
    assert out.startswith(REALISTIC.split("summarize:\n")[0])
    assert out.endswith(REALISTIC.split("ab_testing:\n  enabled: true\n")[1])
    assert apply_managed(out, desired) is out
