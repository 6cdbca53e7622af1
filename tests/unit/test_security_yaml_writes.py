"""Finding 5 of #14 (rule 7): what the operator writes must load where it is read, as intended.

The backend loads the file with PyYAML ``safe_load``, Helm with ``sigs.k8s.io/yaml``, and the chart's schema
rejects partial sections. Each test first reproduced a file the old editor wrote (or a value it recorded) that
one of them rejects or reads otherwise; now the edit is quoted right, read right, or refused with
``InvalidValues``/``ValuesEditError`` naming the key, and nothing is written.
"""

from __future__ import annotations

import pytest
import yaml

from canopy_operator.core.values import (
    ManagedKeys,
    ValuesEditError,
    apply_managed,
    edit_values,
    read_managed,
    validate_values,
    verify_loaded,
)
from canopy_operator.delivery.base import InvalidValues
from tests.support.values_files import KEY, FakeGateway
from tests.support.values_files import configmap_delivery as delivery

FLOW = 'LLAMA_STACK_URL: "http://llama:8321"\nsummarize: {enabled: true, model: llama32, prompt: Sum up.}\n'
#: The chart's own chart/values-test.yaml: nothing but the required URL.
CHART_VALUES_TEST = 'LLAMA_STACK_URL: "http://llama-stack:8321"\n'
FOLDED = (
    'LLAMA_STACK_URL: "http://llama:8321"\n'
    "summarize:\n"
    "  enabled: true\n"
    "  model: llama32\n"
    "  prompt: >\n"
    "    Summarize the following text\n"
    "    in a clear manner.\n"
    "\n"
    "    Keep every number.\n"
)


@pytest.mark.parametrize(
    "prompt",
    ["Why?", "What is it about?", "a ? b", "Ends with:", "Ends with,", "x #", "x]", "x}", "a: b", "{", "?x", "-x"],
)
def test_a_prompt_in_a_flow_section_is_quoted_so_pyyaml_loads_it(prompt: str) -> None:
    out = apply_managed(FLOW, ManagedKeys(prompt, None, None, None))
    assert yaml.safe_load(out)["summarize"]["prompt"] == prompt
    assert read_managed(out).prompt == prompt


def test_a_challenger_ending_in_a_question_mark_is_written_into_a_flow_section_loadably() -> None:
    out = apply_managed(FLOW, ManagedKeys("Sum up.", "Can you be brief?", True, True))
    assert yaml.safe_load(out)["summarize"] == {
        "enabled": True,
        "model": "llama32",
        "prompt": "Sum up.",
        "prompt_b": "Can you be brief?",
    }
    assert validate_values(out) == []


def test_a_folded_prompt_is_read_exactly_as_pyyaml_reads_it() -> None:
    expected = "Summarize the following text in a clear manner.\nKeep every number.\n"
    assert yaml.safe_load(FOLDED)["summarize"]["prompt"] == expected
    assert read_managed(FOLDED).prompt == expected  # no "\x07" fold markers in the recorded champion


def test_a_folded_prompt_survives_an_edit_of_the_challenger() -> None:
    out = apply_managed(FOLDED, ManagedKeys(read_managed(FOLDED).prompt, "Be brief.", True, True))
    loaded = yaml.safe_load(out)
    assert loaded["summarize"]["prompt"] == yaml.safe_load(FOLDED)["summarize"]["prompt"]
    assert "\x07" not in out
    assert out.startswith(FOLDED)  # the folded block itself is untouched


def test_the_charts_values_test_yaml_plus_a_champion_is_refused_naming_enabled_and_model() -> None:
    desired = ManagedKeys("Summarize clearly.", "Be brief.", True, True)
    with pytest.raises(ValuesEditError) as info:
        edit_values(CHART_VALUES_TEST, desired)
    message = str(info.value)
    assert message.startswith("the edited file would break the chart: summarize.enabled: required")
    assert "add summarize.enabled and summarize.model to the values file" in message


async def test_the_configmap_write_of_a_partial_summarize_section_is_invalid_values_and_writes_nothing() -> None:
    gateway = FakeGateway(CHART_VALUES_TEST)
    with pytest.raises(InvalidValues) as info:
        await delivery(gateway).write(ManagedKeys("Summarize clearly.", "Be brief.", True, True))
    assert str(info.value).startswith(
        f"ConfigMap team-a/canopy-config key {KEY}: the edited file would break the chart"
    )
    assert "summarize.model" in str(info.value)
    assert gateway.writes == []


def test_a_section_with_enabled_and_model_takes_the_prompts() -> None:
    text = CHART_VALUES_TEST + "summarize:\n  enabled: true\n  model: llama32\n"
    out = edit_values(text, ManagedKeys("Summarize clearly.", "Be brief.", True, True))
    assert yaml.safe_load(out) == {
        "LLAMA_STACK_URL": "http://llama-stack:8321",
        "summarize": {"enabled": True, "model": "llama32", "prompt": "Summarize clearly.", "prompt_b": "Be brief."},
        "feedback": {"enabled": True},
        "ab_testing": {"enabled": True},
    }


@pytest.mark.parametrize(
    ("section", "problem"),
    [
        ("ab_testing: ~\n", "ab_testing: must be a mapping holding 'enabled', found null"),
        ("ab_testing: {}\n", "ab_testing.enabled: required"),
        ("summarize: ~\n", "summarize: must be a mapping holding 'enabled', found null"),
        ("summarize:\n  model: m\n", "summarize.enabled: required"),
        ("student-assistant:\n  model: m\n", "student-assistant.enabled: required"),
        ("shields:\n", "shields: must be a mapping holding 'enabled', found null"),
    ],
)
def test_every_feature_section_present_needs_enabled(section: str, problem: str) -> None:
    problems = validate_values(CHART_VALUES_TEST + section)
    assert any(p.startswith(problem) for p in problems), problems


def test_keys_a_merge_brings_into_a_section_are_checked_like_written_ones() -> None:
    text = CHART_VALUES_TEST + "base: &b {enabled: true, store: memory}\nfeedback:\n  <<: *b\n"
    assert "feedback.store: unknown key (the chart allows only enabled)" in validate_values(text)


def test_a_write_is_refused_when_pyyaml_would_read_a_managed_flag_otherwise_than_helm() -> None:
    text = FLOW + "feedback:\n  enabled: y\n"  # Helm (YAML 1.1, go-yaml): true; PyYAML: the string "y"
    assert read_managed(text).feedback_enabled is True
    with pytest.raises(
        ValuesEditError, match=r"loads with PyYAML \(the backend's loader\) to other values of feedback"
    ):
        apply_managed(text, ManagedKeys("New prompt.", None, True, None))


def test_the_loader_check_refuses_a_change_outside_the_managed_keys() -> None:
    after = FLOW.replace("llama32", "other") + "feedback: {enabled: true}\n"
    with pytest.raises(ValuesEditError, match="would change values outside the managed keys as PyYAML loads them"):
        verify_loaded(FLOW, after, ManagedKeys("Sum up.", None, True, None))


def test_the_loader_check_tells_an_integer_from_a_boolean_and_accepts_nan() -> None:
    before = FLOW + "a: 1\nb: .nan\n"
    verify_loaded(before, before + "feedback: {enabled: true}\n", ManagedKeys("Sum up.", None, True, None))
    with pytest.raises(ValuesEditError, match="outside the managed keys"):
        verify_loaded(before, FLOW + "a: true\nb: .nan\n", ManagedKeys("Sum up.", None, None, None))
