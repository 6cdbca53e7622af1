"""Human-maintained Helm values files for tests, and a line-diff helper."""

from __future__ import annotations

import difflib

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
