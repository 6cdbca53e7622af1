"""Run a suite: get the champion's and the challenger's answers from the backend, score them, summarise.

For every case the runner asks the backend once: ``POST /summarize/ab`` gives both answers (the client maps
the shuffled sides back through the stream's ``ab_config`` event); when the backend has no challenger
(400 ``prompt_b is not configured`` or 404 A/B disabled) the run switches to ``POST /summarize`` and scores
the champion alone. A failing case gets an error in its result and the run goes on.

The summary (:func:`build_summary`) is what the operator reads from the pod's termination message, so
:func:`render_summary` keeps it under 4096 bytes whatever the number of cases. Its fields:

- ``cases``: cases in the suites; ``errors``: cases with an error (backend, judge, or not run before the
  deadline); ``scored``: cases without error for which at least one scorer gave a result (a case with no
  applicable scorer, e.g. no expected answer and no judge, is neither).
- ``challenger_better_rate``: pairwise verdicts for the challenger / all pairwise verdicts (ties count in
  the denominator only); null without pairwise verdicts (no judge, or no challenger served).
- ``passed``: ``challenger_better_rate >= threshold``, null when the rate is null.
- ``scorers``: pairwise counts (``challenger``, ``champion``, ``tie``, ``challenger_first``), the
  llm-as-judge grade counts per side and the subset_of pass/fail counts per side.
- ``mode`` (ab, single, or auto when no case got an answer), ``seed``, ``threshold``,
  ``duration_seconds``, up to five ``error_samples`` and ``warnings`` (dropped first if space runs out).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

from canopy_operator.evals.judge import JudgeError
from canopy_operator.evals.scorers import ChatJudge, excerpt, judge_grade, judge_pairwise, subset_of
from canopy_operator.evals.suites import EvalCase, Suite
from canopy_operator.sources.canopy.errors import BackendError, BackendHTTPError
from canopy_operator.sources.canopy.models import AbAnswers

Mode = Literal["auto", "ab", "single"]
SUMMARY_LIMIT = 4096
SUMMARY_VERSION = 1
_SAMPLES = 5
_SAMPLE_CHARS = 200


class Backend(Protocol):
    """The two backend calls the runner needs (``CanopyClient`` provides them)."""

    async def summarize(self, prompt: str) -> str: ...

    async def summarize_ab(self, prompt: str) -> AbAnswers: ...


@dataclass(frozen=True)
class RunConfig:
    """How to run."""

    threshold: float = 0.5
    seed: int = 0
    concurrency: int = 4
    deadline: float | None = None
    """Seconds after the start after which no new case starts (the rest are reported as errors)."""
    mode: Mode = "auto"
    judge_model: str | None = None
    """Overrides the suites' judge_model."""


@dataclass
class CaseResult:
    """Everything about one case (the results file holds a list of these)."""

    index: int
    suite: str
    prompt: str
    expected_result: str
    challenger_first: bool
    champion_answer: str | None = None
    challenger_answer: str | None = None
    scores: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


@dataclass
class RunState:
    """Shared by the workers: the mode once known and the results by index."""

    mode: Mode
    results: list[CaseResult]
    warnings: list[str] = field(default_factory=list)


def _no_challenger(exc: BackendError) -> bool:
    return isinstance(exc, BackendHTTPError) and exc.status in (400, 404)


async def _answers(backend: Backend, state: RunState, prompt: str) -> tuple[str, str | None]:
    if state.mode != "single":
        try:
            ab = await backend.summarize_ab(prompt)
        except BackendError as exc:
            if state.mode == "ab" or not _no_challenger(exc):
                raise
            state.mode = "single"
            state.warnings.append(f"no challenger served ({exc.problem}); scoring the champion alone")
        else:
            state.mode = "ab"
            return ab.prompt, ab.prompt_b
    return await backend.summarize(prompt), None


async def _score_side(judge: ChatJudge | None, suite: Suite, case: EvalCase, answer: str, model: str) -> dict[str, Any]:
    scores: dict[str, Any] = {}
    if suite.subset_of:
        subset = subset_of(answer, case.expected_result)
        if subset is not None:
            scores["subset_of"] = asdict(subset)
    if judge is not None and suite.judge is not None and case.expected_result.strip():
        scores["llm_as_judge"] = await judge_grade(judge, suite.judge, case, answer, model=model)
    return scores


async def _score(judge: ChatJudge | None, suite: Suite, case: EvalCase, result: CaseResult, model: str) -> None:
    assert result.champion_answer is not None
    result.scores["champion"] = await _score_side(judge, suite, case, result.champion_answer, model)
    if result.challenger_answer is None:
        return
    result.scores["challenger"] = await _score_side(judge, suite, case, result.challenger_answer, model)
    if judge is not None:
        verdict = await judge_pairwise(
            judge,
            case,
            result.champion_answer,
            result.challenger_answer,
            challenger_first=result.challenger_first,
            model=model,
        )
        result.scores["pairwise"] = asdict(verdict)
        if verdict.winner is None:
            raise ValueError(f"pairwise judge gave no verdict: {verdict.reply_excerpt!r}")


async def run_case(
    backend: Backend,
    judge: ChatJudge | None,
    suite: Suite,
    case: EvalCase,
    result: CaseResult,
    state: RunState,
    model: str,
) -> None:
    """Fill ``result`` for one case; every failure becomes ``result.error``."""
    try:
        result.champion_answer, result.challenger_answer = await _answers(backend, state, case.prompt)
    except BackendError as exc:
        result.error = f"backend: {exc}"
        return
    try:
        await _score(judge, suite, case, result, model)
    except (JudgeError, ValueError) as exc:
        result.error = f"judge: {type(exc).__name__}: {excerpt(str(exc), _SAMPLE_CHARS)}"


