"""OpenShift's ``restricted-v2`` security context constraint, as far as UIDs go, played on a plain cluster with
admission policies (test-only: what the course's platform does to every pod we ship or create).

restricted-v2 gives each namespace a UID range (``openshift.io/sa.scc.uid-range``, e.g. ``1000680000/10000``):

- a pod that sets no ``runAsUser`` gets the range's first UID; its primary group is 0 (root's group), as the
  container runtime gives a UID the image's ``/etc/passwd`` does not know;
- a pod that pins ``runAsUser``, ``runAsGroup`` or ``fsGroup`` (pod or container level) outside the range is
  refused.

Here a ``MutatingAdmissionPolicy`` (beta in Kubernetes 1.34; the dev kit's node enables it) fills in the UID
and a ``ValidatingAdmissionPolicy`` refuses pins outside the range, for pods in every namespace but the
cluster's own (``kube-*``). One range serves the whole cluster: the UID is drawn at random per session, high
as OpenShift's are. fsGroup is left unset, the stricter case (plain Kubernetes does not set one either).
"""

from __future__ import annotations

import random
from typing import Any

POLICY = "canopy-e2e-restricted-v2"
RANGE_SIZE = 10_000
REFUSAL = "restricted-v2"
_SYSTEM = ["kube-system", "kube-public", "kube-node-lease"]


def draw_uid() -> int:
    """The first UID of a range as OpenShift allocates them (1000000000 + n * 10000)."""
    return 1_000_000_000 + random.randrange(1, 1000) * RANGE_SIZE


def _match() -> dict[str, Any]:
    return {
        "resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}],
        "namespaceSelector": {
            "matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": _SYSTEM}]
        },
    }


def _in_range(path: str, first: int) -> str:
    return f"(!has({path}) || ({path} >= {first} && {path} < {first + RANGE_SIZE}))"


def policies(first_uid: int) -> list[dict[str, Any]]:
    """The two policies and their bindings for the range starting at ``first_uid``."""
    pod = "object.spec.securityContext"
    pod_ok = f"(!has({pod}) || ({_in_range(pod + '.runAsUser', first_uid)} && "
    pod_ok += f"{_in_range(pod + '.runAsGroup', first_uid)} && {_in_range(pod + '.fsGroup', first_uid)}))"
    container_ok = (
        f"(!has(c.securityContext) || ({_in_range('c.securityContext.runAsUser', first_uid)} && "
        f"{_in_range('c.securityContext.runAsGroup', first_uid)}))"
    )
    every_container = (
        f"object.spec.containers.all(c, {container_ok}) && "
        f"(!has(object.spec.initContainers) || object.spec.initContainers.all(c, {container_ok}))"
    )
    assign = f"Object{{spec: Object.spec{{securityContext: Object.spec.securityContext{{runAsUser: {first_uid}}}}}}}"
    return [
        {
            "apiVersion": "admissionregistration.k8s.io/v1beta1",
            "kind": "MutatingAdmissionPolicy",
            "metadata": {"name": POLICY},
            "spec": {
                "failurePolicy": "Fail",
                "reinvocationPolicy": "Never",
                "matchConstraints": _match(),
                "matchConditions": [
                    {"name": "no-uid-pinned", "expression": f"!has({pod}) || !has({pod}.runAsUser)"},
                ],
                "mutations": [{"patchType": "ApplyConfiguration", "applyConfiguration": {"expression": assign}}],
            },
        },
        {
            "apiVersion": "admissionregistration.k8s.io/v1beta1",
            "kind": "MutatingAdmissionPolicyBinding",
            "metadata": {"name": POLICY},
            "spec": {"policyName": POLICY},
        },
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": POLICY},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": _match(),
                "validations": [
                    {
                        "expression": f"{pod_ok} && {every_container}",
                        "message": (
                            f"unable to validate against any security context constraint: {REFUSAL} allows "
                            f"runAsUser, runAsGroup and fsGroup only in [{first_uid}, {first_uid + RANGE_SIZE - 1}]"
                        ),
                    }
                ],
            },
        },
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": POLICY},
            "spec": {"policyName": POLICY, "validationActions": ["Deny"]},
        },
    ]
