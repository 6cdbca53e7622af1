"""The ``GET /feedback/export`` evaluation dataset: render it exactly as the backend does, and parse it back.

The backend builds a dict and dumps it with ``yaml.dump(..., default_flow_style=False, allow_unicode=True,
sort_keys=False)``; :func:`render_export` does the same, so its output is byte-for-byte the backend's.
:func:`parse_export` accepts exactly that document (any thumbs-down prompts) and nothing else.

The round trip is exact for every text but one quirk of PyYAML: U+0085 (NEL) is written raw inside single
quotes and read back as a folded line break, i.e. a space. The backend's export has the same loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml

DATASET_NAME = "feedback_eval_tests"
DATASET_DESCRIPTION = "Tests generated from negative user feedback on summarization."
DATASET_ENDPOINT = "/summarize"
JUDGE_SCORE_REGEX = "Answer: (A|B|C|D|E)"


def _scoring_params() -> dict[str, Any]:
    return {
        "llm-as-judge::base": {
            "judge_model": "llama32",
            "prompt_template": "judge_prompt.txt",
            "type": "llm_as_judge",
            "judge_score_regexes": [JUDGE_SCORE_REGEX],
        },
        "basic::subset_of": None,
    }


def _header() -> dict[str, Any]:
    return {
        "name": DATASET_NAME,
        "description": DATASET_DESCRIPTION,
        "endpoint": DATASET_ENDPOINT,
        "scoring_params": _scoring_params(),
    }


def render_export(prompts: Sequence[str]) -> str:
    """The export for these thumbs-down ``input_text`` values, in order, as the backend renders it."""
    dataset = _header()
    dataset["tests"] = [{"prompt": prompt, "expected_result": ""} for prompt in prompts]
    return yaml.dump(dataset, default_flow_style=False, allow_unicode=True, sort_keys=False)


def parse_export(text: str) -> list[str]:
    """The prompts of an export; ``ValueError`` naming the first thing that is not the backend's shape."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"export is not valid YAML: {_one_line(str(exc))}") from exc
    if not isinstance(document, dict):
        raise ValueError(f"export must be a mapping, got {type(document).__name__}")
    expected_keys = [*_header(), "tests"]
    if list(document) != expected_keys:
        raise ValueError(f"export keys must be {expected_keys} in this order, got {list(document)}")
    for key, value in _header().items():
        if document[key] != value:
            raise ValueError(f"export field {key!r} must be {value!r}, got {document[key]!r}")
    return _parse_tests(document["tests"])


def _parse_tests(tests: object) -> list[str]:
    if not isinstance(tests, list):
        raise ValueError(f"export field 'tests' must be a list, got {type(tests).__name__}")
    prompts: list[str] = []
    for index, test in enumerate(tests):
        if not isinstance(test, dict) or list(test) != ["prompt", "expected_result"]:
            raise ValueError(f"export tests[{index}] must be a mapping with keys prompt, expected_result")
        if not isinstance(test["prompt"], str):
            raise ValueError(f"export tests[{index}].prompt must be a string, got {type(test['prompt']).__name__}")
        if test["expected_result"] != "":
            raise ValueError(f"export tests[{index}].expected_result must be empty, got {test['expected_result']!r}")
        prompts.append(test["prompt"])
    return prompts


def _one_line(text: str) -> str:
    return " ".join(text.split())
