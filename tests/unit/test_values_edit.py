"""Editing the managed keys of a human-maintained values file: only the managed lines may change."""

from __future__ import annotations

import pytest

from canopy_operator.core.values import ManagedKeys, ValuesEditError, apply_managed, read_managed
from tests.support.values_files import REALISTIC, changed_lines

CHAMPION = "Summarize the following text in a clear and detailed manner:\n"
CHALLENGER = "Provide a brief, concise summary:\nkeep it under three sentences."


def test_read_managed_returns_the_four_keys_of_a_commented_file() -> None:
    assert read_managed(REALISTIC) == ManagedKeys(CHAMPION, CHALLENGER, True, True)


def test_apply_returns_the_identical_string_when_already_desired() -> None:
    desired = ManagedKeys(CHAMPION, CHALLENGER, True, True)
    assert apply_managed(REALISTIC, desired) is REALISTIC


def test_apply_changes_only_the_challenger_lines_when_a_new_challenger_starts() -> None:
    out = apply_managed(REALISTIC, ManagedKeys(CHAMPION, "Summarize in one line.", True, True))
    assert changed_lines(REALISTIC, out) == (
        [
            "  prompt_b: |-   # challenger\n",
            "    Provide a brief, concise summary:\n",
            "    keep it under three sentences.\n",
        ],
        ["  prompt_b: Summarize in one line.   # challenger\n"],
    )


def test_apply_writes_a_multi_line_challenger_as_a_literal_block() -> None:
    out = apply_managed(REALISTIC, ManagedKeys(CHAMPION, "Be brief:\n\n  - bullet one\n", True, True))
    assert changed_lines(REALISTIC, out)[1] == [
        "  prompt_b: |   # challenger\n",
        "    Be brief:\n",
        "\n",
        "      - bullet one\n",
    ]


def test_apply_promotes_the_challenger_and_removes_prompt_b() -> None:
    out = apply_managed(REALISTIC, ManagedKeys(CHALLENGER, None, True, False))
    removed, added = changed_lines(REALISTIC, out)
    assert added == [
        "  prompt: |-\n",
        "    Provide a brief, concise summary:\n",
        "    keep it under three sentences.\n",
        "  enabled: false\n",
    ]
    assert "  prompt_b: |-   # challenger\n" in removed
    assert "  # The challenger (A/B test running since Monday).\n" in out  # human comments are not ours to drop
    assert read_managed(out) == ManagedKeys(CHALLENGER, None, True, False)


def test_apply_keeps_everything_outside_the_managed_keys_byte_for_byte() -> None:
    out = apply_managed(REALISTIC, ManagedKeys("short", "other", False, False))
    head, tail = REALISTIC.split("summarize:\n")[0], REALISTIC.split("information-search:\n")[1]
    assert out.startswith(head + "summarize:\n  enabled: true\n  model: &model llama32\n")
    assert out.endswith("information-search:\n" + tail)
    assert "  enabled: false   # thumbs up/down in the UI\n" in out


def test_apply_is_idempotent_when_run_twice() -> None:
    desired = ManagedKeys("A:\n  b\n", "c # d", None, False)
    once = apply_managed(REALISTIC, desired)
    assert apply_managed(once, desired) is once


def test_apply_adds_missing_sections_with_only_enabled() -> None:
    text = "LLAMA_STACK_URL: http://x\nsummarize:\n  enabled: true\n  model: m\n"
    out = apply_managed(text, ManagedKeys(None, None, True, True))
    assert out == text + "feedback:\n  enabled: true\nab_testing:\n  enabled: true\n"


def test_apply_removes_a_section_and_its_blank_separator_when_the_key_goes_absent() -> None:
    text = "a: 1\n\nfeedback:\n  enabled: true  # x\n\nb: 2\n"
    assert apply_managed(text, ManagedKeys(None, None, None, None)) == "a: 1\n\nb: 2\n"


def test_apply_inserts_prompt_b_right_after_prompt() -> None:
    text = "summarize:\n  prompt: p  # champion\n  model: m\n"
    out = apply_managed(text, ManagedKeys("p", "q", None, None))
    assert out == "summarize:\n  prompt: p  # champion\n  prompt_b: q\n  model: m\n"


def test_apply_treats_an_empty_prompt_b_as_absent() -> None:
    text = 'summarize:\n  prompt: p\n  prompt_b: ""\n'
    assert read_managed(text).prompt_b is None
    assert apply_managed(text, ManagedKeys("p", None, None, None)) is text


