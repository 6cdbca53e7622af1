"""``kubectl pexp get``: the experiment and what it drives, as a summary, a tree and its conditions.

The tree is in the manner of ``kubectl argo rollouts get rollout``: the experiment, its delivery (the ConfigMap,
or the Git repository and branch, or nothing in Shadow mode), the backend Deployment, the evaluation Jobs (the
Jobs labelled with the experiment and the runs in ``status.evaluations``) with the dataset and result Secrets
of each, and the ledger and dataset Secrets. Secrets are named from the status only; their data is never read.

Everything comes in as JSON objects (the experiment, and a :class:`Lookup` per related object) and is read
through :mod:`.fields`, so an object of an unexpected shape renders as ``?`` or ``-`` rather than failing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from canopy_operator.api.spec import ConfigMapDelivery, GitDelivery
from canopy_operator.core.evaluation.jobs import LABEL_EXPERIMENT
from canopy_operator.core.redact import redact
from canopy_operator.pexp.fields import (
    age,
    boolean,
    clean,
    dig,
    duration,
    integer,
    iso,
    items,
    mapping,
    number,
    pvalue,
    rate,
    text,
    timestamp,
)
from canopy_operator.pexp.results import NoRun, runs, select_run

DEFAULT_CONFIGMAP = ConfigMapDelivery.model_fields["name"].default
DEFAULT_KEY = ConfigMapDelivery.model_fields["key"].default
DEFAULT_DEPLOYMENT = ConfigMapDelivery.model_fields["deployment"].default
DEFAULT_BRANCH = GitDelivery.model_fields["branch"].default
DEFAULT_VALUES_FILE = GitDelivery.model_fields["values_file"].default
DEFAULT_MIN_VOTES = 30
NOT_FOUND = "not found"
"""The :attr:`Lookup.error` of an object that does not exist."""
MAX_RUNS = 10
MAX_JOBS = 20
MAX_CONDITIONS = 20
NAME_LIMIT = 64
INFO_LIMIT = 160
BAR = 24


@dataclass(frozen=True)
class Lookup:
    """A related object as read: the object, or why it could not be (``not found``, ``forbidden: ...``)."""

    obj: Mapping[str, Any] | None = None
    error: str | None = None


@dataclass(frozen=True)
class Targets:
    """What ``get`` reads besides the experiment (None: nothing to read)."""

    configmap: str | None
    deployment: str | None
    job_selector: str


@dataclass(frozen=True)
class Related:
    configmap: Lookup | None = None
    deployment: Lookup | None = None
    jobs: Lookup | None = None
    """``obj`` is ``{"items": [Job, ...]}``."""


@dataclass
class Node:
    name: str
    kind: str
    status: str = ""
    info: str = ""
    children: list[Node] = field(default_factory=list)


_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")


def valid_name(value: object) -> str | None:
    """``value`` if it is a Kubernetes object name (DNS subdomain), else None."""
    return value if isinstance(value, str) and _NAME.fullmatch(value) else None


def _k8s_name(value: object, default: str) -> str | None:
    """A name from the spec: the default when unset, None when it is not a name."""
    return default if value is None else valid_name(value)


def delivery_mode(obj: Mapping[str, Any]) -> str:
    mode = dig(obj, "spec", "delivery", "mode")
    return mode if mode in ("ConfigMap", "Git", "Shadow") else "ConfigMap"


def targets(obj: Mapping[str, Any]) -> Targets:
    """The ConfigMap (ConfigMap mode), the backend Deployment and the Jobs' label selector of ``obj``."""
    cm = dig(obj, "spec", "delivery", "configMap")
    name = valid_name(dig(obj, "metadata", "name")) or ""
    configmap = _k8s_name(dig(cm, "name"), DEFAULT_CONFIGMAP) if delivery_mode(obj) == "ConfigMap" else None
    return Targets(
        configmap=configmap,
        deployment=_k8s_name(dig(cm, "deployment"), DEFAULT_DEPLOYMENT),
        job_selector=f"{LABEL_EXPERIMENT}={name}",
    )


# The summary -------------------------------------------------------------------------------------------


