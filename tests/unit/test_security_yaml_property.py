"""Rule 7 of the security model as a property: every edit of a values file loads where it is read, as intended.

Adversarial prompts (every YAML indicator, quotes, ``?``, ``: ``, `` #``, leading and trailing spaces, tabs,
unicode, line breaks including ``\\x85`` and ``\\u2028``, very long lines) are written into block, flow and
folded values files. Each result must load with PyYAML ``safe_load`` (the backend's loader) and with Helm's
parser (``sigs.k8s.io/yaml`` through hack/helmyaml, run once for the whole batch) to exactly the intended managed
values and the original everything-else, and satisfy the chart's schema facts, checked here on plain data
independently of the operator's own checker.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from canopy_operator.core.values import ManagedKeys, edit_values
from tests.support.envtest import running_in_ci
from tests.support.values_files import REALISTIC, HelmLoad, HelmParserUnavailable, build_helm_parser

pytestmark = pytest.mark.timeout(600)  # a cold build of the Helm parser downloads modules

URL = 'LLAMA_STACK_URL: "http://llama-stack:8321"\n'
FILES = {
    "block": URL + "summarize:\n  enabled: true\n  model: llama32\n  prompt: |\n    Sum up:\n",
    "block-4-spaces-crlf": URL.replace("\n", "\r\n") + "summarize:\r\n    enabled: true\r\n    model: m\r\n",
    "flow": URL + "summarize: {enabled: true, model: llama32, prompt: 'Sum up.'}\nfeedback: {enabled: false}\n",
    "flow-with-challenger": (
        URL + 'summarize: {model: m, enabled: yes, prompt: a, prompt_b: "b"}  # c\nab_testing: {enabled: true}\n'
    ),
    "folded": (
        URL + "summarize:\n  enabled: true\n  model: llama32\n"
        "  prompt: >-\n    Sum up\n    briefly.\n\n    Go.\nfeedback:\n  enabled: true\n"
    ),
    "folded-challenger": (
        URL + "summarize:\n  enabled: true\n  model: m\n"
        "  prompt_b: >\n    old\n    text\n\nab_testing:\n  enabled: false\n"
    ),
    "keep-chomping-and-comments": (
        URL + "# values\nsummarize:   # the feature\n  enabled: true\n\n  model: m  # model\n"
        "  prompt: |+\n    kept\n\n\n  # next\n  max_tokens: 5\n"
    ),
    "explicit-indent": (
        URL + "summarize:\n  enabled: true\n  model: m\n  prompt: |2\n      indented\n    less\n"
        "  prompt_b: |-\n    b\n       \nother: &o {x: [1, 2]}\ncopy: *o\n"
    ),
    "document-markers": "---\n" + URL + "summarize: {enabled: false}\nfeedback:\n  enabled: false\n...\n",
    "realistic": REALISTIC,
}
INDICATORS = [*"-?:,[]{}#&*!|>'\"%@`~=<\\", ": ", " #", "? ", "- ", "...", "---", "<<"]
BREAKS = ["\n", "\r", "\r\n", "\x85", "\u2028", "\u2029", "\t", " ", "  "]
WORDS = [
    "a",
    "Why",
    "yes",
    "no",
    "y",
    "null",
    "~",
    "0x1F",
    "1e3",
    "2001-12-14",
    ".nan",
    "é",
    "語",
    "🙂",
    "\ufeff",
    "\0",
]

tokens = st.sampled_from(INDICATORS + BREAKS + WORDS)
adversarial = st.lists(tokens, max_size=25).map("".join)
padded = st.builds(
    lambda lead, core, trail: lead + core + trail,
    st.sampled_from(["", " ", "\t", "\n"]),
    adversarial,
    st.sampled_from(["", " ", "\n", "\n\n", "?", ":", " #"]),
)
line = st.lists(st.sampled_from([*INDICATORS, *WORDS, " ", "\t"]), max_size=8).map("".join)
lines = st.lists(line, min_size=2, max_size=5).map("\n".join)
long_line = st.builds(lambda n, tail: "word " * n + tail, st.integers(200, 2000), st.sampled_from(["", "?", ": x"]))
prompts = st.one_of(padded, lines, long_line, st.text(max_size=40))
flags = st.one_of(st.none(), st.booleans())

CHART = {
    "summarize": {"enabled", "model", "prompt", "max_tokens", "temperature", "prompt_b"},
    "feedback": {"enabled"},
    "ab_testing": {"enabled"},
}


def schema_facts(values: Any) -> list[str]:
    """The chart's schema facts (canopy-contract.md section 3) on plain loaded data; empty when all hold."""
    if not isinstance(values, dict):
        return ["top level: not a mapping"]
    problems = [] if values.get("LLAMA_STACK_URL") else ["LLAMA_STACK_URL missing"]
    for section, allowed in CHART.items():
        if section not in values:
            continue
        body = values[section]
        if not isinstance(body, dict) or "enabled" not in body:
            problems.append(f"{section}: no enabled")
            continue
        problems += [f"{section}.{key}: not allowed" for key in set(body) - allowed]
        if not isinstance(body["enabled"], bool):
            problems.append(f"{section}.enabled: not a boolean")
    summarize = values.get("summarize")
    if isinstance(summarize, dict) and summarize.get("enabled") is True and not summarize.get("model"):
        problems.append("summarize.model missing")
    return problems


