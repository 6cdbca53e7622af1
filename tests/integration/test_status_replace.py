"""A pass's status replaces the stored one (``PUT .../status``, issue #20) with exactly the result the merge patch
it replaced left, on a real API server, as the operator's ServiceAccount (the shipped RBAC):

- two experiments with the same stored status each get the same new status, one by merge patch from the stored
  status and one by replacement: the stored statuses are equal, a field the new status drops is gone from both,
  and spec, labels, annotations and finalizers are as they were;
- a replacement on a stale resourceVersion is refused (Conflict) and writes nothing;
- where RBAC grants only ``patch`` on the status (a ClusterRole from before), the write merge-patches instead and
  the status is still the one computed.
"""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client import ApiClient
from kubernetes_asyncio.config import new_client_from_config

from canopy_devkit.controlplane import ControlPlane
from canopy_operator.api.base import GROUP, PLURAL, VERSION
from canopy_operator.core.status import merge_patch
from canopy_operator.k8s.errors import Conflict
from canopy_operator.k8s.gateway import Gateway
from canopy_operator.service.services import patch_status
from tests.support.faults import experiment

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

STORED: dict[str, Any] = {
    "phase": "Progressing",
    "message": "delivering config",
    "observedGeneration": 1,
    "original": {"prompt": "Summarize the text:\n", "feedbackEnabled": False, "abTestingEnabled": False},
    "delivery": {"mode": "ConfigMap", "argoManaged": False},
    "conditions": [
        {
            "type": "Ready",
            "status": "False",
            "reason": "NotVerified",
            "message": "",
            "observedGeneration": 1,
            "lastTransitionTime": "2026-11-30T12:00:00Z",
        }
    ],
}
NEW: dict[str, Any] = {
    **{k: v for k, v in STORED.items() if k != "message"},  # a field the new status drops
    "phase": "Running",
    "progress": "0/30 votes",
    "delivery": {"mode": "ConfigMap", "argoManaged": False, "revision": "config-sha256:abc"},
    "conditions": [{**STORED["conditions"][0], "status": "True", "reason": "Verified"}],
}


async def _created(api: ApiClient, namespace: str, name: str) -> dict[str, Any]:
    custom = client.CustomObjectsApi(api)
    body = experiment("http://127.0.0.1:1")
    body["metadata"] = {"name": name, "labels": {"team": "search"}, "annotations": {"note": "kept"}}
    body["metadata"]["finalizers"] = ["example.com/hold"]
    await custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    obj: dict[str, Any] = await custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, name, {"status": STORED}, _content_type="application/merge-patch+json"
    )
    return obj


async def _release(api: ApiClient, namespace: str, names: list[str]) -> None:
    custom = client.CustomObjectsApi(api)
    for name in names:
        await custom.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            {"metadata": {"finalizers": None}},
            _content_type="application/merge-patch+json",
        )


def _kept(obj: dict[str, Any]) -> tuple[Any, ...]:
    meta = obj["metadata"]
    return obj["spec"], meta.get("labels"), meta.get("annotations"), meta.get("finalizers"), meta["generation"]


async def test_a_replaced_status_is_the_merge_patched_one(
    admin_api: ApiClient, operator_api: ApiClient, namespace: str
) -> None:
    patched, replaced = (
        await _created(admin_api, namespace, "patched"),
        await _created(admin_api, namespace, "replaced"),
    )
    gateway = Gateway(operator_api, deadline=20)
    try:
        for obj, whole in ((patched, None), (replaced, NEW)):
            meta, stored = obj["metadata"], obj["status"]
            name = meta["name"]
            written, _ = await patch_status(
                gateway, namespace, name, merge_patch(stored, NEW), meta["resourceVersion"], meta, stored, whole=whole
            )
            assert written["status"] == NEW, name
        custom = client.CustomObjectsApi(admin_api)
        after = {
            n: await custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, n)
            for n in ("patched", "replaced")
        }
        assert after["patched"]["status"] == after["replaced"]["status"] == NEW
        for name, before in (("patched", patched), ("replaced", replaced)):
            assert _kept(after[name]) == _kept(before), name
        managers = {
            m["manager"] for m in after["replaced"]["metadata"]["managedFields"] if m.get("subresource") == "status"
        }
        assert managers, "the replacement is tracked as the status subresource's"

        stale = replaced["metadata"]["resourceVersion"]  # the version before the write above
        with pytest.raises(Conflict):
            await gateway.replace_experiment_status(namespace, "replaced", {**NEW, "phase": "Degraded"}, stale)
        again = await custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "replaced")
        assert again["status"] == NEW
    finally:
        await _release(admin_api, namespace, ["patched", "replaced"])


async def test_without_update_on_the_status_the_write_merge_patches(
    admin_api: ApiClient, control_plane: ControlPlane, namespace: str
) -> None:
    """A Role granting the status ``patch`` only (the verbs of the releases before): the first replacement is
    refused (403, nothing written), the write goes out as a merge patch, and later writes do not ask again."""
    user = f"old-rbac-{namespace}"
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": user, "namespace": namespace},
        "rules": [
            {"apiGroups": [GROUP], "resources": [PLURAL], "verbs": ["get", "list"]},
            {"apiGroups": [GROUP], "resources": [f"{PLURAL}/status"], "verbs": ["patch"]},
        ],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": user, "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": user},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }
    rbac = client.RbacAuthorizationV1Api(admin_api)
    await rbac.create_namespaced_role(namespace, role)
    await rbac.create_namespaced_role_binding(namespace, binding)
    obj = await _created(admin_api, namespace, "old-rbac")
    api = await new_client_from_config(config_file=str(control_plane.user_kubeconfig(user, ())))
    try:
        gateway = Gateway(api, deadline=20)
        meta, stored = obj["metadata"], obj["status"]
        written, _ = await patch_status(
            gateway, namespace, "old-rbac", merge_patch(stored, NEW), meta["resourceVersion"], meta, stored, whole=NEW
        )
        assert written["status"] == NEW
        assert gateway.replaces_status is False
    finally:
        await api.close()
        await _release(admin_api, namespace, ["old-rbac"])