def summary(obj: Mapping[str, Any], namespace: str, now: datetime) -> list[tuple[str, str]]:
    """The key-value lines above the tree."""
    status = mapping(dig(obj, "status"))
    name = clean(dig(obj, "metadata", "name"), NAME_LIMIT) or "?"
    ns = clean(dig(obj, "metadata", "namespace"), 63) or namespace
    out: list[tuple[str, str]] = [("Name", name), ("Namespace", ns)]
    out.append(("Phase", text(status.get("phase"), 30) or "Pending (no status yet)"))
    if status.get("message"):
        out.append(("Message", clean(status.get("message"), 160)))
    if status.get("progress"):
        out.append(("Progress", clean(status.get("progress"), 60)))
    out.append(("Test", _test(status, now)))
    out.append(("Votes", _votes(status)))
    out.append(("Min votes", _min_votes(obj, status)))
    out.append(("Evidence", _evidence(status)))
    reason = text(dig(status, "evidence", "reason"), 160)
    if reason:
        out.append(("Reason", reason))
    winner = text(status.get("winner"), 20)
    if winner:
        out.append(("Winner", winner))
    out.extend(_steering(obj, status, name, ns, now))
    count = len(items(status.get("trajectory"), 1000))
    if count:
        out.append(("Trajectory", f"{count} points (kubectl pexp plot {name} -n {ns})"))
    return out


def _test(status: Mapping[str, Any], now: datetime) -> str:
    test = mapping(status.get("test"))
    test_id = text(test.get("id"), 64)
    if not test_id:
        return "- (no active test)"
    method = text(test.get("method"), 20) or "?"
    alpha = number(test.get("alpha"))
    started = timestamp(test.get("startedAt"))
    when = f"started {iso(started)}, {age(started, now)} ago" if started else "start unknown"
    return f"{test_id} ({method}, alpha {'?' if alpha is None else f'{alpha:g}'}, {when})"


def _count(status: Mapping[str, Any], key: str) -> str:
    value = integer(dig(status, "votes", key))
    return "?" if value is None else str(value)


def _votes(status: Mapping[str, Any]) -> str:
    line = (
        f"challenger {_count(status, 'challengerWins')}  champion {_count(status, 'championWins')}  "
        f"ties {_count(status, 'ties')}"
    )
    extra = []
    for key, words in (("unattributed", "unattributed"), ("duplicatesDropped", "duplicates dropped")):
        value = integer(dig(status, "votes", key))
        if value:
            extra.append(f"{words} {value}")
    return f"{line}  ({', '.join(extra)})" if extra else line


def _min_votes(obj: Mapping[str, Any], status: Mapping[str, Any]) -> str:
    decisive = integer(dig(status, "evidence", "decisiveVotes"))
    wanted = integer(dig(obj, "spec", "analysis", "minVotes"))
    if wanted is None:
        wanted = integer(dig(status, "test", "minVotes"))
    if wanted is None or wanted <= 0:
        wanted = DEFAULT_MIN_VOTES
    if decisive is None or decisive < 0:
        return f"? of {wanted} decisive votes"
    share = min(1.0, decisive / wanted)
    filled = round(share * BAR)
    return f"[{'#' * filled}{'-' * (BAR - filled)}] {decisive}/{wanted} decisive votes ({share:.0%})"


def _evidence(status: Mapping[str, Any]) -> str:
    evidence = mapping(status.get("evidence"))
    cs = mapping(evidence.get("confidenceSequence"))
    lower, upper = number(cs.get("lower")), number(cs.get("upper"))
    interval = "-" if lower is None or upper is None else f"[{rate(lower)}, {rate(upper)}]"
    e_value = number(evidence.get("eValue"))
    decision = text(evidence.get("decision"), 20) or "-"
    return (
        f"CS {interval}  p-value {pvalue(number(evidence.get('pValue')))}  "
        f"e-value {'-' if e_value is None else f'{e_value:.4g}'}  decision {decision}"
    )


def _steering(
    obj: Mapping[str, Any], status: Mapping[str, Any], name: str, ns: str, now: datetime
) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    if dig(obj, "spec", "suspend") is True:
        since = timestamp(status.get("suspendedAt"))
        out.append(("Suspended", f"yes (spec.suspend), since {iso(since)}" if since else "yes (spec.suspend)"))
    if dig(obj, "spec", "abort") is True:
        out.append(("Abort", "requested (spec.abort): no test runs while it is true"))
    if status.get("phase") == "AwaitingApproval":
        out.append(("Approval", f"awaited: kubectl pexp approve {name} -n {ns}"))
    elif dig(obj, "spec", "promotion", "approved") is True:
        for_id = text(dig(obj, "spec", "promotion", "approvedTestId"), 64)
        out.append(("Approval", f"given for test {for_id}" if for_id else "given (spec.promotion.approved)"))
    return out


