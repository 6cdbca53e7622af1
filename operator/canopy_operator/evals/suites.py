"""Evaluation suites: the backend's ``/feedback/export`` dataset and the course's ``*_tests.yaml`` files.

Both share one shape (contract sections 1.2 and 5)::

    name: feedback_eval_tests
    description: ...
    endpoint: /summarize
    scoring_params:
      llm-as-judge::base:
        judge_model: llama32
        prompt_template: judge_prompt.txt     # a value ending in .txt names a file beside the suite
        type: llm_as_judge
        judge_score_regexes: ['Answer: (A|B|C|D|E)']
      basic::subset_of: null                  # present = enabled; it takes no parameters
    tests:
    - prompt: ...
      expected_result: ''
    model: ...                                # optional, informational

A scorer that cannot run as the suite asks (a template file that is not beside the suite or cannot be
read, a template or regex the course's scorer would fail on, an unknown scorer or aggregation) is recorded
in :attr:`Suite.errors` and left out; the other scorers of the suite still run. The operator ships its
template as ``judge_prompt.txt`` beside every dataset it exports (``core.evaluation.template``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from canopy_operator.core.evaluation.template import JUDGE_TEMPLATE
from canopy_operator.evals.course import check_regexes, check_template

LLM_AS_JUDGE = "llm-as-judge::base"
SUBSET_OF = "basic::subset_of"
KNOWN_SCORERS = (LLM_AS_JUDGE, SUBSET_OF)
SUITE_GLOB = "*_tests.yaml"
#: libyaml's loader when PyYAML was built with it (ten times faster on a 10 000-case dataset).
_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
DEFAULT_SCORE_REGEXES = ("Answer: (A|B|C|D|E)",)
#: Llama Stack's aggregation functions, by the names a suite's ``aggregation_functions`` uses.
AGGREGATIONS = ("accuracy", "average", "categorical_count", "median")
#: The template the operator ships beside its datasets (kept here under its old name for callers).
DEFAULT_JUDGE_TEMPLATE = JUDGE_TEMPLATE


class SuiteError(ValueError):
    """A suite file that cannot be used, naming the file and the field."""


@dataclass(frozen=True)
class EvalCase:
    """One test: the input sent to the backend and the answer expected ('' when there is none)."""

    prompt: str
    expected_result: str = ""


@dataclass(frozen=True)
class JudgeParams:
    """Settings of the ``llm-as-judge::base`` scorer, with the template text resolved."""

    judge_model: str
    prompt_template: str
    score_regexes: tuple[str, ...]
    template_source: str
    """The file the template came from, or ``inline``."""
    aggregations: tuple[str, ...] = ()
    """``aggregation_functions`` of the suite (Llama Stack computes none for this scorer by default)."""


@dataclass(frozen=True)
class Suite:
    """A loaded suite."""

    name: str
    description: str
    endpoint: str
    tests: tuple[EvalCase, ...]
    judge: JudgeParams | None = None
    subset_of: bool = False
    subset_aggregations: tuple[str, ...] = ("accuracy",)
    """``aggregation_functions`` of ``basic::subset_of`` (accuracy unless the suite names others)."""
    model: str | None = None
    source: str = "<memory>"
    warnings: tuple[str, ...] = field(default_factory=tuple)
    errors: tuple[str, ...] = field(default_factory=tuple)
    """Scorers of the suite that cannot run, each with why (reported in the summary, never a crash)."""


def _text(raw: Mapping[str, Any], key: str, where: str, *, default: str | None = None) -> str:
    value = raw.get(key, default)
    if value is None and default is not None:
        return default
    if not isinstance(value, str):
        raise SuiteError(f"{where}: '{key}' must be a string, got {type(value).__name__}")
    return value


class ScorerError(ValueError):
    """One scorer of a suite cannot run; the rest of the suite can."""


def _load_template(value: str, base_dir: Path | None, where: str) -> tuple[str, str]:
    """The template text and where it came from; a ``*.txt`` value names a file beside the suite."""
    if not value.endswith(".txt"):
        return value, "inline"
    if base_dir is None:
        raise ScorerError(f"{where}: prompt_template {value!r} names a file, but the suite has no folder")
    path = base_dir / value
    try:
        return path.read_text(encoding="utf-8"), str(path)
    except FileNotFoundError as exc:
        raise ScorerError(f"{where}: prompt_template {value!r} is not beside the suite ({base_dir})") from exc
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise ScorerError(f"{where}: prompt_template {value!r} cannot be read: {reason}") from exc


def _aggregations(raw: Mapping[str, Any], where: str, default: tuple[str, ...]) -> tuple[str, ...]:
    value = raw.get("aggregation_functions")
    if value is None:
        return default
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ScorerError(f"{where}: 'aggregation_functions' must be a list of names")
    unknown = [v for v in value if v not in AGGREGATIONS]
    if unknown:
        raise ScorerError(f"{where}: unknown aggregation function {unknown[0]!r} (known: {', '.join(AGGREGATIONS)})")
    return tuple(value)


def _judge_params(raw: object, base_dir: Path | None, where: str) -> JudgeParams:
    if raw is None:
        raw = {}
    inner = f"{where}: {LLM_AS_JUDGE}"
    if not isinstance(raw, Mapping):
        raise ScorerError(f"{inner} must be a mapping")
    regexes = raw.get("judge_score_regexes") or list(DEFAULT_SCORE_REGEXES)
    if not isinstance(regexes, list) or not all(isinstance(r, str) for r in regexes):
        raise ScorerError(f"{inner}: 'judge_score_regexes' must be a list of strings")
    try:
        template_name = _text(raw, "prompt_template", inner, default="judge_prompt.txt")
        model = _text(raw, "judge_model", inner, default="llama32")
    except SuiteError as exc:
        raise ScorerError(str(exc)) from exc
    template, source = _load_template(template_name, base_dir, inner)
    try:
        check_template(template)
        check_regexes(regexes)
    except ValueError as exc:
        raise ScorerError(f"{inner}: {exc}") from exc
    return JudgeParams(
        judge_model=model,
        prompt_template=template,
        score_regexes=tuple(regexes),
        template_source=source,
        aggregations=_aggregations(raw, inner, ()),
    )


def _cases(raw: object, where: str) -> tuple[EvalCase, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise SuiteError(f"{where}: 'tests' must be a list")
    cases = []
    for index, item in enumerate(raw):
        if not isinstance(item, Mapping):
            raise SuiteError(f"{where}: tests[{index}] must be a mapping with 'prompt'")
        expected = item.get("expected_result")
        cases.append(
            EvalCase(
                prompt=_text(item, "prompt", f"{where}: tests[{index}]"),
                expected_result="" if expected is None else str(expected),
            )
        )
    return tuple(cases)


def parse_suite(text: str, *, base_dir: Path | None = None, source: str = "<memory>") -> Suite:
    """Parse one suite document; ``base_dir`` is where a ``*.txt`` template is looked up."""
    try:
        raw = yaml.load(text, Loader=_LOADER)  # noqa: S506 - a safe loader (C or Python)
    except yaml.YAMLError as exc:
        raise SuiteError(f"{source}: not valid YAML: {exc}") from exc
    if not isinstance(raw, Mapping):
        raise SuiteError(f"{source}: a suite must be a YAML mapping")
    scoring = raw.get("scoring_params") or {}
    if not isinstance(scoring, Mapping):
        raise SuiteError(f"{source}: 'scoring_params' must be a mapping")
    warnings: list[str] = []
    errors = [
        f"{source}: unknown scorer {name!r} (known: {', '.join(KNOWN_SCORERS)}); it was not run"
        for name in scoring
        if name not in KNOWN_SCORERS
    ]
    judge = None
    if LLM_AS_JUDGE in scoring:
        try:
            judge = _judge_params(scoring[LLM_AS_JUDGE], base_dir, source)
        except ScorerError as exc:
            errors.append(f"{exc}; {LLM_AS_JUDGE} was not run")
    subset_aggregations: tuple[str, ...] = ("accuracy",)
    subset_enabled = SUBSET_OF in scoring
    subset_raw = scoring.get(SUBSET_OF)
    if subset_enabled and subset_raw is not None:
        try:
            if not isinstance(subset_raw, Mapping):
                raise ScorerError(f"{source}: {SUBSET_OF} must be null or a mapping")
            subset_aggregations = _aggregations(subset_raw, f"{source}: {SUBSET_OF}", subset_aggregations)
        except ScorerError as exc:
            errors.append(f"{exc}; {SUBSET_OF} was not run")
            subset_enabled = False
    model = raw.get("model")
    return Suite(
        name=_text(raw, "name", source, default=Path(source).stem),
        description=_text(raw, "description", source, default=""),
        endpoint=_text(raw, "endpoint", source, default="/summarize"),
        tests=_cases(raw.get("tests"), source),
        judge=judge,
        subset_of=subset_enabled,
        subset_aggregations=subset_aggregations,
        model=None if model is None else str(model),
        source=source,
        warnings=tuple(warnings),
        errors=tuple(errors),
    )


def load_suite_file(path: Path) -> Suite:
    """Load one suite file (the exported dataset or a ``*_tests.yaml``)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SuiteError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    return parse_suite(text, base_dir=path.parent, source=str(path))


def load_suites(path: Path) -> list[Suite]:
    """A file loads itself; a folder loads every ``*_tests.yaml`` in it, sorted by name."""
    if path.is_dir():
        files = sorted(path.glob(SUITE_GLOB))
        if not files:
            raise SuiteError(f"{path}: no {SUITE_GLOB} files in the folder")
        return [load_suite_file(file) for file in files]
    return [load_suite_file(path)]
