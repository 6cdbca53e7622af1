"""The pods we ship and create run as OpenShift's ``restricted-v2`` runs them: an assigned high UID in group 0.

On the dev kit's node the tier plays restricted-v2 with admission policies (:mod:`tests.support.openshift`):
every pod outside ``kube-*`` gets the session's UID unless it pins one, and a pod that pins a UID outside the
range is refused. The other e2e tests (promotion through rollouts, Git, evaluation Jobs, a restart) all run
under it; this one shows the emulation bites and that the operator really runs as that UID with group 0.
"""

from __future__ import annotations

import json

import pytest

from tests.support import openshift
from tests.support.node_e2e import OPERATOR_NAMESPACE, Cluster, CommandFailed, Kube, operator_pod, pinned_pod


def test_operator_runs_as_the_assigned_uid_and_a_pinned_uid_is_refused(
    cluster: Cluster, installed: Kube, namespace: str
) -> None:
    if cluster.restricted_uid is None:
        pytest.skip("the restricted-v2 emulation needs MutatingAdmissionPolicy, which only the dev kit's node enables")
    kube = installed
    uid = cluster.restricted_uid
    pod = operator_pod(kube)
    assert pod["spec"]["securityContext"].get("runAsUser") == uid
    assert all("runAsUser" not in (c.get("securityContext") or {}) for c in pod["spec"]["containers"])
    ids = kube("-n", OPERATOR_NAMESPACE, "exec", pod["metadata"]["name"], "-c", "operator", "--", "id")
    assert f"uid={uid}" in ids, ids
    assert "gid=0(root)" in ids, ids
    # The operator writes where it must as that UID: its Git cache and HOME.
    probe = "touch /var/cache/canopy-operator/.probe /tmp/.probe && rm /var/cache/canopy-operator/.probe /tmp/.probe"
    kube("-n", OPERATOR_NAMESPACE, "exec", pod["metadata"]["name"], "-c", "operator", "--", "sh", "-c", probe)

    # What the manifests and Jobs pinned before (UID 65532) is refused where the course runs.
    kube("create", "namespace", namespace)
    with pytest.raises(CommandFailed, match=openshift.REFUSAL):
        kube("-n", namespace, "create", "-f", "-", input=json.dumps(pinned_pod(namespace, 65532)))