# The tree ----------------------------------------------------------------------------------------------


def tree(obj: Mapping[str, Any], related: Related, now: datetime) -> Node:
    status = mapping(dig(obj, "status"))
    root = Node(
        name=clean(dig(obj, "metadata", "name"), NAME_LIMIT) or "?",
        kind="PromptExperiment",
        status=text(status.get("phase"), 30) or "Pending",
        info=_root_info(status),
    )
    root.children.append(_delivery(obj, status, related.configmap, now))
    deployment = targets(obj).deployment
    if deployment is not None:
        root.children.append(_deployment(deployment, related.deployment))
    root.children.extend(_evaluations(obj, status, related.jobs, now))
    negatives = mapping(status.get("negatives"))
    ledger = valid_name(negatives.get("ledgerSecret"))
    if ledger:
        total = integer(negatives.get("total"))
        since = integer(negatives.get("sinceLastEvaluation"))
        trimmed = integer(negatives.get("trimmed"))
        info = f"{'?' if total is None else total} negatives, {'?' if since is None else since} since the last run"
        review = integer(negatives.get("awaitingReview"))
        if review:
            info += f", {review} awaiting review"
        if trimmed:
            info += f", {trimmed} trimmed"
        root.children.append(Node(ledger, "Secret", "ledger", info))
    dataset = valid_name(negatives.get("datasetSecret"))
    if dataset:
        root.children.append(Node(dataset, "Secret", "dataset", "the ledger's current dataset"))
    return root


def _root_info(status: Mapping[str, Any]) -> str:
    parts = []
    test_id = text(dig(status, "test", "id"), 64)
    if test_id:
        parts.append(f"test {test_id[:12]}")
    progress = text(status.get("progress"), 40)
    if progress:
        parts.append(progress)
    return ", ".join(parts)


def _delivery(obj: Mapping[str, Any], status: Mapping[str, Any], lookup: Lookup | None, now: datetime) -> Node:
    mode = delivery_mode(obj)
    delivered = mapping(status.get("delivery"))
    revision = text(delivered.get("revision"), 80)
    applied, verified = timestamp(delivered.get("appliedAt")), timestamp(delivered.get("verifiedAt"))
    when = []
    if revision:
        when.append(f"revision {short_revision(revision)}")
    if applied:
        when.append(f"applied {age(applied, now)} ago")
    if verified:
        when.append(f"verified {age(verified, now)} ago")
    elif applied:
        when.append("not verified yet")
    if mode == "Shadow":
        return Node("-", "Shadow", "", "nothing delivered: decides on the backend's own A/B test")
    if mode == "Git":
        git = mapping(dig(obj, "spec", "delivery", "git"))
        repo = redact(text(git.get("repository"), 300) or "?")
        branch = text(git.get("branch"), 80) or DEFAULT_BRANCH
        values_file = text(git.get("valuesFile"), 120) or DEFAULT_VALUES_FILE
        method = text(git.get("method"), 20) or "Push"
        node = Node(clean(repo, NAME_LIMIT), "Git", f"branch {branch}", ", ".join([values_file, method, *when]))
        pushed = text(delivered.get("branch"), NAME_LIMIT)
        url = text(delivered.get("pullRequestUrl"), INFO_LIMIT)
        if pushed or url:
            node.children.append(
                Node(pushed or "-", "PullRequest", "opened" if url else "branch pushed", redact(url or ""))
            )
        return node
    cm = mapping(dig(obj, "spec", "delivery", "configMap"))
    name = targets(obj).configmap or "?"
    key = text(cm.get("key"), 120) or DEFAULT_KEY
    info = [f"key {key}"]
    state = "?"
    if lookup is not None:
        if lookup.error:
            state = "not found" if lookup.error == NOT_FOUND else "error"
            info.append(_error_info(lookup.error))
        elif lookup.obj is not None:
            keys = [k for k in items(lookup.obj.get("keys"), 100) if isinstance(k, str)]
            state = "found" if key in keys else f"no key {key}"
            rv = text(dig(lookup.obj, "metadata", "resourceVersion"), 30)
            if rv:
                info.append(f"resourceVersion {rv}")
    return Node(name, "ConfigMap", state, ", ".join(i for i in [*info, *when] if i))