def managed(values: dict[str, Any]) -> ManagedKeys:
    summarize, feedback, ab = (values.get(s) or {} for s in ("summarize", "feedback", "ab_testing"))
    return ManagedKeys(summarize.get("prompt"), summarize.get("prompt_b"), feedback.get("enabled"), ab.get("enabled"))


def others(values: dict[str, Any]) -> dict[str, Any]:
    rest = {k: v for k, v in values.items() if k not in ("feedback", "ab_testing")}
    rest["summarize"] = {k: v for k, v in rest.get("summarize", {}).items() if k not in ("prompt", "prompt_b")}
    return rest


@pytest.fixture(scope="module")
def helm_load() -> HelmLoad:
    try:
        return build_helm_parser()
    except HelmParserUnavailable as exc:
        if running_in_ci():
            pytest.fail(f"Helm's parser is required under CI: {exc}", pytrace=False)
        pytest.skip(str(exc))


def test_every_edit_loads_as_intended_with_pyyaml_and_helm_and_satisfies_the_chart(helm_load: HelmLoad) -> None:
    written: list[tuple[str, str, ManagedKeys]] = []

    @settings(
        max_examples=300,
        deadline=timedelta(seconds=2),
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(
        name=st.sampled_from(sorted(FILES)),
        prompt=st.one_of(st.none(), prompts),
        prompt_b=st.one_of(st.none(), prompts),
        feedback=flags,
        ab=flags,
    )
    def edit(name: str, prompt: str | None, prompt_b: str | None, feedback: bool | None, ab: bool | None) -> None:
        original = FILES[name]
        desired = ManagedKeys(prompt, prompt_b, feedback, ab)
        out = edit_values(original, desired)
        loaded = yaml.safe_load(out)
        assert managed(loaded) == desired
        assert others(loaded) == others(yaml.safe_load(original))
        assert schema_facts(loaded) == []
        assert edit_values(out, desired) is out
        written.append((name, out, desired))

    edit()
    results = helm_load([out for _, out, _ in written])
    wrong = []
    for (name, out, desired), result in zip(written, results, strict=True):
        values = result.get("values")
        if values is None or managed(values) != desired or schema_facts(values):
            wrong.append(f"{name}: {desired!r}\n{out}\n-> {result}")
    assert not wrong, f"{len(wrong)} of {len(written)} edits load otherwise in Helm; first:\n{wrong[0]}"


def test_helms_parser_rejects_what_the_old_editor_wrote(helm_load: HelmLoad) -> None:
    """The helper really is a strict parser: the file of finding 5 fails in it, its fix loads."""
    broken, fixed = helm_load(
        [
            URL + "summarize: {enabled: true, model: m, prompt: Why?}\n",
            URL + "summarize: {enabled: true, model: m, prompt: 'Why?'}\n",
        ]
    )
    assert "error" in broken
    assert fixed["values"]["summarize"]["prompt"] == "Why?"
