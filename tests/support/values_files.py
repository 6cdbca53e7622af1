"""Human-maintained Helm values files for tests, a line-diff helper, hostile texts, and Helm's own parser."""

from __future__ import annotations

import difflib
import json
import shutil
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, cast

import pytest

from canopy_operator.delivery.configmap import ConfigMapDelivery
from canopy_operator.k8s.gateway import ConfigMapView, Gateway
from canopy_operator.yamlsplice import bounded

ROOT = Path(__file__).resolve().parents[2]
HELMYAML_SCRIPT = ROOT / "hack" / "helmyaml.sh"

#: A values-test.yaml as people keep it: comments everywhere, an anchor and its alias, quoted strings,
#: block scalars with a blank separator line, a flow list, document markers.
REALISTIC = """\
---
# Canopy backend values for the *test* environment.
# Owner: team-genaiops  (edit via PR please)

LLAMA_STACK_URL: "http://llama-stack.user1-test.svc.cluster.local:8321"   # required by the chart

image:
  repository: quay.io/example/canopy-be
  tag: '0.16'        # pinned, see CHANGELOG
  pullPolicy: IfNotPresent

summarize:
  enabled: true
  model: &model llama32
  max_tokens: 512
  temperature: 0.2
  # The champion prompt: what users get today.
  prompt: |
    Summarize the following text in a clear and detailed manner:

  # The challenger (A/B test running since Monday).
  prompt_b: |-   # challenger
    Provide a brief, concise summary:
    keep it under three sentences.

feedback:
  enabled: true   # thumbs up/down in the UI

ab_testing:
  enabled: true

information-search:
  enabled: false
  sources: [docs, "wiki pages", 'tickets']

student-assistant:
  enabled: false
  model: *model
  greeting: >
    Hello! I am your
    study buddy.
...
"""

#: The human-maintained values file before any experiment: comments, anchors, quoting, block scalars.
BEFORE_EXPERIMENT = (
    REALISTIC.replace(
        "  # The challenger (A/B test running since Monday).\n"
        "  prompt_b: |-   # challenger\n"
        "    Provide a brief, concise summary:\n"
        "    keep it under three sentences.\n\n",
        "",
    )
    .replace("feedback:\n  enabled: true   #", "feedback:\n  enabled: false  #")
    .replace("ab_testing:\n  enabled: true", "ab_testing:\n  enabled: false")
)


def count_parses(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """From now on, the length of every text PyYAML's scanner and parser read is appended to the list returned
    (every bounded parse makes one loader)."""
    seen: list[int] = []

    class Counting(bounded._BoundedLoader):
        def __init__(self, text: str, limits: bounded.Limits) -> None:
            seen.append(len(text))
            super().__init__(text, limits)

    monkeypatch.setattr(bounded, "_BoundedLoader", Counting)
    return seen


def changed_lines(before: str, after: str) -> tuple[list[str], list[str]]:
    """Lines only in ``before`` and lines only in ``after`` (each keeps its line ending)."""
    removed: list[str] = []
    added: list[str] = []
    for line in difflib.ndiff(before.splitlines(keepends=True), after.splitlines(keepends=True)):
        if line.startswith("- "):
            removed.append(line[2:])
        elif line.startswith("+ "):
            added.append(line[2:])
    return removed, added


# Hostile texts (finding 2 of #14): each follows ``head``, a valid values file.


def alias_bomb(head: str) -> str:
    """ "Billion laughs": nine levels of nine aliases each, 9**9 strings once expanded (under 555 bytes)."""
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    return head + "\n".join(lines) + "\n"


def deep_flow_nesting(head: str, depth: int) -> str:
    """``x: [[[...]]]``, ``depth`` levels (2 bytes each)."""
    return head + "x: " + "[" * depth + "]" * depth + "\n"


def deep_block_nesting(head: str, depth: int) -> str:
    """``x:`` holding ``depth`` nested block mappings (with the top level: ``depth + 1`` deep)."""
    lines = [f"{'  ' * level}k{level}:" for level in range(depth)]
    return head + "x:\n" + "\n".join("  " + line for line in lines[:-1]) + f"\n{'  ' * depth}k: v\n"


def many_aliases(head: str, count: int) -> str:
    """One anchor and ``count`` aliases to it."""
    return head + "base: &base v\nrefs: [" + ", ".join(["*base"] * count) + "]\n"


# Helm's parser (rule 7 of the security model): hack/helmyaml, built once per version into a cache.


class HelmParserUnavailable(Exception):
    """Go is missing or the helper did not build; the message says why."""


HelmLoad = Callable[[list[str]], list[dict[str, Any]]]
"""YAML texts -> what Helm makes of each: ``{"values": {...}}`` or ``{"error": "..."}``, in order."""


def build_helm_parser(timeout: float = 600) -> HelmLoad:
    """Build (or find in the cache) hack/helmyaml and return a function that runs it once per batch."""
    if shutil.which("go") is None:
        raise HelmParserUnavailable("Go is not installed: it builds Helm's values parser (hack/helmyaml.sh)")
    try:
        built = subprocess.run(
            ["bash", str(HELMYAML_SCRIPT)], capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        raise HelmParserUnavailable(f"hack/helmyaml.sh did not finish within {timeout:.0f}s") from None
    if built.returncode != 0:
        raise HelmParserUnavailable(f"hack/helmyaml.sh failed: {built.stderr.strip()[-2000:]}")
    binary = built.stdout.strip()

    def load(texts: list[str]) -> list[dict[str, Any]]:
        done = subprocess.run(
            [binary, "-batch"], input=json.dumps(texts), capture_output=True, text=True, timeout=120, check=True
        )
        results: list[dict[str, Any]] = json.loads(done.stdout)
        assert len(results) == len(texts)
        return results

    return load


# The ConfigMap delivery over a stand-in API server (unit tests of the canopy-config path).

KEY = "canopy-config.yaml"


class FakeGateway:
    """One ConfigMap and one Deployment annotation; records writes."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.writes: list[str] = []
        self.annotation: str | None = None
        self.annotation_reads = 0
        self.cm_annotations: dict[str, str] = {}
        """The ConfigMap's own annotations (a start record lives here)."""

    async def get_configmap(self, namespace: str, name: str) -> ConfigMapView:
        notes = dict(self.cm_annotations)
        return ConfigMapView(
            name=name, namespace=namespace, data={KEY: self.text}, resource_version="1", annotations=notes
        )

    async def write_configmap_key(
        self, view: ConfigMapView, key: str, text: str, *, annotations: Mapping[str, str | None] | None = None
    ) -> str:
        self.writes.append(text)
        self.text = text
        for name, value in (annotations or {}).items():
            if value is None:
                self.cm_annotations.pop(name, None)
            else:
                self.cm_annotations[name] = value
        return "2"

    async def get_pod_template_annotation(self, namespace: str, name: str, key: str) -> str | None:
        self.annotation_reads += 1
        return self.annotation

    async def set_pod_template_annotation(self, namespace: str, name: str, key: str, value: str) -> int:
        self.annotation = value
        return 2


def configmap_delivery(gateway: FakeGateway, **kwargs: Any) -> ConfigMapDelivery:
    """The ConfigMap delivery of ``team-a/canopy-config`` over ``gateway``."""
    return ConfigMapDelivery(cast(Gateway, gateway), "team-a", "canopy-config", KEY, "canopy-backend", **kwargs)