def _deployment(name: str, lookup: Lookup | None) -> Node:
    if lookup is None:
        return Node(name, "Deployment", "?", "")
    if lookup.error:
        return Node(
            name, "Deployment", "not found" if lookup.error == NOT_FOUND else "error", _error_info(lookup.error)
        )
    dep = mapping(lookup.obj)
    desired = integer(dig(dep, "spec", "replicas"))
    desired = 1 if desired is None else desired
    ready = integer(dig(dep, "status", "readyReplicas")) or 0
    updated = integer(dig(dep, "status", "updatedReplicas")) or 0
    available = integer(dig(dep, "status", "availableReplicas")) or 0
    info = f"{updated} updated, {available} available"
    generation, observed = (
        integer(dig(dep, "metadata", "generation")),
        integer(dig(dep, "status", "observedGeneration")),
    )
    if generation is not None and (observed is None or observed < generation):
        info += f", generation {generation} not yet observed"
    return Node(name, "Deployment", f"{ready}/{desired} ready", info)


def _error_info(error: str) -> str:
    return "" if error == NOT_FOUND else clean(error, 80)


def _job_state(job: Mapping[str, Any]) -> str:
    for condition in items(dig(job, "status", "conditions"), 20):
        if dig(condition, "status") == "True":
            kind = dig(condition, "type")
            if kind in ("Complete", "SuccessCriteriaMet"):
                return "Succeeded"
            if kind in ("Failed", "FailureTarget"):
                return "Failed"
    if (integer(dig(job, "status", "active")) or 0) > 0:
        return "Running"
    return "Pending"


def _evaluations(obj: Mapping[str, Any], status: Mapping[str, Any], jobs: Lookup | None, now: datetime) -> list[Node]:
    listed: dict[str, Mapping[str, Any]] = {}
    job_error = jobs.error if jobs is not None else None
    for job in items(dig(jobs.obj if jobs else None, "items"), MAX_JOBS):
        job_name = dig(job, "metadata", "name")
        if isinstance(job_name, str) and job_name:
            listed[job_name] = job
    recorded = runs(status)
    nodes: list[Node] = []
    names_in_status = {r["name"] for r in recorded}
    for job_name, job in sorted(listed.items(), key=lambda kv: str(dig(kv[1], "metadata", "creationTimestamp"))):
        if job_name not in names_in_status:
            started = timestamp(dig(job, "status", "startTime"))
            info = f"not yet in status, started {age(started, now)} ago" if started else "not yet in status"
            nodes.append(Node(clean(job_name, NAME_LIMIT), "Job", _job_state(job), info))
    shown = list(reversed(recorded))[:MAX_RUNS]
    for run in shown:
        nodes.append(_run_node(run, status, listed.get(run["name"]), jobs is not None and job_error is None))
    if len(recorded) > MAX_RUNS:
        nodes.append(Node(f"... {len(recorded) - MAX_RUNS} older runs", "", "", ""))
    if job_error:
        nodes.append(Node("evaluation Jobs", "Job", "error", clean(job_error, 80)))
    return nodes