def test_apply_keeps_the_anchor_of_a_replaced_value() -> None:
    text = "summarize:\n  prompt: &champ old  # c\n"
    out = apply_managed(text, ManagedKeys("new", None, None, None))
    assert out == "summarize:\n  prompt: &champ new  # c\n"


def test_apply_refuses_a_managed_value_whose_anchor_other_keys_use() -> None:
    text = "summarize:\n  prompt: &champ old\nother:\n  greeting: *champ\n"
    with pytest.raises(ValuesEditError, match=r"summarize.prompt carries anchor &champ"):
        apply_managed(text, ManagedKeys("new", None, None, None))


def test_apply_replaces_an_alias_without_touching_its_anchor() -> None:
    text = "x: &p base text\nsummarize:\n  prompt: *p\n"
    out = apply_managed(text, ManagedKeys("new", None, None, None))
    assert out == "x: &p base text\nsummarize:\n  prompt: new\n"


def test_apply_follows_the_file_indentation_of_four_spaces() -> None:
    text = "summarize:\n    enabled: true\n    model: m\n"
    out = apply_managed(text, ManagedKeys("line one\nline two\n", None, True, None))
    assert out == (
        "summarize:\n    enabled: true\n    model: m\n    prompt: |\n        line one\n        line two\n"
        "feedback:\n    enabled: true\n"
    )


def test_apply_keeps_windows_line_endings() -> None:
    text = "summarize:\r\n  prompt: a  # c\r\n  model: m\r\n"
    out = apply_managed(text, ManagedKeys("b\nc", None, None, None))
    assert out == "summarize:\r\n  prompt: |-  # c\r\n    b\r\n    c\r\n  model: m\r\n"


def test_apply_edits_flow_mappings_in_place() -> None:
    text = "LLAMA_STACK_URL: u\nsummarize: {model: m, prompt: 'a'}\nfeedback: {enabled: false}\n"
    out = apply_managed(text, ManagedKeys("x\ny", "z", True, None))
    assert out == 'LLAMA_STACK_URL: u\nsummarize: {model: m, prompt: "x\\ny", prompt_b: z}\nfeedback: {enabled: true}\n'


def test_apply_fills_an_empty_feedback_section() -> None:
    text = "feedback:   # todo\nab_testing: ~\n"
    out = apply_managed(text, ManagedKeys(None, None, True, False))
    assert out == "feedback:   # todo\n  enabled: true\nab_testing:\n  enabled: false\n"


def test_apply_writes_into_an_empty_document_before_the_end_marker() -> None:
    out = apply_managed("---\n# nothing yet\n...\n", ManagedKeys("p", None, False, None))
    assert out == "---\n# nothing yet\nsummarize:\n  prompt: p\nfeedback:\n  enabled: false\n...\n"


def test_apply_quotes_single_line_prompts_that_yaml_would_misread() -> None:
    for text, rendered in [
        ("yes", "'yes'"),
        ("42", "'42'"),
        ("Text: here", "'Text: here'"),
        ("# not a comment", "'# not a comment'"),
        (" leading space", "' leading space'"),
        ("it's", "it's"),
        ("tab\there", '"tab\\there"'),
    ]:
        out = apply_managed("summarize:\n  prompt: x\n", ManagedKeys(text, None, None, None))
        assert out == f"summarize:\n  prompt: {rendered}\n"
        assert read_managed(out).prompt == text


def test_apply_quotes_a_prompt_ending_in_blank_lines_instead_of_keep_chomping() -> None:
    out = apply_managed("summarize:\n  model: m\n\nfeedback: {enabled: true}\n", ManagedKeys("a\n\n", None, True, None))
    assert out == 'summarize:\n  model: m\n  prompt: "a\\n\\n"\n\nfeedback: {enabled: true}\n'
    assert read_managed(out).prompt == "a\n\n"


def test_apply_refuses_a_file_with_two_documents() -> None:
    with pytest.raises(ValuesEditError, match="2 YAML documents"):
        apply_managed("a: 1\n---\nb: 2\n", ManagedKeys("p", None, None, None))


def test_apply_refuses_a_summarize_section_that_is_a_list() -> None:
    with pytest.raises(ValuesEditError, match="summarize: expected a mapping"):
        apply_managed("summarize:\n- a\n", ManagedKeys("p", None, None, None))


def test_apply_hides_a_merged_prompt_b_with_an_explicit_empty_value() -> None:
    text = "base: &b\n  prompt_b: old\nsummarize:\n  <<: *b\n  prompt: p\n"
    out = apply_managed(text, ManagedKeys("p", None, None, None))
    assert out == text + "  prompt_b: ''\n"
    assert read_managed(out).prompt_b is None
