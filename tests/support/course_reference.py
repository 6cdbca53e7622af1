"""An independent reference of the course pipeline's scoring, for the parity tests.

Written from the course's description and Llama Stack's scoring functions (not from the operator's code):
each suite file is one scoring call over rows ``{input_query, generated_answer, expected_answer}``;
``basic::subset_of`` scores ``1.0 if expected_answer in generated_answer else 0.0`` and aggregates
``accuracy`` (sum / count, with ``num_correct`` and ``num_total``); ``llm-as-judge::base`` fills the
template with ``str.format``, asks the judge, and keeps ``re.search(regex, reply).group(1)`` of the first
regex that matches, else None. Only the standard library and PyYAML.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml


def score_subset(row: dict[str, str]) -> float:
    return 1.0 if row["expected_answer"] in row["generated_answer"] else 0.0


def score_judge(template: str, regexes: list[str], row: dict[str, str], ask: Callable[[str], str]) -> Any:
    reply = ask(template.format(**row))
    for regex in regexes:
        found = re.search(regex, reply)
        if found:
            return found.group(1)
    return None


def accuracy(scores: list[float]) -> dict[str, Any]:
    correct = sum(scores)
    return {"accuracy": correct / len(scores), "num_correct": correct, "num_total": len(scores)}


def categorical(scores: list[Any]) -> dict[str, int]:
    keys = [str(s) for s in scores]
    return {k: keys.count(k) for k in sorted(set(keys))}


def score_folder(folder: Path, answers: dict[int, tuple[str, str]], ask: Callable[[str], str]) -> dict[str, Any]:
    """Per case ``[unreviewed, champion subset, champion grade, challenger subset, challenger grade]`` and
    per suite the aggregates, for every ``*_tests.yaml`` of ``folder`` in name order."""
    cases: dict[int, list[Any]] = {}
    suites: dict[str, Any] = {}
    index = 0
    for path in sorted(folder.glob("*_tests.yaml")):
        suite = yaml.safe_load(path.read_text(encoding="utf-8"))
        params = suite["scoring_params"]["llm-as-judge::base"]
        template = (folder / params["prompt_template"]).read_text(encoding="utf-8")
        per_side: dict[str, dict[str, list[Any]]] = {
            s: {"subset": [], "grade": [], "reviewed": []} for s in ("champion", "challenger")
        }
        unreviewed = 0
        for test in suite["tests"]:
            expected = test["expected_result"]
            row_unreviewed = not expected.strip()
            unreviewed += row_unreviewed
            cases[index] = [row_unreviewed]
            for side_position, side in enumerate(("champion", "challenger")):
                row = {
                    "input_query": test["prompt"],
                    "generated_answer": answers[index][side_position],
                    "expected_answer": expected,
                }
                subset = score_subset(row)
                grade = score_judge(template, params["judge_score_regexes"], row, ask)
                cases[index] += [subset, grade]
                per_side[side]["subset"].append(subset)
                per_side[side]["grade"].append(grade)
                if not row_unreviewed:
                    per_side[side]["reviewed"].append(subset)
            index += 1
        suites[suite["name"]] = {
            "cases": len(suite["tests"]),
            "unreviewed": unreviewed,
            **{
                side: {
                    "subset_of": accuracy(values["subset"]),
                    "subset_of_reviewed": accuracy(values["reviewed"]),
                    "llm_as_judge": {"categorical_count": categorical(values["grade"])},
                }
                for side, values in per_side.items()
            },
        }
    return {"cases": cases, "suites": suites}
