"""The shipped roles for experiment authors and viewers (not the operator's own permissions)."""

from __future__ import annotations

from typing import Any

import yaml

from canopy_operator.api.base import PLURAL
from canopy_operator.gen.rbac import render_rbac_yaml


def _roles() -> dict[str, dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(render_rbac_yaml()["user-roles.yaml"]) if d]
    return {d["metadata"]["name"]: d for d in docs}


def test_editor_role_aggregates_into_edit_and_admin_and_can_approve() -> None:
    editor = _roles()["canopy-operator-promptexperiment-editor"]
    labels = editor["metadata"]["labels"]
    assert labels["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert labels["rbac.authorization.k8s.io/aggregate-to-admin"] == "true"
    verbs = {v for r in editor["rules"] if PLURAL in r["resources"] for v in r["verbs"]}
    assert {"create", "patch", "delete"} <= verbs


def test_viewer_role_only_reads() -> None:
    viewer = _roles()["canopy-operator-promptexperiment-viewer"]
    assert viewer["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    assert {v for r in viewer["rules"] for v in r["verbs"]} == {"get", "list", "watch"}


def test_user_roles_use_no_wildcard() -> None:
    for role in _roles().values():
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], role["metadata"]["name"]
