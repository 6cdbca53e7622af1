"""What the operator's own RBAC allows, checked once at start-up with SelfSubjectAccessReviews.

Kopf watches CRDs and namespaces to follow the cluster's setup. The namespaced install (a Role in one
namespace) cannot be granted either (both are cluster-scoped), and Kopf then retries each forbidden
request with backoff for about a minute before falling back, so the operator would sit idle that long
after every start. Asking the API server first lets the handlers switch that scanning off instead.
"""

from __future__ import annotations

from kubernetes_asyncio import client

SCAN_NEEDS = (("apiextensions.k8s.io", "customresourcedefinitions"), ("", "namespaces"))


async def allowed(api: client.ApiClient, group: str, resource: str, verb: str) -> bool:
    """Whether this client's user may ``verb`` ``group/resource`` in every namespace."""
    review = client.V1SelfSubjectAccessReview(
        spec=client.V1SelfSubjectAccessReviewSpec(
            resource_attributes=client.V1ResourceAttributes(group=group, resource=resource, verb=verb)
        )
    )
    try:
        answer = await client.AuthorizationV1Api(api).create_self_subject_access_review(review)
    except client.ApiException:
        return False
    return bool(answer.status and answer.status.allowed)


async def may_scan_cluster(api: client.ApiClient) -> bool:
    """Whether Kopf's CRD and namespace scanning is permitted (list and watch on both)."""
    for group, resource in SCAN_NEEDS:
        for verb in ("list", "watch"):
            if not await allowed(api, group, resource, verb):
                return False
    return True
