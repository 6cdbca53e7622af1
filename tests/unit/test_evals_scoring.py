"""Loading suites and the scorers' definitions."""

from __future__ import annotations

from pathlib import Path

import pytest

from canopy_operator.core.evaluation.template import JUDGE_TEMPLATE
from canopy_operator.core.export import render_export
from canopy_operator.evals.course import GradeRegexError, TemplateError, parse_grade, render_judge_prompt, subset_of
from canopy_operator.evals.scorers import parse_pairwise, render_pairwise_prompt
from canopy_operator.evals.suites import (
    EvalCase,
    SuiteError,
    load_suite_file,
    load_suites,
    parse_suite,
)
from tests.support.fake_judge import pairwise_answers

SUITE_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "suites" / "summarize"


# ---- suites ------------------------------------------------------------------------------------------------


def test_export_loads_as_a_suite_with_the_template_shipped_beside_it(tmp_path: Path) -> None:
    (tmp_path / "judge_prompt.txt").write_text(JUDGE_TEMPLATE, encoding="utf-8")
    text = render_export(["first input", "zweite Eingabe: ü"])
    suite = parse_suite(text, base_dir=tmp_path, source="export.yaml")
    assert [case.prompt for case in suite.tests] == ["first input", "zweite Eingabe: ü"]
    assert all(case.expected_result == "" for case in suite.tests)
    assert (suite.name, suite.endpoint, suite.subset_of) == ("feedback_eval_tests", "/summarize", True)
    assert suite.judge is not None
    assert suite.judge.judge_model == "llama32"
    assert suite.judge.score_regexes == ("Answer: (A|B|C|D|E)",)
    assert suite.judge.prompt_template == JUDGE_TEMPLATE
    assert suite.errors == ()


def test_export_without_its_template_names_the_missing_file_and_still_scores_subset_of(tmp_path: Path) -> None:
    suite = parse_suite(render_export(["x"]), base_dir=tmp_path, source="export.yaml")
    assert suite.judge is None
    assert suite.subset_of
    assert suite.errors == (
        f"export.yaml: llm-as-judge::base: prompt_template 'judge_prompt.txt' is not beside the suite ({tmp_path}); "
        "llm-as-judge::base was not run",
    )


def test_empty_export_has_no_cases() -> None:
    assert parse_suite(render_export([])).tests == ()


def test_folder_loads_every_tests_file_with_the_template_beside_it() -> None:
    suites = load_suites(SUITE_DIR)
    assert [s.name for s in suites] == ["summarize_edge_tests", "summarize_quality_tests"]
    quality = suites[1]
    assert quality.judge is not None
    assert quality.judge.prompt_template.startswith("COURSE JUDGE TEMPLATE v1")
    assert quality.judge.template_source.endswith("judge_prompt.txt")
    assert quality.model == "llama32"
    assert quality.warnings == ()
    assert suites[0].judge is None
    assert suites[0].subset_of is True


def test_inline_template_is_used_as_text(tmp_path: Path) -> None:
    path = tmp_path / "inline_tests.yaml"
    path.write_text(
        "name: inline\nscoring_params:\n  llm-as-judge::base:\n    prompt_template: 'Q={input_query} Answer: ?'\n"
        "tests:\n- prompt: p\n  expected_result: e\n",
        encoding="utf-8",
    )
    suite = load_suite_file(path)
    assert suite.judge is not None
    assert (suite.judge.prompt_template, suite.judge.template_source) == ("Q={input_query} Answer: ?", "inline")
    assert suite.subset_of is False


def test_unknown_scorer_is_reported_not_fatal() -> None:
    suite = parse_suite("name: x\nscoring_params:\n  braintrust::factuality: null\ntests: []\n", source="s")
    assert suite.errors == (
        "s: unknown scorer 'braintrust::factuality' (known: llm-as-judge::base, basic::subset_of); it was not run",
    )


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("tests: 3\n", "'tests' must be a list"),
        ("tests:\n- just a string\n", "tests[0] must be a mapping"),
        ("name: 5\n", "'name' must be a string"),
    ],
)
def test_malformed_suite_names_the_field(text: str, problem: str) -> None:
    with pytest.raises(SuiteError, match=r"bad\.yaml") as caught:
        parse_suite(text, source="bad.yaml")
    assert problem in str(caught.value)


