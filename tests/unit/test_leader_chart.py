"""High availability in the install: replicas, leader election, the PodDisruptionBudget and the Lease RBAC.

The chart's defaults stay what ``manifests/`` installs (one replica, Recreate, leader election on);
``tests/unit/test_chart.py`` checks that equality, this file the values around it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from canopy_operator.gen.rbac import RULES, namespaced_rules, render_rbac_yaml
from canopy_operator.service.settings import Settings
from tests.unit.test_chart import CHART, _run, template

ROOT = Path(__file__).resolve().parents[2]


def _deployment(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    return deployment


def _env(deployment: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_the_default_is_one_replica_with_leader_election_and_no_budget() -> None:
    docs = template()
    deployment = _deployment(docs)
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert _env(deployment)["CANOPY_LEADER_ELECTION"] == "true"
    assert "PodDisruptionBudget" not in {d["kind"] for d in docs}


def test_two_replicas_roll_with_a_standby_first() -> None:
    deployment = _deployment(template("replicas=2"))
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }


def test_several_replicas_without_leader_election_are_refused() -> None:
    for bad in ("replicas=2,leaderElection.enabled=false", "replicas=-1", "replicas=two"):
        done = _run("template", "x", str(CHART), "--set", bad, check=False)
        assert done.returncode != 0, bad
        assert "values don't meet the specifications of the schema" in done.stderr, done.stderr
    alone = _deployment(template("leaderElection.enabled=false"))
    assert "CANOPY_LEADER_ELECTION" not in _env(alone)


@pytest.mark.parametrize(
    ("sets", "strings", "budget"),
    [
        (("podDisruptionBudget.enabled=true",), (), {"maxUnavailable": 1}),
        (
            ("podDisruptionBudget.enabled=true", "replicas=3", "podDisruptionBudget.minAvailable=2"),
            (),
            {"minAvailable": 2},
        ),
        (("podDisruptionBudget.enabled=true",), ("podDisruptionBudget.maxUnavailable=50%",), {"maxUnavailable": "50%"}),
    ],
)
def test_the_budget_selects_exactly_the_operator_pods(
    sets: tuple[str, ...], strings: tuple[str, ...], budget: dict[str, Any]
) -> None:
    docs = template(*sets, strings=strings)
    (pdb,) = [d for d in docs if d["kind"] == "PodDisruptionBudget"]
    deployment = _deployment(docs)
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["metadata"]["name"] == deployment["metadata"]["name"]
    assert pdb["metadata"]["namespace"] == deployment["metadata"]["namespace"]
    selector = pdb["spec"].pop("selector")
    assert pdb["spec"] == budget
    assert selector == deployment["spec"]["selector"]


def test_the_budget_refuses_a_count_the_api_would_refuse() -> None:
    for bad in ("podDisruptionBudget.maxUnavailable=-1", "podDisruptionBudget.minAvailable=half"):
        done = _run("template", "x", str(CHART), "--set-string" if "half" in bad else "--set", bad, check=False)
        assert done.returncode != 0, bad


@pytest.mark.parametrize("sets", [("replicas=2", "podDisruptionBudget.enabled=true"), ("installScope=Namespace",)])
def test_helm_lint_passes_for_high_availability(sets: tuple[str, ...]) -> None:
    args = ["lint", str(CHART), "--strict"]
    for item in sets:
        args += ["--set", item]
    assert "1 chart(s) linted, 0 chart(s) failed" in _run(*args).stdout


def test_the_operator_may_read_create_and_renew_a_lease_and_nothing_more() -> None:
    (rule,) = [r for r in RULES if "leases" in r.resources]
    assert rule.api_groups == ("coordination.k8s.io",)
    assert set(rule.verbs) == {"get", "create", "update"}
    assert rule in namespaced_rules()  # the namespaced install's Role grants it in the operator's own namespace
    for name in ("clusterrole.yaml", "role.yaml"):
        rules = yaml.safe_load(render_rbac_yaml()[name])["rules"]
        leases = [r for r in rules if "leases" in r["resources"]]
        assert leases == [
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update"]}
        ]


def test_the_manifests_run_with_leader_election_in_the_pods_namespace() -> None:
    deployment = yaml.safe_load((ROOT / "manifests" / "base" / "deployment.yaml").read_text(encoding="utf-8"))
    env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    values = {e["name"]: e.get("value") for e in env}
    assert values["CANOPY_LEADER_ELECTION"] == "true"
    assert {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}} in env
    settings = Settings.from_env({"CANOPY_LEADER_ELECTION": "true", "POD_NAMESPACE": "canopy-system"})
    assert (settings.leader_election, settings.leader_election_namespace) == (True, "canopy-system")
