"""spec.backend.url reaches only a Service of the experiment's own namespace, or a host the admin allowed.

The attacks (issue #14, findings 3 and 4): a URL naming another team's backend copied their users' thumbs-down
texts into this experiment's ledger; any host made the operator a proxy whose error bodies came back in status;
``?x=`` neutralised the path the operator appends.
"""

from __future__ import annotations

import pytest

from canopy_operator.api.spec import PromptExperimentSpec
from canopy_operator.core.backends import BackendNotAllowed, backend_url

NS = "user1-test"


@pytest.mark.parametrize(
    ("url", "used"),
    [
        ("http://canopy-backend:8000", "http://canopy-backend.user1-test.svc:8000"),
        ("http://canopy-backend", "http://canopy-backend.user1-test.svc"),
        ("http://canopy-backend.user1-test:8000", "http://canopy-backend.user1-test:8000"),
        ("http://canopy-backend.user1-test.svc:8000", "http://canopy-backend.user1-test.svc:8000"),
        (
            "https://canopy-backend.user1-test.svc.cluster.local/api",
            "https://canopy-backend.user1-test.svc.cluster.local/api",
        ),
    ],
)
def test_a_service_of_the_experiments_namespace_is_used_in_that_namespace(url: str, used: str) -> None:
    assert backend_url(url, NS) == used


@pytest.mark.parametrize(
    "url",
    [
        "http://canopy-backend.user2-test:8000",  # another team's backend
        "http://canopy-backend.user2-test.svc.cluster.local:8000",
        "http://canopy-backend.user1-test.svc.attacker.example:8000",  # looks local, resolves outside
        "http://169.254.169.254/latest",  # cloud metadata
        "http://127.0.0.1:8000",
        "http://example.com",
        "http://[::1]:8000",
    ],
)
def test_any_other_host_is_refused_naming_the_field(url: str) -> None:
    with pytest.raises(BackendNotAllowed, match=r"spec\.backend\.url names .*CANOPY_BACKEND_HOSTS"):
        backend_url(url, NS)


@pytest.mark.parametrize("url", ["http://canopy-backend:8000/?x=", "http://canopy-backend:8000/#frag"])
def test_a_query_or_fragment_is_refused(url: str) -> None:
    with pytest.raises(BackendNotAllowed, match="query or a fragment"):
        backend_url(url, NS)


@pytest.mark.parametrize(
    ("url", "patterns"),
    [
        ("http://127.0.0.1:8000", ["127.0.0.1"]),
        ("http://127.0.0.1:8000", ["127.0.0.1:8000"]),
        ("http://canopy.shared.svc:8000", ["*.shared.svc"]),
        ("http://canopy-backend.user2-test:8000", ["canopy-backend.user2-test"]),
        ("http://[::1]:8000", ["[::1]:8000"]),
    ],
)
def test_the_admins_allow_list_opens_other_hosts(url: str, patterns: list[str]) -> None:
    assert backend_url(url, NS, patterns) == url


@pytest.mark.parametrize(
    ("url", "patterns"),
    [
        ("http://127.0.0.1:9000", ["127.0.0.1:8000"]),  # another port
        ("http://shared.svc:8000", ["*.shared.svc"]),  # the wildcard needs a label before the suffix
        ("http://evilshared.svc:8000", ["*.shared.svc"]),
        ("http://10.0.0.1:8000", ["*.0.0.1"]),  # wildcards never match addresses
    ],
)
def test_the_allow_list_matches_exactly(url: str, patterns: list[str]) -> None:
    with pytest.raises(BackendNotAllowed):
        backend_url(url, NS, patterns)


def test_the_crd_pattern_refuses_a_query_before_the_operator_sees_it() -> None:
    with pytest.raises(ValueError, match=r"backend\.url"):
        PromptExperimentSpec.model_validate(
            {"backend": {"url": "http://canopy-backend:8000/?x="}, "challenger": {"prompt": "Be brief."}}
        )
