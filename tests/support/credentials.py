"""Credentials Secrets as the operator's gateway reads them, for tests of where credentials may go."""

from __future__ import annotations

from dataclasses import dataclass, field

from canopy_operator.k8s.errors import NotFound

LABEL = "canopy.genaiops.io/credentials"
ALLOWED_URLS = "canopy.genaiops.io/allowed-urls"
USER, PASSWORD = "user1", "gitea-Pa55word-7f3k"


@dataclass
class Secret:
    """What ``Gateway.read_secret`` returns: data, labels, annotations."""

    data: dict[str, str] = field(repr=False)
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    name: str = "repo"
    namespace: str = "user1-test"
    resource_version: str = "1"


def opted_in(allowed: str, name: str = "repo", **data: str) -> Secret:
    """A Secret that opts in as credentials for the URL prefixes ``allowed`` (default: user1's password)."""
    return Secret(data or {"username": USER, "password": PASSWORD}, {LABEL: "true"}, {ALLOWED_URLS: allowed}, name)


class FakeSecrets:
    """The namespace's Secrets by name, as the operator's ``get`` on secrets sees them."""

    def __init__(self, *secrets: Secret) -> None:
        self.secrets = {s.name: s for s in secrets}
        self.reads: list[str] = []

    async def read_secret(self, namespace: str, name: str) -> Secret:
        self.reads.append(f"{namespace}/{name}")
        if name not in self.secrets:
            raise NotFound(f"get Secret {namespace}/{name}: not found")
        return self.secrets[name]
