"""Run suites: get the champion's and the challenger's answers, score them as the course does, summarise.

Answers come from an :class:`AnswerSource`: the backend (:class:`BackendAnswers`: ``POST /summarize/ab``
gives both answers; when the backend has no challenger, 400 ``prompt_b is not configured`` or 404 A/B
disabled, it switches to ``POST /summarize`` and the champion is scored alone) or a saved answers file
(:class:`SavedAnswers`, for re-scoring offline). Each case then gets, per side, the course's
``basic::subset_of`` and ``llm-as-judge::base`` (``evals.course``), and with both answers the pairwise
judge. A scorer that fails on a case (the judge unavailable) leaves that scorer's value out with the error
beside it; the case keeps what the other scorers gave. A backend failure leaves the case unanswered.

*Unreviewed* cases (an empty ``expected_result``: every exported thumbs-down until someone writes the
answer expected) keep the course's per-case values (``subset_of`` is ``1.0`` for them, as ``'' in x`` is
true) but are named in the results, counted apart, and never counted as passes in the ``reviewed``
aggregates. With ``judge_unreviewed`` off (the operator's Jobs) the course judge is not asked about them:
a grade against an empty reference says nothing. The pairwise judge judges them all.

Every finished case is reported to ``on_case`` with the run's progress (the CLI prints it as a JSON line
the operator collects from the pod's log). :func:`build_summary` is what the operator reads from the
termination message, under 4096 bytes whatever the number of cases.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from canopy_operator.evals.course import aggregate, subset_of
from canopy_operator.evals.judge import JudgeError
from canopy_operator.evals.scorers import ChatJudge, excerpt, judge_grade, judge_pairwise
from canopy_operator.evals.suites import EvalCase, Suite
from canopy_operator.sources.canopy.errors import BackendError, BackendHTTPError
from canopy_operator.sources.canopy.models import AbAnswers

Mode = Literal["auto", "ab", "single"]
SUMMARY_LIMIT = 4096
SUMMARY_VERSION = 2
_SAMPLES = 5
_SAMPLE_CHARS = 200
#: The judge's reasons kept per case in the collected results (the full reply stays in --output).
REASON_CHARS = 300
SIDES = ("champion", "challenger")


class Backend(Protocol):
    """The two backend calls the runner needs (``CanopyClient`` provides them)."""

    async def summarize(self, prompt: str) -> str: ...

    async def summarize_ab(self, prompt: str) -> AbAnswers: ...


class AnswerSource(Protocol):
    """Where a case's answers come from: (champion, challenger or None); raises ``BackendError``."""

    mode: Mode
    warnings: list[str]

    async def answers(self, case_index: int, prompt: str) -> tuple[str, str | None]: ...

    @property
    def sequential_until_known(self) -> bool: ...


@dataclass(frozen=True)
class RunConfig:
    """How to run."""

    threshold: float = 0.5
    seed: int = 0
    concurrency: int = 4
    deadline: float | None = None
    """Seconds after the start after which no new case starts (the rest are reported as not run)."""
    hard_deadline: float | None = None
    """Seconds after the start at which cases still running are cancelled, so the summary is written."""
    mode: Mode = "auto"
    judge_model: str | None = None
    """Overrides the suites' judge_model."""
    judge_unreviewed: bool = True
    """Ask the course judge about unreviewed cases too (as the course does)."""


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
    """``champion``/``challenger``: ``{"subset_of": float, "llm_as_judge": {"score", "judge_feedback"}}``;
    ``pairwise``: ``{"winner", "challenger_position", "reply_excerpt"}``."""
    scorer_errors: dict[str, str] = field(default_factory=dict)
    """Scorer (``champion.llm_as_judge``, ``pairwise``) -> why it has no value for this case."""
    error: str | None = None
    """Why the case has no answers (backend failure, or not run before the deadline)."""

    @property
    def unreviewed(self) -> bool:
        """No answer is expected yet (an exported thumbs-down nobody reviewed)."""
        return not self.expected_result.strip()

    @property
    def failed(self) -> bool:
        """The case has no answers, or a scorer failed on it."""
        return self.error is not None or bool(self.scorer_errors)


@dataclass
class RunState:
    """The answer source (its mode once known) and the results by index."""

    source: AnswerSource
    results: list[CaseResult]
    warnings: list[str] = field(default_factory=list)

    @property
    def mode(self) -> Mode:
        return self.source.mode


def _no_challenger(exc: BackendError) -> bool:
    return isinstance(exc, BackendHTTPError) and exc.status in (400, 404)


