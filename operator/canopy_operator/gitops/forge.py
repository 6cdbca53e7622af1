"""Open (or find again) the pull request for a pushed branch on Gitea or GitHub.

Both forges take ``POST {api}/repos/{owner}/{repo}/pulls`` with ``{title, body, head, base}``. The open pull
requests are listed first and one with the same head and base is reused, so calling this any number of times
opens one pull request. Gitea authenticates with Basic auth (a token works as the password) or ``token``;
GitHub with ``Bearer``. Every error message is redacted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from canopy_operator.core.redact import Redactor
from canopy_operator.gitops.credentials import GitCredentials
from canopy_operator.gitops.errors import ForgeError, GitAuthError

Provider = Literal["Gitea", "GitHub"]
_MAX_PAGES = 20
_PAGE = 50


@dataclass(frozen=True)
class RepoRef:
    owner: str
    name: str


@dataclass(frozen=True)
class PullRequest:
    number: int
    url: str
    state: str
    """``open`` or ``closed``."""
    merged: bool
    head: str
    base: str


_SCP = re.compile(r"^[^@\s/]+@[^:\s/]+:(?P<path>.+)$")


def repo_ref(repository: str) -> RepoRef:
    """Owner and name from a clone URL (https://host/owner/name.git, ssh://..., git@host:owner/name.git)."""
    scp = _SCP.match(repository)
    path = scp.group("path") if scp else httpx.URL(repository).path
    parts = [p for p in path.strip("/").split("/") if p]
    if len(parts) < 2:
        raise ForgeError(f"cannot tell owner and repository from {Redactor()(repository)!r}")
    name = parts[-1].removesuffix(".git")
    return RepoRef(owner=parts[-2], name=name)


def _parse(data: dict[str, Any]) -> PullRequest:
    return PullRequest(
        number=int(data["number"]),
        url=str(data.get("html_url") or data.get("url") or ""),
        state=str(data.get("state", "open")),
        merged=bool(data.get("merged") or data.get("merged_at")),
        head=str((data.get("head") or {}).get("ref", "")),
        base=str((data.get("base") or {}).get("ref", "")),
    )


class Forge:
    """A small client of the forge's pull-request API."""

    def __init__(
        self,
        provider: Provider,
        api_url: str,
        credentials: GitCredentials | None,
        *,
        time_limit: float = 30.0,
    ) -> None:
        self.provider = provider
        self.api_url = api_url.rstrip("/")
        self.redact = (credentials or GitCredentials()).redactor()
        self._auth: httpx.Auth | None = None
        self._headers = {"Accept": "application/json"}
        password = credentials.password if credentials else None
        if password and provider == "GitHub":
            self._headers["Authorization"] = f"Bearer {password}"
            self._headers["Accept"] = "application/vnd.github+json"
        elif password and credentials and credentials.username:
            self._auth = httpx.BasicAuth(credentials.username, password)
        elif password:
            self._headers["Authorization"] = f"token {password}"
        self.time_limit = time_limit

    async def ensure_pull_request(self, repo: RepoRef, head: str, base: str, title: str, body: str) -> PullRequest:
        """The open pull request from ``head`` into ``base``, opened now if there is none."""
        found = await self.find_pull_request(repo, head, base)
        if found is not None:
            return found
        payload = {"title": title, "body": body, "head": head, "base": base}
        status, data = await self._call("POST", f"/repos/{repo.owner}/{repo.name}/pulls", json=payload)
        if status in (409, 422):  # opened meanwhile by someone else (or a previous attempt): use that one
            found = await self.find_pull_request(repo, head, base)
            if found is not None:
                return found
        if status >= 300 or not isinstance(data, dict):
            raise self._failure("open a pull request", status, data)
        return _parse(data)

    async def find_pull_request(self, repo: RepoRef, head: str, base: str) -> PullRequest | None:
        """An open pull request from ``head`` into ``base``, if one exists."""
        for page in range(1, _MAX_PAGES + 1):
            params: dict[str, str | int] = {"state": "open", "page": page}
            if self.provider == "GitHub":
                params |= {"head": f"{repo.owner}:{head}", "base": base, "per_page": _PAGE}
            else:
                params["limit"] = _PAGE
            status, data = await self._call("GET", f"/repos/{repo.owner}/{repo.name}/pulls", params=params)
            if status >= 300 or not isinstance(data, list):
                raise self._failure("list pull requests", status, data)
            for item in data:
                pr = _parse(item)
                if pr.head == head and pr.base == base:
                    return pr
            if len(data) < _PAGE:
                return None
        return None

    async def get_pull_request(self, repo: RepoRef, number: int) -> PullRequest:
        status, data = await self._call("GET", f"/repos/{repo.owner}/{repo.name}/pulls/{number}")
        if status >= 300 or not isinstance(data, dict):
            raise self._failure(f"read pull request #{number}", status, data)
        return _parse(data)

    async def _call(
        self, method: str, path: str, *, json: Any = None, params: dict[str, str | int] | None = None
    ) -> tuple[int, Any]:
        try:
            async with httpx.AsyncClient(timeout=self.time_limit, auth=self._auth, headers=self._headers) as client:
                response = await client.request(method, self.api_url + path, json=json, params=params)
        except httpx.HTTPError as exc:
            raise ForgeError(self.redact(f"{method} {self.api_url}{path} failed: {exc}")) from None
        if response.status_code in (401, 403):
            raise GitAuthError(self.redact(f"the forge rejected the credentials ({response.status_code} on {path})"))
        try:
            return response.status_code, response.json()
        except ValueError:
            return response.status_code, response.text[:200]

    def _failure(self, what: str, status: int, data: Any) -> ForgeError:
        detail = data.get("message", "") if isinstance(data, dict) else str(data)[:200]
        return ForgeError(self.redact(f"could not {what}: HTTP {status} {detail}".rstrip()))
