"""Scorers: ``basic::subset_of`` and ``llm-as-judge::base`` as the course pipeline scores them, and the
pairwise judge the promotion gate uses. docs/evaluation.md has the rules and a table of edge cases.

``basic::subset_of`` (no LLM): ``1.0`` when the expected answer occurs in the generated answer as it is
(case, spacing and punctuation count), else ``0.0``. An empty expected answer occurs in every answer, so it
scores ``1.0``; the runner records that value and marks the case *unreviewed* so it never counts as a pass.

``llm-as-judge::base``: the suite's template is filled with Python's ``str.format`` and the three keywords
``input_query``, ``generated_answer``, ``expected_answer`` (``{{``/``}}`` are literal braces, any other
``{name}`` is an error), sent to the judge as one user message; the grade is group 1 of the first of the
suite's regexes that ``re.search`` finds in the reply, kept as the text it matched (not upper-cased, not
checked against A-E), or ``None`` when no regex matches. A regex without a group is an error.

Pairwise judge: which of two answers better serves a request users disliked the answer to. Which side is
shown first is drawn by the caller from a seeded RNG and recorded, so position bias can be checked and a
run repeated. Its template is the operator's own, filled by literal replacement (answers may hold braces).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, Protocol

from canopy_operator.evals.course import parse_grade, render_judge_prompt
from canopy_operator.evals.suites import EvalCase, JudgeParams

Winner = Literal["champion", "challenger", "tie"]
_SPACES = re.compile(r"\s+")

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
class Grade:
    """The ``llm-as-judge::base`` result of one answer: the grade (None when no regex matched) and the
    judge's reply, which the course keeps as ``judge_feedback``."""

    score: str | None
    feedback: str


@dataclass(frozen=True)
class PairwiseResult:
    """The pairwise judge's verdict, mapped back from screen positions to sides."""

    winner: Winner | None
    """None when the reply had no verdict line."""
    challenger_position: Literal[1, 2]
    reply_excerpt: str


def fill(template: str, values: dict[str, str]) -> str:
    """Replace ``{name}`` for the given names in one pass: other braces, and placeholders that appear
    inside the substituted texts themselves, are left alone (the pairwise template only)."""
    pattern = re.compile("|".join(re.escape("{" + name + "}") for name in values))
    return pattern.sub(lambda match: values[match.group(0)[1:-1]], template)


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


async def judge_grade(judge: ChatJudge, params: JudgeParams, case: EvalCase, answer: str, *, model: str) -> Grade:
    """Grade one answer as the course does: a reply without a grade is ``Grade(None, reply)``, not an error."""
    prompt = render_judge_prompt(
        params.prompt_template,
        input_query=case.prompt,
        generated_answer=answer,
        expected_answer=case.expected_result,
    )
    reply = await judge.complete([{"role": "user", "content": prompt}], model=model)
    return Grade(score=parse_grade(reply, params.score_regexes), feedback=reply)


async def judge_pairwise(
    judge: ChatJudge, case: EvalCase, champion: str, challenger: str, *, challenger_first: bool, model: str
) -> PairwiseResult:
    """Ask the judge which answer is better; the verdict is mapped back to champion/challenger."""
    prompt = render_pairwise_prompt(case, champion, challenger, challenger_first=challenger_first)
    reply = await judge.complete([{"role": "user", "content": prompt}], model=model)
    position: Literal[1, 2] = 1 if challenger_first else 2
    winner = parse_pairwise(reply, challenger_position=position)
    return PairwiseResult(winner=winner, challenger_position=position, reply_excerpt=excerpt(reply))