class BackendAnswers:
    """Answers from the running backend: A/B when it serves a challenger, else the champion alone."""

    def __init__(self, backend: Backend, mode: Mode = "auto") -> None:
        self._backend = backend
        self.mode: Mode = mode
        self.warnings: list[str] = []

    @property
    def sequential_until_known(self) -> bool:
        return self.mode == "auto"

    async def answers(self, case_index: int, prompt: str) -> tuple[str, str | None]:
        if self.mode != "single":
            try:
                ab = await self._backend.summarize_ab(prompt)
            except BackendError as exc:
                if self.mode == "ab" or not _no_challenger(exc):
                    raise
                self.mode = "single"
                self.warnings.append(f"no challenger served ({exc.problem}); scoring the champion alone")
            else:
                self.mode = "ab"
                return ab.prompt, ab.prompt_b
        return await self._backend.summarize(prompt), None


class SavedAnswers:
    """Answers saved by an earlier run (``--output``), by case index, checked against the case's input."""

    def __init__(self, answers: dict[int, tuple[str, str, str | None]]) -> None:
        self._answers = answers
        challenger = any(a[2] is not None for a in answers.values())
        self.mode: Mode = "ab" if challenger else "single"
        self.warnings: list[str] = []

    @property
    def sequential_until_known(self) -> bool:
        return False

    async def answers(self, case_index: int, prompt: str) -> tuple[str, str | None]:
        saved = self._answers.get(case_index)
        if saved is None:
            raise BackendError("answers file", f"no saved answer for case {case_index}")
        if saved[0] != prompt:
            raise BackendError("answers file", f"the saved answers of case {case_index} are for another input")
        return saved[1], saved[2]


async def _judge_step(result: CaseResult, key: str, step: Callable[[], Any]) -> Any:
    """Run one judge call; a failure is recorded against ``key`` and the case goes on."""
    try:
        return await step()
    except (JudgeError, ValueError) as exc:
        result.scorer_errors[key] = f"{type(exc).__name__}: {excerpt(str(exc), _SAMPLE_CHARS)}"
        return None


async def _score_side(
    judge: ChatJudge | None, suite: Suite, case: EvalCase, result: CaseResult, side: str, answer: str, model: str
) -> None:
    scores: dict[str, Any] = {}
    result.scores[side] = scores
    if suite.subset_of:
        scores["subset_of"] = subset_of(answer, case.expected_result)
    params = suite.judge
    if judge is None or params is None:
        return
    grade = await _judge_step(
        result, f"{side}.llm_as_judge", lambda: judge_grade(judge, params, case, answer, model=model)
    )
    if grade is not None:
        scores["llm_as_judge"] = {"score": grade.score, "judge_feedback": grade.feedback}


async def score_case(
    judge: ChatJudge | None, suite: Suite, case: EvalCase, result: CaseResult, model: str, config: RunConfig
) -> None:
    """Every scorer on a case that has its answers."""
    assert result.champion_answer is not None
    ask_course_judge = config.judge_unreviewed or not result.unreviewed
    course_judge = judge if ask_course_judge else None
    await _score_side(course_judge, suite, case, result, "champion", result.champion_answer, model)
    if result.challenger_answer is None:
        return
    await _score_side(course_judge, suite, case, result, "challenger", result.challenger_answer, model)
    if judge is None:
        return
    champion, challenger = result.champion_answer, result.challenger_answer
    verdict = await _judge_step(
        result,
        "pairwise",
        lambda: judge_pairwise(
            judge, case, champion, challenger, challenger_first=result.challenger_first, model=model
        ),
    )
    if verdict is not None:
        result.scores["pairwise"] = {
            "winner": verdict.winner,
            "challenger_position": verdict.challenger_position,
            "reply_excerpt": verdict.reply_excerpt,
        }


async def run_case(
    source: AnswerSource,
    judge: ChatJudge | None,
    suite: Suite,
    case: EvalCase,
    result: CaseResult,
    model: str,
    config: RunConfig,
) -> None:
    """Fill ``result`` for one case; every failure is recorded in it."""
    try:
        result.champion_answer, result.challenger_answer = await source.answers(result.index, case.prompt)
    except BackendError as exc:
        result.error = f"backend: {exc}"
        return
    await score_case(judge, suite, case, result, model, config)


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


@dataclass(frozen=True)
class Progress:
    """Where a run stands: cases finished of the total, and a time-left estimate from the pace so far."""

    done: int
    total: int
    elapsed: float

    @property
    def eta_seconds(self) -> float | None:
        if self.done == 0:
            return None
        return round(self.elapsed / self.done * (self.total - self.done), 1)


