"""The course pipeline's scoring, exactly: Llama Stack's ``basic::subset_of`` and ``llm-as-judge::base``
scoring functions and its aggregation functions, as the course's Kubeflow pipeline calls them.

Pure functions without I/O; the rules, paraphrased from the course and Llama Stack, and a table of edge
cases are in docs/evaluation.md.
"""

from __future__ import annotations

import re
import statistics
import string
from collections.abc import Sequence
from typing import Any

#: A format field whose width or precision asks for more than this many characters is refused.
MAX_FORMAT_WIDTH = 100_000
TEMPLATE_FIELDS = ("input_query", "generated_answer", "expected_answer")


class TemplateError(ValueError):
    """The judge template cannot be filled as the course fills it (the message names the field)."""


class GradeRegexError(ValueError):
    """A score regex cannot give a grade (no group 1, or not a valid pattern)."""


def subset_of(generated: str, expected: str) -> float:
    """The course's ``basic::subset_of``: 1.0 when ``expected`` is in ``generated``, else 0.0."""
    return 1.0 if expected in generated else 0.0


def check_template(template: str) -> None:
    """Refuse, before any case runs, a template ``str.format`` would fail on or could blow up with.

    The course's own failures (an unknown ``{name}``, a positional ``{}``, a lone brace) are reported
    by name; attribute access to dunder names and widths over :data:`MAX_FORMAT_WIDTH` are refused too,
    since the template decides what the runner computes."""
    try:
        fields = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise TemplateError(f"judge template is not a str.format template: {exc}") from exc
    for _literal, name, spec, _conversion in fields:
        if name is None:
            continue
        root = re.split(r"[.\[]", name, maxsplit=1)[0]
        if root not in TEMPLATE_FIELDS:
            shown = "{" + name + "}" if name else "{}"
            raise TemplateError(
                f"judge template has the placeholder {shown}; only {{input_query}}, {{generated_answer}} and "
                "{expected_answer} are filled (write {{ and }} for literal braces)"
            )
        if "__" in name:
            raise TemplateError(f"judge template placeholder {{{name}}} reaches a private attribute")
        if "{" in (spec or ""):
            raise TemplateError(f"judge template placeholder {{{name}}} nests another placeholder in its format")
        if any(int(n) > MAX_FORMAT_WIDTH for n in re.findall(r"\d+", spec or "")):
            raise TemplateError(f"judge template placeholder {{{name}:{spec}}} asks for too wide a field")


def render_judge_prompt(template: str, *, input_query: str, generated_answer: str, expected_answer: str) -> str:
    """The course template filled with ``str.format`` and the three keywords."""
    check_template(template)
    try:
        return template.format(
            input_query=input_query, generated_answer=generated_answer, expected_answer=expected_answer
        )
    except (KeyError, IndexError, AttributeError, ValueError, TypeError) as exc:
        raise TemplateError(f"judge template cannot be filled: {type(exc).__name__}: {exc}") from exc


def check_regexes(regexes: Sequence[str]) -> None:
    """Every score regex compiles and has a group 1 (the course reads ``match.group(1)``)."""
    for pattern in regexes:
        try:
            compiled = re.compile(pattern)
        except re.error as exc:
            raise GradeRegexError(f"judge_score_regexes: {pattern!r} is not a valid regex: {exc}") from exc
        if compiled.groups < 1:
            raise GradeRegexError(f"judge_score_regexes: {pattern!r} has no group; the grade is group 1")


def parse_grade(reply: str, regexes: Sequence[str]) -> str | None:
    """Group 1 of the first regex ``re.search`` finds in the reply, as matched; None when none matches."""
    for pattern in regexes:
        match = re.search(pattern, reply)
        if match:
            try:
                return match.group(1)
            except IndexError as exc:
                raise GradeRegexError(f"judge_score_regexes: {pattern!r} has no group 1") from exc
    return None


def aggregate(name: str, scores: Sequence[Any]) -> dict[str, Any]:
    """One of Llama Stack's aggregation functions over the rows' scores, as it computes it.

    ``accuracy``: ``sum / count`` with ``num_correct`` and ``num_total``; ``average``: the mean of the
    scores that are not None; ``categorical_count``: how often each score occurs, keyed by ``str(score)``
    (a missing grade counts as ``"None"``); ``median``: the median of the scores that are not None.
    Where Llama Stack would fail (no rows, a grade that is text) the value is None and ``error`` says why.
    """
    try:
        if name == "accuracy":
            correct = sum(scores)
            return {"accuracy": correct / len(scores), "num_correct": correct, "num_total": len(scores)}
        if name == "average":
            present = [s for s in scores if s is not None]
            return {"average": sum(present) / len(present)}
        if name == "categorical_count":
            keys = [str(s) for s in scores]
            return {"categorical_count": {k: keys.count(k) for k in sorted(set(keys))}}
        if name == "median":
            present = [s for s in scores if s is not None]
            return {"median": statistics.median(present) if present else None}
    except (TypeError, ZeroDivisionError, statistics.StatisticsError) as exc:
        return {name: None, "error": f"{type(exc).__name__}: not computable on these scores"}
    raise ValueError(f"unknown aggregation function {name!r}")
