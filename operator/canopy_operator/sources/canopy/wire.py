"""What carries the Canopy client's requests: aiohttp, one small session per client.

The client (:mod:`.client`) needs little of a wire: send one request, then the status, the headers and the body
in chunks as they arrive, and a way to end the answer that says whether its connection may serve the next
request. :class:`AiohttpWire` is that over one aiohttp session, made on the first request and kept until the
client is closed:

- at most :data:`POOL_CONNECTIONS` connections, idle ones kept :data:`~canopy_operator.sources.http.
  POOLED_KEEPALIVE_SECONDS`; the session is the client's own, so never shared across experiments or tenants;
- no time limit of its own: the client bounds every call as a whole (``asyncio.timeout``);
- no redirects followed (one could take the request elsewhere), no cookies kept, no compression asked for (the
  body limits count what is sent);
- HTTPS verified with the trust store given (the process's default otherwise);
- the proxy the environment names for the backend's URL (``NO_PROXY``, ``HTTP_PROXY``/``HTTPS_PROXY``,
  ``ALL_PROXY``), looked up once, as httpx did for every request before; one this client cannot use
  (``https://``, ``socks5://``) fails every request by name instead of being gone around;
- an idempotent request that finds its kept connection closed by the server is sent once more on a new one
  (aiohttp's own rule); a POST never is.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.request import getproxies, proxy_bypass

import aiohttp
from yarl import URL

from canopy_operator.sources.http import POOLED_KEEPALIVE_SECONDS

POOL_CONNECTIONS = 4
"""Connections one client holds at most: a pass makes its calls one after another, so a few are plenty."""


class UnsupportedProxy(aiohttp.ClientConnectionError):
    """The environment names a proxy for the backend that this client cannot use; nothing is sent."""


@dataclass(frozen=True)
class EnvProxy:
    """The proxy the environment names for one URL: ``url`` without credentials, ``authorization`` the
    ``Proxy-Authorization`` value for its credentials, ``problem`` why it cannot be used (then nothing is sent)."""

    url: URL | None
    authorization: str | None = None
    problem: str | None = None


def env_proxy(target: URL) -> EnvProxy | None:
    """The proxy for ``target`` as httpx and curl read the environment: ``NO_PROXY`` first, then the scheme's own
    variable (``HTTP_PROXY``, ``HTTPS_PROXY``), then ``ALL_PROXY``; None when there is none. A proxy URL without
    a scheme is ``http://``. Only ``http://`` proxies are supported (aiohttp); any other (``https://``,
    ``socks5://``) is a problem, never a reason to go around the proxy."""
    host = target.raw_host or ""
    if not host or proxy_bypass(host):
        return None
    proxies = getproxies()
    raw = proxies.get(target.scheme) or proxies.get("all")
    if not raw:
        return None
    try:
        proxy = URL(raw if "://" in raw else f"http://{raw}")
    except ValueError:
        return EnvProxy(None, problem="the proxy the environment names for the backend is not a URL")
    where = f"{proxy.scheme}://{proxy.raw_host}" + (f":{proxy.explicit_port}" if proxy.explicit_port else "")
    if proxy.scheme != "http" or not proxy.raw_host:
        return EnvProxy(None, problem=f"the proxy the environment names ({where}) is not supported: http:// only")
    authorization = None
    if proxy.user is not None:
        authorization = aiohttp.encode_basic_auth(proxy.user, proxy.password or "")
    return EnvProxy(proxy.with_user(None), authorization)


class Answer(Protocol):
    """An answer whose head has arrived and whose body has not been read."""

    @property
    def status_code(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]:
        """Case-insensitive."""
        ...

    def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives (transfer encoding undone, nothing decompressed)."""
        ...

    def finish(self, *, reuse: bool) -> None:
        """End the answer: its connection goes back to the pool only when ``reuse`` and the body was read to its
        end; otherwise it is closed."""
        ...


class Wire(Protocol):
    async def send(self, method: str, path: str, body: Any) -> Answer:
        """Send ``method path`` (``body`` as JSON unless None); the answer once its head arrived. Raises
        aiohttp's errors (``aiohttp.ClientError``) and ``OSError``."""
        ...

    async def aclose(self) -> None: ...

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` ran."""
        ...


WireFactory = Callable[[str, ssl.SSLContext | None], Wire]
"""Makes the wire of a client: its base URL and trust store."""


class _AiohttpAnswer:
    __slots__ = ("_response",)

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    @property
    def status_code(self) -> int:
        return self._response.status

    @property
    def headers(self) -> Mapping[str, str]:
        return self._response.headers

    def chunks(self) -> AsyncIterator[bytes]:
        return self._response.content.iter_any()

    def finish(self, *, reuse: bool) -> None:
        if reuse and self._response.content.at_eof():
            self._response.release()
        else:
            self._response.close()


class AiohttpWire:
    """Requests to one base URL over one aiohttp session (see the module)."""

    def __init__(self, base_url: str, tls: ssl.SSLContext | None) -> None:
        self.base_url = base_url
        self._ssl: ssl.SSLContext | bool = tls if tls is not None else True
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        self._proxy: EnvProxy | None = None

    def _open(self) -> aiohttp.ClientSession:
        self._proxy = env_proxy(URL(self.base_url))
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=POOL_CONNECTIONS, keepalive_timeout=POOLED_KEEPALIVE_SECONDS),
            headers={"Accept-Encoding": "identity"},
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=None),
            trust_env=False,
        )

    @property
    def closed(self) -> bool:
        return self._closed

    async def send(self, method: str, path: str, body: Any) -> Answer:
        if self._closed:
            raise RuntimeError("the client is closed")
        if self._session is None:
            self._session = self._open()
        proxy = self._proxy
        if proxy is not None and proxy.problem:
            raise UnsupportedProxy(proxy.problem)  # never around the proxy the environment names
        url = self.base_url + path
        headers: dict[str, str] = {}
        proxy_headers: dict[str, str] | None = None
        if proxy is not None and proxy.authorization:
            # aiohttp sends proxy_headers only on an HTTPS tunnel's CONNECT; a plain request goes to the proxy
            # whole, so its own headers carry the credentials.
            if url.startswith("https:"):
                proxy_headers = {"Proxy-Authorization": proxy.authorization}
            else:
                headers["Proxy-Authorization"] = proxy.authorization
        response = await self._session.request(
            method,
            url,
            json=body,
            headers=headers,
            allow_redirects=False,
            ssl=self._ssl,
            proxy=proxy.url if proxy is not None else None,
            proxy_headers=proxy_headers,
        )
        return _AiohttpAnswer(response)

    async def aclose(self) -> None:
        self._closed = True
        if self._session is not None:
            await self._session.close()