def _run_node(run: Mapping[str, Any], status: Mapping[str, Any], job: Mapping[str, Any] | None, listed: bool) -> Node:
    state = text(run.get("state"), 20) or (_job_state(job) if job else "?")
    info: list[str] = []
    progress = mapping(run.get("progress"))
    done, total = integer(progress.get("done")), integer(progress.get("total"))
    if state == "Running" and done is not None and total is not None:
        eta = number(progress.get("etaSeconds"))
        info.append(f"{done}/{total} cases" + (f", ETA {duration(eta)}" if eta is not None else ""))
    cases, scored = integer(run.get("cases")), integer(run.get("scored"))
    if state != "Running" and scored is not None:
        info.append(f"{scored}/{'?' if cases is None else cases} scored")
    elif not info and cases is not None:
        info.append(f"{cases} cases")
    better = number(run.get("challengerBetterRate"))
    if better is not None:
        info.append(f"challenger better {better:.0%}")
    passed = boolean(run.get("passed"))
    if passed is not None:
        info.append("passed" if passed else "not passed")
    unreviewed = integer(run.get("unreviewed"))
    if unreviewed:
        info.append(f"{unreviewed} unreviewed")
    trigger = text(run.get("trigger"), 20)
    if trigger:
        info.append(f"trigger {trigger}")
    message = text(run.get("message"), 80)
    if message and state == "Failed":
        info.append(message)
    if job is None and listed:
        info.append("Job gone")
    node = Node(clean(run["name"], NAME_LIMIT), "Job", state, ", ".join(info))
    dataset = valid_name(run.get("datasetSecret"))
    if dataset:
        node.children.append(Node(dataset, "Secret", "dataset", f"{cases} cases" if cases is not None else ""))
    try:
        ref = select_run({"evaluations": [run]}, run["name"])
    except NoRun:  # a run of an odd shape shows no result Secrets
        return node
    declared = "" if ref.declared_cases is None else f"{ref.declared_cases} cases in all"
    if ref.truncated:
        declared += ", truncated"
    if ref.recorded and not ref.secrets and ref.unavailable:
        node.children.append(Node("-", "Secret", "no results", ref.unavailable))
    for secret in ref.secrets:
        node.children.append(Node(secret, "Secret", "results", declared))
    return node


# Rendering ---------------------------------------------------------------------------------------------


def _rows(node: Node, prefix: str = "", last: bool = True, root: bool = True) -> list[tuple[str, Node]]:
    label = node.name if root else f"{prefix}{'└── ' if last else '├── '}{node.name}"
    rows = [(label, node)]
    child_prefix = "" if root else prefix + ("    " if last else "│   ")
    for n, child in enumerate(node.children):
        rows.extend(_rows(child, child_prefix, n == len(node.children) - 1, root=False))
    return rows


def render_tree(root: Node) -> list[str]:
    rows = [(label, n.kind, n.status, clean(n.info, INFO_LIMIT)) for label, n in _rows(root)]
    header = ("NAME", "KIND", "STATUS", "INFO")
    widths = [max(len(header[k]), *(len(r[k]) for r in rows)) for k in range(3)]
    lines = []
    for row in [header, *rows]:
        lines.append("  ".join([*(row[k].ljust(widths[k]) for k in range(3)), row[3]]).rstrip())
    return lines


def conditions(status: Mapping[str, Any], now: datetime) -> list[str]:
    """The conditions as a table: type, status, reason, age and message."""
    rows = []
    for condition in items(status.get("conditions"), MAX_CONDITIONS):
        if not isinstance(condition, Mapping):
            continue
        rows.append(
            (
                text(condition.get("type"), 30) or "?",
                text(condition.get("status"), 10) or "?",
                text(condition.get("reason"), 40) or "-",
                age(timestamp(condition.get("lastTransitionTime")), now),
                text(condition.get("message"), 120) or "",
            )
        )
    if not rows:
        return ["Conditions:  none"]
    header = ("TYPE", "STATUS", "REASON", "AGE", "MESSAGE")
    widths = [max(len(header[k]), *(len(r[k]) for r in rows)) for k in range(4)]
    lines = ["Conditions:"]
    for row in [header, *rows]:
        lines.append("  " + "  ".join([*(row[k].ljust(widths[k]) for k in range(4)), row[4]]).rstrip())
    return lines


def render(obj: Mapping[str, Any], related: Related, namespace: str, now: datetime) -> str:
    """The whole ``get`` output."""
    pairs = summary(obj, namespace, now)
    width = max(len(k) for k, _ in pairs) + 2
    lines = [f"{(key + ':').ljust(width)}{value}" for key, value in pairs]
    lines.append("")
    lines.extend(render_tree(tree(obj, related, now)))
    lines.append("")
    lines.extend(conditions(mapping(dig(obj, "status")), now))
    return "\n".join(lines) + "\n"


def job_items(jobs: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    """The ``obj`` of the jobs' :class:`Lookup`."""
    return {"items": list(jobs)}


def short_revision(revision: str) -> str:
    """A revision as people read it: ``config-sha256:`` or ``sha256:`` and 12 hex digits, a commit's 12."""
    prefix, sep, rest = revision.rpartition(":")
    return f"{prefix}{sep}{rest[:12]}" if sep else revision[:12]
