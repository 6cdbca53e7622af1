"""What a config change is called and how it is explained: commit messages, pull-request text, branch names.

Pure: the Git adapter writes these words, the status decides them. A commit for a decided test carries the
evidence (counts, p-value, confidence sequence), so the repository's history explains every promotion.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from canopy_operator.api.status import PromptExperimentStatus
from canopy_operator.core.values import FIELDS, GEN1, ManagedKeys, ValuesLayout, managed_hash


@dataclass(frozen=True)
class CommitInfo:
    """Who commits and why; ``evidence`` is free text from the caller (the test's numbers, say)."""

    experiment: str
    """``namespace/name``."""
    change: str
    """Short description, e.g. ``start the A/B test`` or ``promote the challenger``."""
    evidence: str = ""
    author_name: str = "canopy-operator"
    author_email: str = "canopy-operator@noreply.canopy.genaiops.io"


_OUTCOME_CHANGE = {
    "challenger": "promote the challenger",
    "champion": "keep the champion",
    "no_winner": "end the test with no winner",
    "equivalent": "end the test: prompts equivalent",
    "aborted": "abort the test, keep the champion",
}
RESTORE_CHANGE = "restore the champion-only config"


def change_of(status: PromptExperimentStatus, *, restoring: bool = False) -> tuple[str, str]:
    """The change the status says is next (short words) and, for a decided test, its evidence lines."""
    if restoring:
        return RESTORE_CHANGE, ""
    pending = status.pending_promotion
    if pending is None:
        fresh = status.test is None or status.delivery.verified_at is None
        return ("start the A/B test" if fresh else "re-apply the A/B test config"), ""
    votes, ev = status.votes, status.evidence
    lines = [
        f"Decision: {pending.summary}",
        f"Test: {pending.test_id}",
        f"Votes: challenger {votes.challenger_wins}, champion {votes.champion_wins}, ties {votes.ties}",
        f"Always-valid p-value: {ev.p_value:.4g}",
    ]
    if ev.confidence_sequence is not None:
        cs = ev.confidence_sequence
        lines.append(f"Confidence sequence for P(challenger preferred): [{cs.lower:.4f}, {cs.upper:.4f}]")
    return _OUTCOME_CHANGE[pending.outcome], "\n".join(lines)


def commit_info(
    experiment: str,
    status: PromptExperimentStatus,
    *,
    author_name: str,
    author_email: str,
    restoring: bool = False,
) -> CommitInfo:
    """The commit identity and wording for the next change of ``experiment`` (``namespace/name``)."""
    change, evidence = change_of(status, restoring=restoring)
    return CommitInfo(
        experiment=experiment, change=change, evidence=evidence, author_name=author_name, author_email=author_email
    )


def commit_message(info: CommitInfo, before: ManagedKeys, after: ManagedKeys, *, layout: ValuesLayout = GEN1) -> str:
    """Subject, the changed key paths of ``layout`` (no prompt texts: the diff shows them), evidence and trailers."""
    changes = []
    for name in FIELDS:
        old, new = getattr(before, name), getattr(after, name)
        if old != new:
            what = "removed" if new is None else (str(new).lower() if isinstance(new, bool) else "set")
            changes.append(f"- {layout.dotted(name)}: {what}")
    lines = [f"canopy: {info.change} ({info.experiment})", "", f"Experiment {info.experiment}: {info.change}."]
    lines += ["", "Changed keys:", *changes]
    if info.evidence.strip():
        lines += ["", info.evidence.strip()]
    lines += ["", f"Canopy-Experiment: {info.experiment}", f"Canopy-Managed-Hash: {managed_hash(after)}"]
    return "\n".join(lines) + "\n"


def pull_request_text(info: CommitInfo, values_file: str) -> tuple[str, str]:
    """Title and body of the pull request for a change of ``values_file``."""
    body = [
        f"Experiment `{info.experiment}`: {info.change}.",
        "",
        f"Edits only the managed keys of `{values_file}`; merging it applies the change.",
    ]
    if info.evidence.strip():
        body += ["", info.evidence.strip()]
    body += ["", "Opened by canopy-operator."]
    return f"canopy: {info.change} ({info.experiment})", "\n".join(body) + "\n"


def branch_name(namespace: str, name: str, change: str, test_id: str) -> str:
    """``canopy/<namespace>-<name>-<change>-<short id>``, reduced to characters every forge accepts."""

    def clean(text: str) -> str:
        return re.sub(r"[^a-z0-9.-]+", "-", text.lower()).strip("-.") or "x"

    return f"canopy/{clean(namespace)}-{clean(name)}-{clean(change)}-{clean(test_id)[:8]}"


def review_branch(namespace: str, name: str, change: str, desired: ManagedKeys) -> str:
    """The PullRequest-mode branch of one change: the same desired keys always give the same branch."""
    return branch_name(namespace, name, change, managed_hash(desired))
