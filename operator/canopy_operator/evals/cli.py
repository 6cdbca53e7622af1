"""``canopy-operator eval``: run an evaluation suite against the backend and write its verdict.

Exit codes: 0 the run finished (whatever the verdict; read ``passed`` in the summary), 1 every case
failed, 2 bad arguments or an unusable suite (the Job then fails at once, without retries). The summary
(one JSON line under 4096 bytes) goes to ``--summary`` (default ``/dev/termination-log``), the full
results (answers and the judge's replies included) to ``--output``. Each finished case is printed on
stdout as one JSON line (``evaluation_case``: its bounded results and the run's progress, no prompt
texts), which the operator collects from the pod's log. Logs are JSON lines on stderr without prompt texts.

``--answers FILE`` re-scores the answers an earlier run saved with ``--output`` instead of asking the
backend: with the suite's current expected results (e.g. after a review), without a judge for the scorers
that need none.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from canopy_operator.evals.judge import JudgeClient, JudgeConfig
from canopy_operator.evals.runner import (
    AnswerSource,
    BackendAnswers,
    CaseResult,
    Progress,
    RunConfig,
    RunState,
    SavedAnswers,
    build_summary,
    case_record,
    render_summary,
    run_suites,
)
from canopy_operator.evals.suites import Suite, SuiteError, load_suites
from canopy_operator.sources.canopy.client import CanopyClient

EXIT_OK = 0
EXIT_ALL_FAILED = 1
EXIT_CONFIG_ERROR = 2
SUPPORTED_ENDPOINTS = ("/summarize",)
#: The largest answers file --answers reads.
ANSWERS_LIMIT = 256 * 1024 * 1024
CASE_EVENT = "evaluation_case"


class ConfigError(Exception):
    """Arguments or inputs that make the run impossible."""


def _log(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}, separators=(",", ":")), file=sys.stderr, flush=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="canopy-operator eval",
        description="Score the champion's and the challenger's answers on an evaluation dataset.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", type=Path, help="a /feedback/export file or one *_tests.yaml suite")
    source.add_argument("--suite", type=Path, help="a folder: every *_tests.yaml in it is run")
    answers = parser.add_mutually_exclusive_group(required=True)
    answers.add_argument("--backend", help="Canopy backend base URL, e.g. http://canopy-backend:8000")
    answers.add_argument("--answers", type=Path, help="re-score the answers an earlier run saved with --output")
    parser.add_argument("--judge-endpoint", help="OpenAI-compatible API base; without it only subset_of runs")
    parser.add_argument("--judge-model", help="judge model id (default: the suite's judge_model)")
    key = parser.add_mutually_exclusive_group()
    key.add_argument("--judge-api-key-file", type=Path, help="file holding the judge's bearer key")
    key.add_argument("--judge-api-key-env", metavar="VAR", help="environment variable holding the key")
    parser.add_argument("--output", type=Path, help="write the full results JSON here")
    parser.add_argument("--summary", type=Path, default=Path("/dev/termination-log"), help="summary JSON path")
    parser.add_argument("--threshold", type=float, default=0.5, help="pass when challenger_better_rate >= this")
    parser.add_argument("--seed", type=int, default=0, help="seed of the pairwise side shuffling")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per backend or judge request")
    parser.add_argument("--deadline", type=float, help="start no case after this many seconds")
    parser.add_argument(
        "--hard-deadline", type=float, help="cancel the cases still running after this many seconds, then summarise"
    )
    parser.add_argument(
        "--skip-unreviewed-judge",
        action="store_true",
        help="do not ask llm-as-judge::base about cases without an expected result (the pairwise judge still does)",
    )
    parser.add_argument("--concurrency", type=int, default=4, help="cases in flight")
    parser.add_argument(
        "--mode",
        choices=("auto", "ab", "single"),
        default="auto",
        help="ab: /summarize/ab; single: /summarize; auto: ab, or single without a challenger",
    )
    parser.add_argument("--judge-attempts", type=int, default=4, help="tries per judge request")
    parser.add_argument("--judge-backoff", type=float, default=0.5, help="first retry wait in seconds")
    return parser


def _api_key(args: argparse.Namespace) -> str | None:
    if args.judge_api_key_file is not None:
        try:
            return str(args.judge_api_key_file.read_text(encoding="utf-8")).strip() or None
        except OSError as exc:
            raise ConfigError(f"cannot read --judge-api-key-file: {exc.strerror or exc}") from exc
    if args.judge_api_key_env is not None:
        value = os.environ.get(args.judge_api_key_env, "").strip()
        if not value:
            raise ConfigError(f"environment variable {args.judge_api_key_env} is empty or unset")
        return value
    return None


def _check(args: argparse.Namespace) -> None:
    if not 0.0 <= args.threshold <= 1.0:
        raise ConfigError("--threshold must be between 0 and 1")
    if args.timeout <= 0 or args.concurrency < 1 or args.judge_attempts < 1 or args.judge_backoff < 0:
        raise ConfigError("--timeout, --concurrency, --judge-attempts must be positive, --judge-backoff >= 0")
    if args.deadline is not None and not args.deadline >= 0:
        raise ConfigError("--deadline must not be negative")
    if args.hard_deadline is not None and not args.hard_deadline > 0:
        raise ConfigError("--hard-deadline must be positive")


def _load(args: argparse.Namespace) -> list[Suite]:
    path: Path = args.suite if args.suite is not None else args.dataset
    if args.suite is not None and not path.is_dir():
        raise ConfigError(f"--suite {path} is not a folder")
    suites = load_suites(path)
    for suite in suites:
        if suite.endpoint.rstrip("/") not in SUPPORTED_ENDPOINTS:
            raise ConfigError(f"{suite.source}: endpoint {suite.endpoint!r} is not supported (only /summarize)")
    return suites


def _write(path: Path, text: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        _log("evaluation_write_failed", path=str(path), error=exc.strerror or str(exc))


def _results_document(summary: dict[str, Any], state: RunState, suites: Sequence[Suite]) -> str:
    document = {
        "summary": summary,
        "suites": [{"name": s.name, "source": s.source, "cases": len(s.tests)} for s in suites],
        "cases": [{**vars(result), "unreviewed": result.unreviewed} for result in state.results],
    }
    return json.dumps(document, ensure_ascii=False, indent=1)


def load_answers(path: Path) -> SavedAnswers:
    """The answers of an earlier run's ``--output`` document, by case index."""
    try:
        with path.open("rb") as handle:
            data = handle.read(ANSWERS_LIMIT + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read --answers {path}: {exc.strerror or exc}") from exc
    if len(data) > ANSWERS_LIMIT:
        raise ConfigError(f"--answers {path} is larger than {ANSWERS_LIMIT} bytes")
    try:
        document = json.loads(data)
    except ValueError as exc:
        raise ConfigError(f"--answers {path} is not JSON: {exc}") from exc
    cases = document.get("cases") if isinstance(document, dict) else None
    if not isinstance(cases, list):
        raise ConfigError(f"--answers {path}: no 'cases' list (write it with --output)")
    answers: dict[int, tuple[str, str, str | None]] = {}
    for position, case in enumerate(cases):
        if not isinstance(case, dict):
            raise ConfigError(f"--answers {path}: cases[{position}] is not an object")
        index, prompt = case.get("index"), case.get("prompt")
        champion, challenger = case.get("champion_answer"), case.get("challenger_answer")
        if champion is None:
            continue  # that case had no answers in the earlier run
        if not (
            isinstance(index, int)
            and isinstance(prompt, str)
            and isinstance(champion, str)
            and (challenger is None or isinstance(challenger, str))
        ):
            raise ConfigError(f"--answers {path}: cases[{position}] needs index, prompt and text answers")
        answers[index] = (prompt, champion, challenger)
    return SavedAnswers(answers)


def print_case(result: CaseResult, progress: Progress) -> None:
    """One finished case on stdout: its bounded results and the run's progress."""
    line = {
        "event": CASE_EVENT,
        "done": progress.done,
        "total": progress.total,
        "eta_seconds": progress.eta_seconds,
        "case": case_record(result),
    }
    print(json.dumps(line, separators=(",", ":"), ensure_ascii=False), flush=True)


async def _run(
    args: argparse.Namespace, suites: list[Suite], api_key: str | None, saved: SavedAnswers | None
) -> RunState:
    config = _config(args)

    async def with_judge(source: AnswerSource) -> RunState:
        if not args.judge_endpoint:
            return await run_suites(suites, source, None, config, on_case=print_case)
        judge_config = JudgeConfig(
            endpoint=args.judge_endpoint,
            model=args.judge_model or "llama32",
            api_key=api_key,
            timeout=args.timeout,
            max_attempts=args.judge_attempts,
            backoff_initial=args.judge_backoff,
        )
        async with JudgeClient(judge_config) as judge:
            return await run_suites(suites, source, judge, config, on_case=print_case)

    if saved is not None:
        return await with_judge(saved)
    async with CanopyClient(args.backend, timeout=args.timeout) as backend:
        return await with_judge(BackendAnswers(backend, args.mode))


def _config(args: argparse.Namespace) -> RunConfig:
    return RunConfig(
        threshold=args.threshold,
        seed=args.seed,
        concurrency=args.concurrency,
        deadline=args.deadline,
        hard_deadline=args.hard_deadline,
        mode=args.mode,
        judge_model=args.judge_model,
        judge_unreviewed=not args.skip_unreviewed_judge,
    )


def _warnings(args: argparse.Namespace, suites: Sequence[Suite], state: RunState) -> list[str]:
    warnings = [w for suite in suites for w in suite.warnings] + state.warnings
    if not args.judge_endpoint and any(suite.judge is not None for suite in suites):
        warnings.insert(0, "no --judge-endpoint: llm-as-judge::base and the pairwise judge were skipped")
    return warnings


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``canopy-operator eval`` (``argv`` without the ``eval`` word)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error argparse has already printed
        return exc.code if isinstance(exc.code, int) else EXIT_CONFIG_ERROR
    started = time.monotonic()
    try:
        _check(args)
        suites = _load(args)
        api_key = _api_key(args)
        saved = load_answers(args.answers) if args.answers is not None else None
    except (ConfigError, SuiteError) as exc:
        _log("evaluation_failed", error=str(exc))
        _write(args.summary, json.dumps({"error": str(exc)[:1000]}))
        return EXIT_CONFIG_ERROR
    cases = sum(len(suite.tests) for suite in suites)
    _log("evaluation_started", total_cases=cases, suites=len(suites), judge=bool(args.judge_endpoint))
    state = asyncio.run(_run(args, suites, api_key, saved))
    scorer_errors = [error for suite in suites for error in suite.errors]
    for error in scorer_errors:
        _log("evaluation_scorer_error", error=error)
    summary = build_summary(
        state, _config(args), _warnings(args, suites, state), time.monotonic() - started, suites, scorer_errors
    )
    if args.output is not None:
        _write(args.output, _results_document(summary, state, suites))
    text = render_summary(summary)
    _write(args.summary, text)
    _log(
        "evaluation_finished",
        **{k: summary[k] for k in ("cases", "scored", "errors", "mode", "passed")},
        challenger_better_rate=summary["challenger_better_rate"],
    )
    unanswered = sum(1 for result in state.results if result.error is not None)
    return EXIT_ALL_FAILED if cases and unanswered == cases else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
