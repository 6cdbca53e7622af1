"""Markdown tables of the reconcile benchmark's figures (what goes into bench/RESULTS.md)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from common import fmt_ms

Summary = Callable[[Sequence[float]], dict[str, float]]
OPERATOR_RESOURCES = ("promptexperiments", "configmaps", "deployments", "events")


def _row(cells: Sequence[object]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _pcts(values: Sequence[float], summary: Summary) -> list[str]:
    s = summary(values)
    return [fmt_ms(s["p50"]), fmt_ms(s["p95"]), fmt_ms(s["p99"]), fmt_ms(s["max"])]


def latency_table(results: Sequence[dict[str, Any]], summary: Summary) -> list[str]:
    lines = [
        "| N | what | p50 ms | p95 ms | p99 ms | max ms | p50 / floor p50 |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        floor = summary(r["floor_idle"])["p50"]
        floor_load = summary(r["floor_under_load"])["p50"]
        rows = [
            ("create -> config in ConfigMap", r["config"], floor),
            ("create -> backend restarted (rollout)", r["rollout"], floor),
            ("create -> status Running", r["running"], floor),
            ("floor: ConfigMap patch, quiet server", r["floor_idle"], floor),
            ("floor: ConfigMap patch, during the burst", r["floor_under_load"], floor_load),
        ]
        for what, values, base in rows:
            ratio = summary(values)["p50"] / base if values and base else float("nan")
            lines.append(_row([r["n"], f"{what} (n={len(values)})", *_pcts(values, summary), f"{ratio:.1f}x"]))
    return lines


def _is_operator(key: str) -> bool:
    parts = key.split("/")
    return len(parts) > 1 and parts[1] in OPERATOR_RESOURCES


def steady_table(results: Sequence[dict[str, Any]]) -> list[str]:
    lines = [
        "| N | idle window s | API requests / experiment / hour (by verb/resource) | writes / experiment / hour |"
        " backend requests / experiment / interval | operator CPU (% of one core) | operator RSS MiB (peak) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        idle = r["idle"]
        n, seconds = r["n"], idle["seconds"]
        per_hour = 3600.0 / seconds / n
        per_interval = r["interval"] / seconds / n
        reqs = {k: v for k, v in idle["requests"].items() if _is_operator(k)}
        writes = {k: v for k, v in idle["writes"].items() if _is_operator(k)}
        req_text = ", ".join(f"{k} {v * per_hour:.1f}" for k, v in sorted(reqs.items())) or "0"
        write_text = ", ".join(f"{k} {v * per_hour:.1f}" for k, v in sorted(writes.items())) or "**0**"
        backend = ", ".join(f"{k} {v * per_interval:.2f}" for k, v in sorted(idle["backend"].items())) or "0"
        cpu = 100.0 * idle["cpu"]["operator"] / seconds
        mem = idle["operator_memory_kib"]
        lines.append(
            _row(
                [
                    n,
                    f"{seconds:.0f}",
                    req_text,
                    write_text,
                    backend,
                    f"{cpu:.1f}",
                    f"{mem['rss'] / 1024:.0f} ({mem['hwm'] / 1024:.0f})",
                ]
            )
        )
    return lines


def burst_table(results: Sequence[dict[str, Any]]) -> list[str]:
    lines = [
        "| N | all Running | burst wall s | creates took s | rollouts"
        " | CPU s in burst (operator / apiserver / etcd / harness) | load before |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        cpu = r["cpu_burst"]
        stuck = "" if r["finished"] else f" (not: {r['not_running']})"
        cpus = " / ".join(f"{cpu.get(k, 0.0):.1f}" for k in ("operator", "kube-apiserver", "etcd", "harness"))
        lines.append(
            _row(
                [
                    r["n"],
                    f"{r['finished']}{stuck}",
                    f"{r['wall']:.1f}",
                    f"{r['creation_spread']:.1f}",
                    r["rollouts_total"],
                    cpus,
                    r["load_before_burst"],
                ]
            )
        )
    return lines


def idle_other(results: Sequence[dict[str, Any]]) -> list[str]:
    lines = []
    for r in results:
        others = {k: v for k, v in r["idle"]["requests"].items() if not _is_operator(k)}
        if others:
            text = ", ".join(f"{k} {v}" for k, v in sorted(others.items()))
            lines.append(f"- N={r['n']}: requests on other resources in the window (not the operator's): {text}")
    return lines


def render(report: dict[str, Any], summary: Summary) -> str:
    m = report["machine"]
    out = [
        f"- Date: {m['date']}; machine: {m['cpu']}, {m['memory']}, {m['os']}; Python {m['python']}",
        f"- Packages: {m['packages']}",
        f"- Load average at start: {m['load']}; at the end: {report['load_after']}",
        "",
        "Latency (from the create call's return; the floor is one ConfigMap merge patch round trip):",
        "",
        *latency_table(report["results"], summary),
        "",
        "Burst:",
        "",
        *burst_table(report["results"]),
        "",
        "Steady state (idle experiments, phase Running, nothing to read):",
        "",
        *steady_table(report["results"]),
        "",
        *idle_other(report["results"]),
    ]
    return "\n".join(out)