def plan_cases(suites: Sequence[Suite], seed: int) -> list[tuple[Suite, EvalCase, CaseResult]]:
    """Every case of every suite, with the challenger's screen position drawn from ``seed`` in case order."""
    rng = random.Random(seed)  # noqa: S311 - position shuffling, not security
    planned: list[tuple[Suite, EvalCase, CaseResult]] = []
    for suite in suites:
        for case in suite.tests:
            result = CaseResult(
                index=len(planned),
                suite=suite.name,
                prompt=case.prompt,
                expected_result=case.expected_result,
                challenger_first=rng.random() < 0.5,
            )
            planned.append((suite, case, result))
    return planned


def _judge_model(suites: Sequence[Suite], config: RunConfig) -> str:
    if config.judge_model:
        return config.judge_model
    return next((s.judge.judge_model for s in suites if s.judge is not None), "llama32")


async def run_suites(
    suites: Sequence[Suite],
    backend: Backend,
    judge: ChatJudge | None,
    config: RunConfig,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> RunState:
    """Run every case; cases start in order with at most ``config.concurrency`` in flight. While the mode
    is not known yet (``auto``) cases run one at a time, so the first answer decides it once."""
    planned = plan_cases(suites, config.seed)
    state = RunState(mode=config.mode, results=[result for _, _, result in planned])
    model = _judge_model(suites, config)
    start = clock()
    position = 0
    lock = asyncio.Lock()

    async def worker() -> None:
        nonlocal position
        while True:
            async with lock:
                if position >= len(planned):
                    return
                suite, case, result = planned[position]
                position += 1
                if config.deadline is not None and clock() - start >= config.deadline:
                    result.error = f"not run: deadline of {config.deadline:g}s reached"
                    continue
                if state.mode == "auto":
                    await run_case(backend, judge, suite, case, result, state, model)
                    continue
            await run_case(backend, judge, suite, case, result, state, model)

    await asyncio.gather(*(worker() for _ in range(max(1, config.concurrency))))
    return state


def _tally(results: Sequence[CaseResult]) -> dict[str, Any]:
    pairwise: Counter[str] = Counter()
    grades: dict[str, Counter[str]] = {"champion": Counter(), "challenger": Counter()}
    subset: dict[str, Counter[str]] = {"champion": Counter(), "challenger": Counter()}
    for result in results:
        verdict = result.scores.get("pairwise")
        if verdict is not None and verdict.get("winner") is not None:
            pairwise[verdict["winner"]] += 1
            pairwise["challenger_first"] += int(result.challenger_first)
        for side in ("champion", "challenger"):
            side_scores = result.scores.get(side, {})
            if "llm_as_judge" in side_scores:
                grades[side][side_scores["llm_as_judge"]] += 1
            if "subset_of" in side_scores:
                subset[side]["passed" if side_scores["subset_of"]["passed"] else "failed"] += 1
    return {
        "pairwise": {k: pairwise[k] for k in ("challenger", "champion", "tie", "challenger_first")},
        "llm_as_judge": {side: dict(sorted(c.items())) for side, c in grades.items()},
        "subset_of": {side: {k: c[k] for k in ("passed", "failed")} for side, c in subset.items()},
    }


def _is_scored(result: CaseResult) -> bool:
    if result.error is not None:
        return False
    scores = result.scores
    return "pairwise" in scores or any(scores.get(side) for side in ("champion", "challenger"))


def build_summary(state: RunState, config: RunConfig, warnings: Sequence[str], duration: float) -> dict[str, Any]:
    """The machine-readable verdict: counts, per-scorer results and pass/fail against the threshold."""
    results = state.results
    errors = [r for r in results if r.error is not None]
    tally = _tally(results)
    votes = tally["pairwise"]
    decided = votes["challenger"] + votes["champion"] + votes["tie"]
    rate = round(votes["challenger"] / decided, 4) if decided else None
    return {
        "v": SUMMARY_VERSION,
        "cases": len(results),
        "scored": sum(1 for r in results if _is_scored(r)),
        "errors": len(errors),
        "mode": state.mode,
        "challenger_better_rate": rate,
        "threshold": config.threshold,
        "passed": None if rate is None else rate >= config.threshold,
        "scorers": tally,
        "seed": config.seed,
        "duration_seconds": round(duration, 1),
        "error_samples": [f"case {r.index}: {excerpt(r.error or '', _SAMPLE_CHARS)}" for r in errors[:_SAMPLES]],
        "warnings": [excerpt(w, _SAMPLE_CHARS) for w in list(warnings)[:_SAMPLES]],
    }


def render_summary(summary: dict[str, Any], limit: int = SUMMARY_LIMIT) -> str:
    """The summary as one JSON line shorter than ``limit`` bytes: samples and warnings are dropped first."""
    trimmed = dict(summary)
    text = json.dumps(trimmed, separators=(",", ":"))
    for key in ("warnings", "error_samples"):
        while len(text.encode("utf-8")) >= limit and trimmed.get(key):
            trimmed[key] = trimmed[key][:-1]
            text = json.dumps(trimmed, separators=(",", ":"))
    if len(text.encode("utf-8")) >= limit:
        trimmed = {k: trimmed[k] for k in ("v", "cases", "scored", "errors", "challenger_better_rate", "passed")}
        text = json.dumps(trimmed, separators=(",", ":"))
    return text
