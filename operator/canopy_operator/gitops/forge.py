"""Open (or find again) the pull request for a pushed branch on Gitea or GitHub.

Both forges take ``POST {api}/repos/{owner}/{repo}/pulls`` with ``{title, body, head, base}``. The open pull
requests are listed first and one with the same head and base is reused, so calling this any number of times
opens one pull request. Gitea authenticates with Basic auth (a token works as the password) or ``token``;
GitHub with ``Bearer``.

The forge is a server named in the spec, so every answer is bounded and checked (security-model rules 3 and 4):
each call has a total deadline (connect, answer and body together: a server dripping bytes cannot hold it), an
answer over :data:`MAX_BODY` bytes is refused without being read whole (by its ``Content-Length``, else while
reading), every JSON shape is checked (anything unexpected is a :class:`ForgeError`), and an error message carries
the status code and at most a short, redacted, one-line ``message`` field, never the body. Redirects are not
followed, so the credentials go to the API URL the Secret allows and nowhere else.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from canopy_operator.core.redact import Redactor
from canopy_operator.gitops.credentials import GitCredentials, tls_context
from canopy_operator.gitops.disk import human
from canopy_operator.gitops.errors import ForgeError, GitAuthError, brief

Provider = Literal["Gitea", "GitHub"]
MAX_BODY = 1024 * 1024
MESSAGE_LIMIT = 160
"""Bytes of the forge's own ``message`` an error carries."""
_MAX_PAGES = 20
_PAGE = 50
_MAX_URL = 2048
_MAX_REF = 255


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
        raise ForgeError(f"cannot tell owner and repository from {brief(Redactor()(repository), 120)!r}")
    name = parts[-1].removesuffix(".git")
    return RepoRef(owner=parts[-2], name=name)


def _ref(value: object, what: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, dict):
        raise ForgeError(f"{what}: the forge answered a branch that is not an object")
    ref = value.get("ref", "")
    if not isinstance(ref, str) or len(ref) > _MAX_REF:
        raise ForgeError(f"{what}: the forge answered a branch without a usable ref")
    return ref


def _parse(data: object, what: str) -> PullRequest:
    """A pull request from the forge's JSON object; any other shape is a ``ForgeError``."""
    if not isinstance(data, dict):
        raise ForgeError(f"{what}: the forge answered a {type(data).__name__} where a pull request belongs")
    number = data.get("number")
    if not isinstance(number, int) or isinstance(number, bool) or number < 0:
        raise ForgeError(f"{what}: the forge answered a pull request without a whole number")
    url = data.get("html_url") or data.get("url") or ""
    state = data.get("state", "open")
    if not isinstance(url, str) or not isinstance(state, str) or len(state) > 32:
        raise ForgeError(f"{what}: the forge answered pull request #{number} in an unexpected shape")
    usable = url.startswith(("https://", "http://")) and len(url) <= _MAX_URL and url == brief(url, _MAX_URL)
    return PullRequest(
        number=number,
        url=url if usable and " " not in url else "",
        state=state,
        merged=data.get("merged") is True or isinstance(data.get("merged_at"), str),
        head=_ref(data.get("head"), what),
        base=_ref(data.get("base"), what),
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
        max_body: int = MAX_BODY,
    ) -> None:
        self.provider = provider
        self.api_url = api_url.rstrip("/")
        self.redact = (credentials or GitCredentials()).redactor()
        self._auth: httpx.Auth | None = None
        self._headers = {"Accept": "application/json", "Accept-Encoding": "identity"}
        password = credentials.password if credentials else None
        if password and provider == "GitHub":
            self._headers["Authorization"] = f"Bearer {password}"
            self._headers["Accept"] = "application/vnd.github+json"
        elif password and credentials and credentials.username:
            self._auth = httpx.BasicAuth(credentials.username, password)
        elif password:
            self._headers["Authorization"] = f"token {password}"
        self.time_limit = time_limit
        self.max_body = max_body
        self._tls = tls_context(credentials)

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
        return _parse(data, "open a pull request")

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
                pr = _parse(item, "list pull requests")
                if pr.head == head and pr.base == base:
                    return pr
            if len(data) < _PAGE:
                return None
        return None

    async def get_pull_request(self, repo: RepoRef, number: int) -> PullRequest:
        status, data = await self._call("GET", f"/repos/{repo.owner}/{repo.name}/pulls/{number}")
        if status >= 300 or not isinstance(data, dict):
            raise self._failure(f"read pull request #{number}", status, data)
        return _parse(data, f"read pull request #{number}")

    async def _call(
        self, method: str, path: str, *, json: Any = None, params: dict[str, str | int] | None = None
    ) -> tuple[int, Any]:
        """Status and JSON (None when the body is not JSON) of one request, within the deadline and the cap."""
        try:
            async with asyncio.timeout(self.time_limit):
                async with (
                    httpx.AsyncClient(
                        timeout=self.time_limit,
                        auth=self._auth,
                        headers=self._headers,
                        follow_redirects=False,
                        verify=self._tls,
                    ) as client,
                    client.stream(method, self.api_url + path, json=json, params=params) as response,
                ):
                    status = response.status_code
                    if status in (401, 403):
                        raise GitAuthError(f"the forge rejected the credentials ({status} on {brief(path, 160)})")
                    raw = await self._read(response, method, path)
        except TimeoutError:
            raise ForgeError(f"{method} {brief(path, 160)}: no complete answer within {self.time_limit:g}s") from None
        except httpx.HTTPError as exc:
            detail = brief(self.redact(f"{type(exc).__name__}: {exc}"), 160)
            raise ForgeError(f"{method} {brief(path, 160)} failed: {detail}") from None
        return status, _json(raw)

    async def _read(self, response: httpx.Response, method: str, path: str) -> bytes:
        too_large = ForgeError(f"{method} {brief(path, 160)}: the answer is larger than {human(self.max_body)}")
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body:
            raise too_large
        if response.headers.get("content-encoding", "identity").lower() not in ("", "identity"):
            raise ForgeError(f"{method} {brief(path, 160)}: the forge sent a compressed answer though asked not to")
        body = bytearray()
        async for chunk in response.aiter_raw():
            body += chunk
            if len(body) > self.max_body:
                raise too_large
        return bytes(body)

    def _failure(self, what: str, status: int, data: Any) -> ForgeError:
        """The status code and at most a short, redacted ``message`` of the forge's JSON; never the body."""
        message = data.get("message") if isinstance(data, dict) else None
        detail = brief(self.redact(message), MESSAGE_LIMIT) if isinstance(message, str) else ""
        if 200 <= status < 300:
            detail = detail or "unexpected answer"
        return ForgeError(f"could not {what}: HTTP {status}" + (f": {detail}" if detail else ""))


def _json(raw: bytes) -> Any:
    """The JSON value of ``raw``, or None (not JSON, or nested too deep to parse)."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return None