async def run_suites(
    suites: Sequence[Suite],
    source: AnswerSource,
    judge: ChatJudge | None,
    config: RunConfig,
    *,
    clock: Callable[[], float] = time.monotonic,
    on_case: Callable[[CaseResult, Progress], None] | None = None,
) -> RunState:
    """Run every case; cases start in order with at most ``config.concurrency`` in flight. While the
    source's mode is not known (``auto``) cases run one at a time, so the first answer decides it once."""
    planned = plan_cases(suites, config.seed)
    state = RunState(source=source, results=[result for _, _, result in planned])
    model = _judge_model(suites, config)
    start = clock()
    position = 0
    done = 0
    lock = asyncio.Lock()

    def finished(result: CaseResult) -> None:
        nonlocal done
        done += 1
        if on_case is not None:
            on_case(result, Progress(done=done, total=len(planned), elapsed=clock() - start))

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
                    finished(result)
                    continue
                if source.sequential_until_known:
                    await run_case(source, judge, suite, case, result, model, config)
                    finished(result)
                    continue
            await run_case(source, judge, suite, case, result, model, config)
            finished(result)

    tasks = [asyncio.ensure_future(worker()) for _ in range(max(1, config.concurrency))]
    timeout = None if config.hard_deadline is None else max(0.0, config.hard_deadline - (clock() - start))
    _, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)
        for result in state.results:
            if result.error is None and not _has_values(result) and not result.scorer_errors:
                result.error = f"not finished: cancelled at the hard deadline of {config.hard_deadline:g}s"
    state.warnings.extend(source.warnings)
    return state


def _has_values(result: CaseResult) -> bool:
    return "pairwise" in result.scores or any(result.scores.get(side) for side in SIDES)


def input_hash(prompt: str) -> str:
    """The case's input as 16 hex digits of its SHA-256 (results name inputs without repeating them)."""
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:16]


def case_record(result: CaseResult) -> dict[str, Any]:
    """One case's results, bounded (about 2 KB at most): what the operator keeps after the pod is gone."""
    record: dict[str, Any] = {
        "i": result.index,
        "suite": excerpt(result.suite, 100),
        "input_sha256": input_hash(result.prompt),
        "unreviewed": result.unreviewed,
    }
    for side in SIDES:
        scores = result.scores.get(side)
        if scores is None:
            continue
        entry: dict[str, Any] = {}
        if "subset_of" in scores:
            entry["subset_of"] = scores["subset_of"]
        grade = scores.get("llm_as_judge")
        if grade is not None:
            entry["llm_as_judge"] = None if grade["score"] is None else excerpt(str(grade["score"]), 20)
            entry["judge_reason"] = excerpt(grade["judge_feedback"], REASON_CHARS)
        record[side] = entry
    pairwise = result.scores.get("pairwise")
    if pairwise is not None:
        record["pairwise"] = {
            "winner": pairwise["winner"],
            "challenger_position": pairwise["challenger_position"],
            "reason": excerpt(pairwise["reply_excerpt"], REASON_CHARS),
        }
    errors = [f"{k}: {v}" for k, v in sorted(result.scorer_errors.items())]
    if result.error is not None:
        errors.insert(0, result.error)
    record["error"] = excerpt("; ".join(errors), REASON_CHARS) if errors else None
    return record


def _side_aggregates(results: Sequence[CaseResult], side: str, suite: Suite) -> dict[str, Any]:
    """The course's aggregates of one suite's side, over every row the course scores, and over reviewed rows."""
    rows = [r for r in results if "subset_of" in r.scores.get(side, {})]
    out: dict[str, Any] = {}
    if suite.subset_of and rows:
        subset_all = [r.scores[side]["subset_of"] for r in rows]
        subset_reviewed = [r.scores[side]["subset_of"] for r in rows if not r.unreviewed]
        out["subset_of"] = {name: aggregate(name, subset_all)[name] for name in suite.subset_aggregations}
        out["subset_of"]["num_correct"] = sum(subset_all)
        out["subset_of"]["num_total"] = len(subset_all)
        reviewed = aggregate("accuracy", subset_reviewed) if subset_reviewed else {"accuracy": None}
        out["subset_of_reviewed"] = {
            "accuracy": reviewed["accuracy"],
            "num_correct": sum(subset_reviewed),
            "num_total": len(subset_reviewed),
        }
    graded = [r.scores[side]["llm_as_judge"] for r in results if "llm_as_judge" in r.scores.get(side, {})]
    if graded:
        scores = [g["score"] for g in graded]
        judge: dict[str, Any] = aggregate("categorical_count", scores)
        if suite.judge is not None:
            for name in suite.judge.aggregations:
                judge.update(aggregate(name, scores))
        reviewed_scores = [
            r.scores[side]["llm_as_judge"]["score"]
            for r in results
            if "llm_as_judge" in r.scores.get(side, {}) and not r.unreviewed
        ]
        judge["reviewed"] = aggregate("categorical_count", reviewed_scores)["categorical_count"]
        out["llm_as_judge"] = judge
    return out