def test_folder_without_tests_files_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "notes.yaml").write_text("a: 1\n", encoding="utf-8")
    with pytest.raises(SuiteError, match=r"no \*_tests\.yaml files"):
        load_suites(tmp_path)


def test_unreadable_file_is_a_suite_error(tmp_path: Path) -> None:
    with pytest.raises(SuiteError, match="cannot read"):
        load_suite_file(tmp_path / "missing_tests.yaml")


# ---- basic::subset_of (the course's: a plain substring test) ------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "expected", "score"),
    [
        ("The Danube ends in the Black Sea.", "ends in the Black Sea", 1.0),
        ("The Danube ends in the Black Sea.", "the danube ends in the black sea", 0.0),
        ("The Danube ends in the Black Sea", "The Danube ends in the Black Sea.", 0.0),
        ("Revenue rose 4% in Q3; margins 5% lower.", "Revenue rose 4.5%.", 0.0),
        ("black seas", "black sea", 1.0),
        ("any answer", "", 1.0),
        ("any answer", "   ", 0.0),
    ],
)
def test_subset_of_is_one_when_the_expected_text_is_in_the_answer(answer: str, expected: str, score: float) -> None:
    assert subset_of(answer, expected) == score


# ---- llm-as-judge::base (str.format, re.search, group 1) ----------------------------------------------------


def test_judge_template_is_filled_by_str_format() -> None:
    template = 'Q: {input_query}\nE: {expected_answer}\nG: {generated_answer}\nJSON: {{"a": 1}}'
    text = render_judge_prompt(
        template, input_query="in {generated_answer}", generated_answer="out", expected_answer="exp"
    )
    assert text == 'Q: in {generated_answer}\nE: exp\nG: out\nJSON: {"a": 1}'


@pytest.mark.parametrize("template", ['JSON: {"a": 1}', "{other}", "{0}", "}"])
def test_a_template_str_format_refuses_is_a_named_error(template: str) -> None:
    with pytest.raises(TemplateError):
        render_judge_prompt(template, input_query="q", generated_answer="g", expected_answer="e")


@pytest.mark.parametrize(
    ("reply", "grade"),
    [
        ("Reasoning.\nAnswer: C", "C"),
        ("Answer: E\nAnswer: A", "E"),
        ("answer: c", None),
        ("Answer: F", "F"),
        ("Answer: G", None),
        ("no verdict", None),
    ],
)
def test_grade_is_group_one_of_the_first_search_match(reply: str, grade: str | None) -> None:
    assert parse_grade(reply, ["Answer: (A|B|C|D|E|F)"]) == grade


def test_grade_tries_each_regex_in_turn_and_keeps_the_text_as_matched() -> None:
    assert parse_grade("Grade -> b", ["Answer: (A|B|C|D|E)", r"Grade -> ([a-e])"]) == "b"


def test_a_regex_without_a_group_is_an_error_not_a_grade() -> None:
    with pytest.raises(GradeRegexError):
        parse_grade("Answer: A", ["Answer: [A-E]"])


# ---- pairwise ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("challenger_first", [True, False])
def test_pairwise_prompt_places_the_challenger_where_recorded(challenger_first: bool) -> None:
    case = EvalCase(prompt="Summarise {answer_1} this", expected_result="")
    text = render_pairwise_prompt(case, "CHAMP text", "CHALL text", challenger_first=challenger_first)
    first, second = pairwise_answers(text)
    assert (first, second) == (("CHALL text", "CHAMP text") if challenger_first else ("CHAMP text", "CHALL text"))
    assert "Summarise {answer_1} this" in text
    assert "[Reference answer]" not in text


def test_pairwise_prompt_shows_a_reference_when_there_is_one() -> None:
    text = render_pairwise_prompt(EvalCase("p", "the reference"), "a", "b", challenger_first=True)
    assert "[Reference answer]\nthe reference\n" in text


@pytest.mark.parametrize(
    ("reply", "position", "winner"),
    [
        ("Better: 1", 1, "challenger"),
        ("Better: 1", 2, "champion"),
        ("Better: 2", 2, "challenger"),
        ("I'd say Better: 2 at first... Final: Better: **1**", 2, "champion"),
        ("better: TIE", 1, "tie"),
        ("Both are fine.", 1, None),
        ("Better: 3", 1, None),
    ],
)
def test_pairwise_verdict_maps_back_to_a_side(reply: str, position: int, winner: str | None) -> None:
    assert parse_pairwise(reply, challenger_position=1 if position == 1 else 2) == winner
