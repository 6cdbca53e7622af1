"""A Git-mode experiment to promotion, as a team that runs Argo CD sees it.

The values live in a Git repository served over HTTPS (smart HTTP with Basic auth, ``git http-backend``) on the
node's address, behind a private certificate authority as a self-hosted Gitea usually is; the credentials
Secret opts in for that URL and carries the CA as ``ca.crt``. The operator pod clones, commits and pushes; a
stand-in for Argo CD renders every new commit into the ConfigMap and rolls the real Deployment; the operator
sees the new pod serve the flags, collects the votes and promotes with one more commit.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import httpx
import pytest
import yaml

from tests.support.gitserver import git_http_server, history, make_repo, show, tls_server_context
from tests.support.node_e2e import (
    CHALLENGER,
    KEY,
    OPERATOR_NAMESPACE,
    REPO_ROOT,
    ArgoStandIn,
    Cluster,
    Kube,
    backend_manifests,
    events,
    port_forward,
    vote,
    wait_for,
    wait_phase,
)
from tests.support.values_files import BEFORE_EXPERIMENT

VALUES = "chart/values-test.yaml"
USER, PASSWORD = "user1", "gitea-Pa55word-e2e-7f3k"
NAME = "concise-summaries-gitops"


def _experiment(namespace: str, repository: str) -> dict[str, object]:
    """``manifests/samples/git-experiment.yaml`` pointed at the test's repository: Push, promoted automatically,
    no evaluation gate (the evaluation tier has its own test)."""
    body = yaml.safe_load((REPO_ROOT / "manifests/samples/git-experiment.yaml").read_text())
    body["metadata"]["namespace"] = namespace
    spec = body["spec"]
    spec["delivery"]["git"].update(repository=repository, credentialsSecret="backend-repo-credentials")
    spec["delivery"]["verifyTimeout"] = "180s"
    spec["promotion"]["policy"] = "Automatic"
    spec["analysis"]["interval"] = "5s"
    spec.pop("evaluation")
    return dict(body)


def _credentials(namespace: str, allowed: str, ca_pem: str) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/basic-auth",
        "metadata": {
            "name": "backend-repo-credentials",
            "namespace": namespace,
            "labels": {"canopy.genaiops.io/credentials": "true"},
            "annotations": {"canopy.genaiops.io/allowed-urls": allowed},
        },
        "stringData": {"username": USER, "password": PASSWORD, "ca.crt": ca_pem},
    }


def _served_flags(kube: Kube, namespace: str) -> dict[str, object]:
    with port_forward(kube, namespace, "svc/canopy-backend", 8000) as url:
        flags: dict[str, object] = httpx.get(f"{url}/feature-flags", timeout=10).json()
    return flags


def test_git_experiment_promotes_through_commits_argo_cd_syncs(
    cluster: Cluster, installed: Kube, namespace: str, tmp_path: Path
) -> None:
    if cluster.node is None:
        pytest.skip("the Git server listens on the real node's address; on an existing cluster there is none to use")
    kube = installed
    node_ip = cluster.node.layout.node_ip
    root = tmp_path / "srv"
    bare = make_repo(root / USER, "backend", {VALUES: BEFORE_EXPERIMENT})
    context, ca_pem = tls_server_context([node_ip], tmp_path / "tls")
    with git_http_server(root, USER, PASSWORD, host=node_ip, tls=context) as server:
        repository = server.url(f"{USER}/backend")
        kube.apply(backend_manifests(namespace))
        with ArgoStandIn(kube, namespace, bare, VALUES) as argo:
            kube("-n", namespace, "rollout", "status", "deployment/canopy-backend", "--timeout=180s", timeout=200)
            kube.apply([_credentials(namespace, repository, ca_pem), _experiment(namespace, repository)])
            running = wait_phase(kube, namespace, "Running", timeout=300, name=NAME)

            # The operator's commit is on main, Argo CD (the stand-in) synced it, the backend serves A/B.
            log = history(bare)
            assert log[0][1] == "canopy-operator", log
            assert log[0][2].startswith("canopy: start the A/B test ("), log
            assert log[0][0] in argo.synced
            started = yaml.safe_load(show(bare, "main", VALUES))
            assert started["summarize"]["prompt_b"] == CHALLENGER
            assert started["ab_testing"]["enabled"] is True
            assert _served_flags(kube, namespace).get("ab_testing") in (True, {"enabled": True})
            assert running["status"]["delivery"]["revision"] == log[0][0]
            assert running["status"]["delivery"]["verifiedAt"]

            vote(kube, namespace, challenger=25, champion=5, seed=11)
            obj = wait_phase(kube, namespace, "Concluded", timeout=360, name=NAME)
            wait_for("Argo CD syncing the promotion", lambda: history(bare)[0][0] in argo.synced, 60)
            assert argo.error is None, argo.error

    status = obj["status"]
    assert status["winner"] == "challenger"
    assert (status["votes"]["challengerWins"], status["votes"]["championWins"]) == (25, 5)
    assert len(status["promotions"]) == 1
    assert status["promotions"][0]["revision"] == history(bare)[0][0]
    final = history(bare)
    operator_commits = [subject for _, author, subject in final if author == "canopy-operator"]
    assert [s.split(" (")[0] for s in operator_commits] == [
        "canopy: promote the challenger",
        "canopy: start the A/B test",
    ], operator_commits
    promoted = yaml.safe_load(show(bare, "main", VALUES))
    assert promoted["summarize"]["prompt"] == CHALLENGER
    assert "prompt_b" not in promoted["summarize"]
    rendered = yaml.safe_load(kube.json("-n", namespace, "get", "configmap", "canopy-config")["data"][KEY])
    assert rendered["summarize"]["prompt"] == CHALLENGER
    # Credentials went only to the repository, and only as the Secret's Basic auth.
    expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    assert server.received_auth
    assert set(server.received_auth) == {expected}
    assert len(events(kube, namespace, "Promoted")) == 1
    logs = kube("-n", OPERATOR_NAMESPACE, "logs", "deployment/canopy-operator")
    assert PASSWORD not in logs
    assert json.dumps(PASSWORD) not in json.dumps(obj)
