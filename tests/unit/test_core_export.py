"""The export format: rendered as the backend's PyYAML dump, parsed back strictly."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from canopy_operator.core.export import parse_export, render_export

EMPTY = """\
name: feedback_eval_tests
description: Tests generated from negative user feedback on summarization.
endpoint: /summarize
scoring_params:
  llm-as-judge::base:
    judge_model: llama32
    prompt_template: judge_prompt.txt
    type: llm_as_judge
    judge_score_regexes:
    - 'Answer: (A|B|C|D|E)'
  basic::subset_of: null
tests: []
"""


def test_render_without_negatives_is_the_documented_document() -> None:
    assert render_export([]) == EMPTY


def test_render_lists_prompts_in_order_with_empty_expected_results() -> None:
    text = render_export(["Ein Text über Bäume", "yes"])

    assert text == EMPTY.replace(
        "tests: []\n",
        "tests:\n- prompt: Ein Text über Bäume\n  expected_result: ''\n- prompt: 'yes'\n  expected_result: ''\n",
    )


@given(st.lists(st.text(st.characters(exclude_characters="\x85")), max_size=5))
def test_parse_returns_exactly_the_rendered_prompts(prompts: list[str]) -> None:
    assert parse_export(render_export(prompts)) == prompts


def test_next_line_character_does_not_survive_the_backends_dump() -> None:
    # PyYAML writes U+0085 raw inside single quotes, where a reader folds it as a line break: the backend's
    # export (and any suite built from it) carries a space instead.
    assert parse_export(render_export(["a\x85b"])) == ["a b"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tests: [\n", "not valid YAML"),
        ("- a list\n", "must be a mapping"),
        (EMPTY.replace("endpoint: /summarize", "endpoint: /summarization"), "'endpoint' must be '/summarize'"),
        (EMPTY.replace("name: feedback_eval_tests\n", ""), "keys must be"),
        (EMPTY.replace("tests: []", "tests: {}"), "'tests' must be a list"),
        (
            EMPTY.replace("tests: []", "tests:\n- prompt: 3\n  expected_result: ''"),
            r"tests\[0\]\.prompt must be a string",
        ),
        (EMPTY.replace("tests: []", "tests:\n- prompt: x\n  expected_result: a summary"), "must be empty"),
        (EMPTY.replace("tests: []", "tests:\n- prompt: x"), "keys prompt, expected_result"),
        (EMPTY.replace("judge_model: llama32", "judge_model: gpt"), "'scoring_params' must be"),
    ],
)
def test_parse_rejects_anything_but_the_backend_shape(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_export(text)
