"""Markdown tables of the reconcile benchmark's figures (what goes into bench/RESULTS.md).

``results`` holds one entry per scale: ``{"n": N, "floor": {...}, "operator": {...}}``, each subject's run
measured the same way (``reconcile_bench._measure``); either may be missing when one was run alone (``--only``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from common import fmt_ms

Summary = Callable[[Sequence[float]], dict[str, float]]
OPERATOR_RESOURCES = ("promptexperiments", "configmaps", "deployments", "events")
SUBJECTS = ("operator", "floor")
"""Table order: the operator's figure, then the floor's (their ratio last)."""
TARGET_N = 500
"""The scale the issue's targets are stated at."""


def _row(cells: Sequence[object]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _runs(results: Sequence[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for scale in results:
        for subject in SUBJECTS:
            if subject in scale:
                yield scale[subject]


def _pcts(values: Sequence[float], summary: Summary) -> list[str]:
    s = summary(values)
    return [fmt_ms(s["p50"]), fmt_ms(s["p95"]), fmt_ms(s["p99"]), fmt_ms(s["max"])]


def _is_operator(key: str) -> bool:
    parts = key.split("/")
    return len(parts) > 1 and parts[1] in OPERATOR_RESOURCES


def figures(run: dict[str, Any], summary: Summary) -> dict[str, float]:
    """The compared figures of one subject's run (nan where nothing was measured)."""
    n, idle = run["n"], run["idle"]
    seconds = idle["seconds"]
    requests = sum(v for k, v in idle["requests"].items() if _is_operator(k))
    memory = idle["memory_kib"]
    return {
        "config_p50": summary(run["config"])["p50"],
        "config_p99": summary(run["config"])["p99"],
        "running_p50": summary(run["running"])["p50"],
        "running_p99": summary(run["running"])["p99"],
        "cpu_ms_per_created": 1000.0 * run["cpu_burst"][run["subject"]] / n,
        "idle_requests_per_experiment_hour": requests * 3600.0 / seconds / n,
        "idle_cpu_percent": 100.0 * idle["cpu"][run["subject"]] / seconds,
        "rss_mib": memory["rss_max_in_window"] / 1024,
        "hwm_mib": memory["hwm"] / 1024,
    }


COMPARED = (
    ("config_p50", "create -> config in ConfigMap, p50 s", "{:.2f}"),
    ("config_p99", "create -> config in ConfigMap, p99 s", "{:.2f}"),
    ("running_p50", "create -> status Running, p50 s", "{:.2f}"),
    ("running_p99", "create -> status Running, p99 s", "{:.2f}"),
    ("cpu_ms_per_created", "CPU per created experiment (burst), ms", "{:.1f}"),
    ("idle_requests_per_experiment_hour", "idle: API requests / experiment / hour", "{:.1f}"),
    ("idle_cpu_percent", "idle: CPU, % of one core", "{:.2f}"),
    ("rss_mib", "idle: RSS MiB (peak in the window)", "{:.0f}"),
    ("hwm_mib", "RSS MiB, peak since start (burst included)", "{:.0f}"),
)


def _value(value: float | None, fmt: str) -> str:
    return "n/a" if value is None or math.isnan(value) else fmt.format(value)


def ratio(operator: float | None, floor: float | None) -> str:
    """operator / floor as ``3.1x``; both zero is ``= (both 0)``; only the floor zero is ``inf``."""
    if operator is None or floor is None or math.isnan(operator) or math.isnan(floor):
        return "n/a"
    if floor == 0:
        return "= (both 0)" if operator == 0 else "inf (floor 0)"
    return f"{operator / floor:.1f}x"


def comparison_table(results: Sequence[dict[str, Any]], summary: Summary) -> list[str]:
    lines = ["| N | figure | operator | floor | operator / floor |", "|---|---|---|---|---|"]
    for scale in results:
        got = {s: figures(scale[s], summary) for s in SUBJECTS if s in scale}
        for key, what, fmt in COMPARED:
            op, fl = (got[s][key] if s in got else None for s in SUBJECTS)
            lines.append(_row([scale["n"], what, _value(op, fmt), _value(fl, fmt), ratio(op, fl)]))
    return lines


def same_text(results: Sequence[dict[str, Any]]) -> list[str]:
    lines = []
    for scale in results:
        if all(s in scale for s in SUBJECTS):
            same = scale["operator"]["config_text_sha256"] == scale["floor"]["config_text_sha256"]
            verdict = "the same text" if same else "**different texts**"
            lines.append(f"- N={scale['n']}: the floor and the operator wrote {verdict} into canopy-config-0")
    return lines


def targets_table(results: Sequence[dict[str, Any]], summary: Summary) -> list[str]:
    """The issue's targets (#20) at N=500, or at the largest scale run with both subjects if 500 was not run."""
    both = [scale for scale in results if all(s in scale for s in SUBJECTS)]
    if not both:
        return []
    scale = next((s for s in both if s["n"] == TARGET_N), both[-1])
    op, fl = figures(scale["operator"], summary), figures(scale["floor"], summary)
    rows: list[tuple[str, str, str, bool]] = [
        (
            "config written p99 within 3x the floor's",
            f"{op['config_p99']:.2f} s ({ratio(op['config_p99'], fl['config_p99'])})",
            f"{fl['config_p99']:.2f} s",
            op["config_p99"] <= 3 * fl["config_p99"],
        ),
        (
            "Running p99 at most 12 s",
            f"{op['running_p99']:.2f} s",
            f"{fl['running_p99']:.2f} s",
            op["running_p99"] <= 12,
        ),
        (
            "idle: 0 API requests per experiment per hour",
            f"{op['idle_requests_per_experiment_hour']:.1f}",
            f"{fl['idle_requests_per_experiment_hour']:.1f}",
            op["idle_requests_per_experiment_hour"] == 0,
        ),
        (
            "idle: operator CPU at most 5 % of a core",
            f"{op['idle_cpu_percent']:.2f} %",
            f"{fl['idle_cpu_percent']:.2f} %",
            op["idle_cpu_percent"] <= 5,
        ),
        (
            "idle: resident memory at most 200 MiB",
            f"{op['rss_mib']:.0f} MiB",
            f"{fl['rss_mib']:.0f} MiB",
            op["rss_mib"] <= 200,
        ),
    ]
    lines = [f"| target (N={scale['n']}) | operator | floor | |", "|---|---|---|---|"]
    lines += [_row([what, o, f, "met" if ok else "**missed**"]) for what, o, f, ok in rows]
    return lines


def latency_table(results: Sequence[dict[str, Any]], summary: Summary) -> list[str]:
    lines = [
        "| N | subject | what | p50 ms | p95 ms | p99 ms | max ms | p50 / round trip p50 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in _runs(results):
        quiet = summary(r["round_trip_quiet"])["p50"]
        loaded = summary(r["round_trip_under_load"])["p50"]
        rows = [
            ("create -> config in ConfigMap", r["config"], quiet),
            ("create -> backend restarted (rollout)", r["rollout"], quiet),
            ("create -> status Running", r["running"], quiet),
            ("round trip: ConfigMap patch, quiet server", r["round_trip_quiet"], quiet),
            ("round trip: ConfigMap patch, during the burst", r["round_trip_under_load"], loaded),
        ]
        for what, values, base in rows:
            if not values and what.startswith("create -> backend"):
                continue  # the floor rolls nothing
            p50 = summary(values)["p50"]
            rate = f"{p50 / base:.1f}x" if values and base else "n/a"
            lines.append(_row([r["n"], r["subject"], f"{what} (n={len(values)})", *_pcts(values, summary), rate]))
    return lines


def steady_table(results: Sequence[dict[str, Any]]) -> list[str]:
    lines = [
        "| N | subject | idle window s | API requests / experiment / hour (by verb/resource) |"
        " writes / experiment / hour | backend requests / experiment / interval | CPU (% of one core) |"
        " RSS MiB (peak in window; since start) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in _runs(results):
        idle = r["idle"]
        n, seconds = r["n"], idle["seconds"]
        per_hour = 3600.0 / seconds / n
        per_interval = r["interval"] / seconds / n
        reqs = {k: v for k, v in idle["requests"].items() if _is_operator(k)}
        writes = {k: v for k, v in idle["writes"].items() if _is_operator(k)}
        req_text = ", ".join(f"{k} {v * per_hour:.1f}" for k, v in sorted(reqs.items())) or "**0**"
        write_text = ", ".join(f"{k} {v * per_hour:.1f}" for k, v in sorted(writes.items())) or "**0**"
        backend = ", ".join(f"{k} {v * per_interval:.2f}" for k, v in sorted(idle["backend"].items())) or "0"
        cpu = 100.0 * idle["cpu"][r["subject"]] / seconds
        mem = idle["memory_kib"]
        memory = f"{mem['rss_max_in_window'] / 1024:.0f}; {mem['hwm'] / 1024:.0f}"
        lines.append(_row([n, r["subject"], f"{seconds:.0f}", req_text, write_text, backend, f"{cpu:.2f}", memory]))
    return lines


def burst_table(results: Sequence[dict[str, Any]]) -> list[str]:
    lines = [
        "| N | subject | all Running | burst wall s | writes settled s later | creates took s | rollouts"
        " | CPU s in burst, to settled (subject / apiserver / etcd / harness) | load before | load after the run |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in _runs(results):
        cpu = r["cpu_burst"]
        stuck = "" if r["finished"] else f" (not: {r['not_running']})"
        cpus = " / ".join(f"{cpu.get(k, 0.0):.1f}" for k in (r["subject"], "kube-apiserver", "etcd", "harness"))
        lines.append(
            _row(
                [
                    r["n"],
                    r["subject"],
                    f"{r['finished']}{stuck}",
                    f"{r['wall']:.1f}",
                    f"{r['settled_after']:.1f}" if "settled_after" in r else "n/a",
                    f"{r['creation_spread']:.1f}",
                    r["rollouts_total"],
                    cpus,
                    r["load_before_burst"],
                    r.get("load_after", "n/a"),
                ]
            )
        )
    return lines


def burst_requests_table(results: Sequence[dict[str, Any]]) -> list[str]:
    """API requests per created experiment during the burst, by verb/resource/subresource/code (everyone's:
    the harness creates the experiments, watches them and plays the kubelet of every rollout)."""
    runs = [r for r in _runs(results) if "burst_requests" in r]
    if not runs:
        return []
    keys = sorted({k for r in runs for k in r["burst_requests"]})
    lines = ["| request | " + " | ".join(f"{r['subject']} N={r['n']}" for r in runs) + " |"]
    lines.append("|---" * (len(runs) + 1) + "|")
    for key in keys:
        cells = [f"{r['burst_requests'].get(key, 0) / r['n']:.2f}" for r in runs]
        lines.append(_row([key, *cells]))
    return lines


def idle_other(results: Sequence[dict[str, Any]]) -> list[str]:
    lines = []
    for r in _runs(results):
        others = {k: v for k, v in r["idle"]["requests"].items() if not _is_operator(k)}
        if others:
            text = ", ".join(f"{k} {v}" for k, v in sorted(others.items()))
            lines.append(f"- N={r['n']}, {r['subject']}: requests on other resources in the window: {text}")
        if r["idle"].get("status_changes"):
            lines.append(
                f"- N={r['n']}, {r['subject']}: status fields changed while idle: {r['idle']['status_changes']}"
            )
    return lines


def render(report: dict[str, Any], summary: Summary) -> str:
    m = report["machine"]
    results = report["results"]
    targets = targets_table(results, summary)
    out = [
        f"- Date: {m['date']}; machine: {m['cpu']}, {m['memory']}, {m['os']}; Python {m['python']}",
        f"- Packages: {m['packages']}",
        f"- Load average at start: {m['load']}; at the end: {report['load_after']}",
        "",
        "The operator against the bare-Kopf floor (`bench/floor_operator.py`), each on a fresh control plane,"
        " one after the other at each scale:",
        "",
        *comparison_table(results, summary),
        "",
        *same_text(results),
        *(["", "Against the issue's targets:", "", *targets] if targets else []),
        "",
        "Latency (from the create call's return; the round trip is one ConfigMap merge patch):",
        "",
        *latency_table(results, summary),
        "",
        "Burst:",
        "",
        *burst_table(results),
        "",
        "API requests per created experiment in the burst (all clients: the harness creates, watches and"
        " plays the kubelet):",
        "",
        *burst_requests_table(results),
        "",
        "Steady state (idle experiments, phase Running, nothing to read):",
        "",
        *steady_table(results),
        "",
        *idle_other(results),
    ]
    return "\n".join(out)