def suite_aggregates(suites: Sequence[Suite], results: Sequence[CaseResult]) -> list[dict[str, Any]]:
    """Per suite, as the course scores each suite file on its own: cases, unreviewed and each side's aggregates."""
    by_suite: dict[str, list[CaseResult]] = {}
    for result in results:
        by_suite.setdefault(result.suite, []).append(result)
    out = []
    named: dict[str, Suite] = {}
    for suite in suites:  # a dataset split in parts repeats its suite's name: one entry covers all its parts
        named.setdefault(suite.name, suite)
    for suite in named.values():
        rows = by_suite.get(suite.name, [])
        entry: dict[str, Any] = {
            "name": excerpt(suite.name, 100),
            "cases": len(rows),
            "unreviewed": sum(1 for r in rows if r.unreviewed),
        }
        for side in SIDES:
            aggregates = _side_aggregates(rows, side, suite)
            if aggregates:
                entry[side] = aggregates
        out.append(entry)
    return out


def _pairwise(results: Sequence[CaseResult]) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for result in results:
        verdict = result.scores.get("pairwise")
        if verdict is None:
            continue
        winner = verdict.get("winner")
        counts[winner if winner is not None else "no_verdict"] += 1
        if winner is not None:
            counts["challenger_first"] += int(result.challenger_first)
    return {k: counts[k] for k in ("challenger", "champion", "tie", "no_verdict", "challenger_first")}


def build_summary(
    state: RunState,
    config: RunConfig,
    warnings: Sequence[str],
    duration: float,
    suites: Sequence[Suite] = (),
    scorer_errors: Sequence[str] = (),
) -> dict[str, Any]:
    """The machine-readable verdict: counts, the course's aggregates per suite, the pairwise verdict."""
    results = state.results
    failed = [r for r in results if r.failed]
    votes = _pairwise(results)
    decided = votes["challenger"] + votes["champion"] + votes["tie"]
    rate = round(votes["challenger"] / decided, 4) if decided else None
    samples = [f"case {r.index}: {excerpt(case_record(r)['error'] or '', _SAMPLE_CHARS)}" for r in failed[:_SAMPLES]]
    return {
        "v": SUMMARY_VERSION,
        "cases": len(results),
        "scored": sum(1 for r in results if r.error is None and _has_values(r)),
        "errors": len(failed),
        "unreviewed": sum(1 for r in results if r.unreviewed),
        "mode": state.mode,
        "challenger_better_rate": rate,
        "threshold": config.threshold,
        "passed": None if rate is None else rate >= config.threshold,
        "pairwise": votes,
        "suites": suite_aggregates(suites, results),
        "scorer_errors": [excerpt(e, _SAMPLE_CHARS) for e in scorer_errors][:_SAMPLES],
        "seed": config.seed,
        "duration_seconds": round(duration, 1),
        "error_samples": samples,
        "warnings": [excerpt(w, _SAMPLE_CHARS) for w in list(warnings)[:_SAMPLES]],
    }


CORE_FIELDS = ("v", "cases", "scored", "errors", "unreviewed", "challenger_better_rate", "threshold", "passed")


def render_summary(summary: dict[str, Any], limit: int = SUMMARY_LIMIT) -> str:
    """The summary as one JSON line shorter than ``limit`` bytes: warnings, samples, then suites are
    dropped first, the core fields never."""
    trimmed = dict(summary)
    text = json.dumps(trimmed, separators=(",", ":"))
    for key in ("warnings", "error_samples", "suites", "scorer_errors"):
        while len(text.encode("utf-8")) >= limit and trimmed.get(key):
            trimmed[key] = trimmed[key][:-1]
            text = json.dumps(trimmed, separators=(",", ":"))
    if len(text.encode("utf-8")) >= limit:
        trimmed = {k: trimmed[k] for k in CORE_FIELDS if k in trimmed}
        text = json.dumps(trimmed, separators=(",", ":"))
    return text
