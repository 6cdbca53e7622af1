"""Scorers: ``basic::subset_of``, ``llm-as-judge::base`` and the pairwise judge.

``basic::subset_of`` (no LLM). Applies only where the case has an expected answer. The expected answer is
split into sentences (on ``.``, ``!``, ``?``, ``;`` and line breaks); each sentence, lower-cased with
whitespace collapsed and surrounding punctuation dropped, must occur as a substring of the answer
normalised the same way. The score is the share of sentences found, and the case passes when all are.
For a one-sentence expected answer this is Llama Stack's definition ("1.0 if the expected is included in
the generated answer"), made insensitive to case, spacing and a trailing full stop.

``llm-as-judge::base``. Applies only where the case has an expected answer (a grade against an empty
reference says nothing). The suite's template gets ``{input_query}``, ``{generated_answer}`` and
``{expected_answer}`` replaced literally (other braces are left alone) and the first of the suite's score
regexes that matches the reply gives the grade, A to E.

Pairwise judge. Applies to every case with both answers: it asks which of two answers better serves a
request users disliked the answer to. Which side is shown first is drawn by the caller from a seeded RNG
and recorded, so position bias can be checked and a run can be repeated.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from canopy_operator.evals.suites import EvalCase, JudgeParams

GRADES = ("A", "B", "C", "D", "E")
Winner = Literal["champion", "challenger", "tie"]

_SENTENCE_SPLIT = re.compile(r"[.!?;\n]+")
_SPACES = re.compile(r"\s+")
_EDGE_PUNCT = " \t\"'`,:()[]{}*-"

PAIRWISE_TEMPLATE = """\
Users rated the assistant's answer to the request below as unhelpful (thumbs down).
Two new candidate answers to the same request follow. Decide which one better serves the user:
more accurate, more complete where it matters, clearer, and following the request.
Do not prefer an answer for its position or its length.

[Request]
{input_query}
{reference}[Answer 1]
{answer_1}
[Answer 2]
{answer_2}
[End of answers]

Explain briefly, then end with exactly one line: "Better: 1", "Better: 2" or "Better: tie".
"""
_REFERENCE = "[Reference answer]\n"
_PAIRWISE_VERDICT = re.compile(r"Better:\s*\**\s*(1|2|tie)\b", re.IGNORECASE)


class ChatJudge(Protocol):
    """Anything that answers a chat-completions request with the reply text."""

    async def complete(self, messages: list[dict[str, str]], *, model: str) -> str: ...


@dataclass(frozen=True)
class SubsetResult:
    """Outcome of ``basic::subset_of`` for one answer."""

    score: float
    passed: bool
    missing: int


@dataclass(frozen=True)
class PairwiseResult:
    """The pairwise judge's verdict, mapped back from screen positions to sides."""

    winner: Winner | None
    """None when the reply had no verdict line."""
    challenger_position: Literal[1, 2]
    reply_excerpt: str


def _normalise(text: str) -> str:
    return _SPACES.sub(" ", text).strip().lower()


def subset_of(answer: str, expected: str) -> SubsetResult | None:
    """Score ``answer`` against ``expected``; None when there is no expected answer."""
    sentences = [_normalise(part).strip(_EDGE_PUNCT) for part in _SENTENCE_SPLIT.split(expected)]
    sentences = [s for s in sentences if s]
    if not sentences:
        return None
    haystack = _normalise(answer)
    missing = sum(1 for sentence in sentences if sentence not in haystack)
    found = len(sentences) - missing
    return SubsetResult(score=found / len(sentences), passed=missing == 0, missing=missing)


def fill(template: str, values: dict[str, str]) -> str:
    """Replace ``{name}`` for the given names in one pass: other braces, and placeholders that appear
    inside the substituted texts themselves, are left alone."""
    pattern = re.compile("|".join(re.escape("{" + name + "}") for name in values))
    return pattern.sub(lambda match: values[match.group(0)[1:-1]], template)


def render_judge_prompt(template: str, *, input_query: str, generated_answer: str, expected_answer: str) -> str:
    """Fill the course template's three placeholders."""
    values = {
        "input_query": input_query,
        "generated_answer": generated_answer,
        "expected_answer": expected_answer,
    }
    return fill(template, values)


def parse_grade(reply: str, regexes: Sequence[str]) -> str | None:
    """The grade A-E from the first regex that matches the reply, or None."""
    for pattern in regexes:
        match = re.search(pattern, reply)
        if match is None:
            continue
        letter = (match.group(1) if match.groups() else match.group(0)).strip().upper()
        if letter in GRADES:
            return letter
    return None


def render_pairwise_prompt(case: EvalCase, champion: str, challenger: str, *, challenger_first: bool) -> str:
    """The pairwise question with the challenger shown first or second."""
    first, second = (challenger, champion) if challenger_first else (champion, challenger)
    reference = _REFERENCE + case.expected_result + "\n" if case.expected_result.strip() else ""
    values = {"input_query": case.prompt, "reference": reference, "answer_1": first, "answer_2": second}
    return fill(PAIRWISE_TEMPLATE, values)


def parse_pairwise(reply: str, *, challenger_position: Literal[1, 2]) -> Winner | None:
    """Map the last ``Better: 1|2|tie`` line back to a side."""
    verdicts = _PAIRWISE_VERDICT.findall(reply)
    if not verdicts:
        return None
    verdict = verdicts[-1].lower()
    if verdict == "tie":
        return "tie"
    return "challenger" if int(verdict) == challenger_position else "champion"


def excerpt(text: str, limit: int = 200) -> str:
    """A one-line excerpt for results and error messages."""
    flat = _SPACES.sub(" ", text).strip()
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


async def judge_grade(judge: ChatJudge, params: JudgeParams, case: EvalCase, answer: str, *, model: str) -> str:
    """Ask the judge to grade one answer; raises ``ValueError`` when the reply has no grade."""
    prompt = render_judge_prompt(
        params.prompt_template,
        input_query=case.prompt,
        generated_answer=answer,
        expected_answer=case.expected_result,
    )
    reply = await judge.complete([{"role": "user", "content": prompt}], model=model)
    grade = parse_grade(reply, params.score_regexes)
    if grade is None:
        raise ValueError(f"judge reply has no grade matching {list(params.score_regexes)}: {excerpt(reply)!r}")
    return grade


async def judge_pairwise(
    judge: ChatJudge, case: EvalCase, champion: str, challenger: str, *, challenger_first: bool, model: str
) -> PairwiseResult:
    """Ask the judge which answer is better; the verdict is mapped back to champion/challenger."""
    prompt = render_pairwise_prompt(case, champion, challenger, challenger_first=challenger_first)
    reply = await judge.complete([{"role": "user", "content": prompt}], model=model)
    position: Literal[1, 2] = 1 if challenger_first else 2
    winner = parse_pairwise(reply, challenger_position=position)
    return PairwiseResult(winner=winner, challenger_position=position, reply_excerpt=excerpt(reply))
