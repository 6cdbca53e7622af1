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

The export names ``judge_prompt.txt`` although no such file travels with it, so a template file that is
missing falls back to :data:`DEFAULT_JUDGE_TEMPLATE` and the suite records a warning saying so.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

LLM_AS_JUDGE = "llm-as-judge::base"
SUBSET_OF = "basic::subset_of"
KNOWN_SCORERS = (LLM_AS_JUDGE, SUBSET_OF)
SUITE_GLOB = "*_tests.yaml"
#: libyaml's loader when PyYAML was built with it (ten times faster on a 10 000-case dataset).
_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
DEFAULT_SCORE_REGEXES = ("Answer: (A|B|C|D|E)",)

#: The judge template used when the suite names a template file that is not there (the exported dataset
#: always names ``judge_prompt.txt``). Same placeholders and grades as the course's template.
DEFAULT_JUDGE_TEMPLATE = """\
You compare a generated answer with an expected answer to the same request.
Ignore differences in style, grammar and punctuation; compare only the content.

[Request]: {input_query}
[Expected answer]: {expected_answer}
[Generated answer]: {generated_answer}

Pick exactly one option:
(A) The generated answer is a subset of the expected answer and fully consistent with it.
(B) The generated answer is a superset of the expected answer and fully consistent with it.
(C) The generated answer contains all the same details as the expected answer.
(D) The generated answer and the expected answer disagree.
(E) The answers differ, but the differences do not matter for the request.

End your reply with a line of the form "Answer: <letter>".
"""


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
    """The file the template came from, ``inline``, or ``builtin`` (the named file was missing)."""


@dataclass(frozen=True)
class Suite:
    """A loaded suite."""

    name: str
    description: str
    endpoint: str
    tests: tuple[EvalCase, ...]
    judge: JudgeParams | None = None
    subset_of: bool = False
    model: str | None = None
    source: str = "<memory>"
    warnings: tuple[str, ...] = field(default_factory=tuple)


def _text(raw: Mapping[str, Any], key: str, where: str, *, default: str | None = None) -> str:
    value = raw.get(key, default)
    if value is None and default is not None:
        return default
    if not isinstance(value, str):
        raise SuiteError(f"{where}: '{key}' must be a string, got {type(value).__name__}")
    return value


def _load_template(value: str, base_dir: Path | None, where: str) -> tuple[str, str, str | None]:
    """The template text, where it came from and an optional warning."""
    if not value.endswith(".txt"):
        return value, "inline", None
    if base_dir is not None:
        path = base_dir / value
        if path.is_file():
            return path.read_text(encoding="utf-8"), str(path), None
    warning = f"built-in judge template used: {value!r} is not beside {where}"
    return DEFAULT_JUDGE_TEMPLATE, "builtin", warning


def _judge_params(raw: object, base_dir: Path | None, where: str) -> tuple[JudgeParams, str | None]:
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise SuiteError(f"{where}: '{LLM_AS_JUDGE}' must be a mapping")
    inner = f"{where}: {LLM_AS_JUDGE}"
    regexes = raw.get("judge_score_regexes") or list(DEFAULT_SCORE_REGEXES)
    if not isinstance(regexes, list) or not all(isinstance(r, str) for r in regexes):
        raise SuiteError(f"{inner}: 'judge_score_regexes' must be a list of strings")
    template, source, warning = _load_template(
        _text(raw, "prompt_template", inner, default="judge_prompt.txt"), base_dir, inner
    )
    params = JudgeParams(
        judge_model=_text(raw, "judge_model", inner, default="llama32"),
        prompt_template=template,
        score_regexes=tuple(regexes),
        template_source=source,
    )
    return params, warning


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
    warnings = [f"{source}: unknown scorer {name!r} ignored" for name in scoring if name not in KNOWN_SCORERS]
    judge = None
    if LLM_AS_JUDGE in scoring:
        judge, warning = _judge_params(scoring[LLM_AS_JUDGE], base_dir, source)
        if warning:
            warnings.append(warning)
    model = raw.get("model")
    return Suite(
        name=_text(raw, "name", source, default=Path(source).stem),
        description=_text(raw, "description", source, default=""),
        endpoint=_text(raw, "endpoint", source, default="/summarize"),
        tests=_cases(raw.get("tests"), source),
        judge=judge,
        subset_of=SUBSET_OF in scoring,
        model=None if model is None else str(model),
        source=source,
        warnings=tuple(warnings),
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
