"""How the operator reaches the API server: one loader for Kopf's login and for the operator's own client.

``kubernetes_asyncio``'s loader reads the in-cluster service account, else the kubeconfig (``$KUBECONFIG`` at the
time of the call, else ``~/.kube/config``) at a context, and runs the user's exec plugin if it has one (EKS
``aws eks get-token``, GKE ``gke-gcloud-auth-plugin``, ``kubectl oidc-login``). :func:`load_credentials` turns
that into :class:`Credentials`, the plain facts Kopf's login handler needs; :func:`api_client` makes the
operator's own client from the same load, so both reach the same server as the same user.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiohttp.helpers import get_env_proxy_for_url
from kubernetes_asyncio import client, config
from kubernetes_asyncio.config.kube_config import KubeConfigLoader
from yarl import URL

DEFAULT_KUBECONFIG = "~/.kube/config"
READ_BUFSIZE = 2**21
"""The read buffer ``kubernetes_asyncio`` gives its session (a watch event can hold a whole 1.5 MiB object)."""
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class JsonApiClient(client.ApiClient):
    """The client's ``ApiClient``, except that a request body that is plain JSON already (every body the operator
    sends: dicts of strings, numbers, booleans, lists and dicts) is sent as it is.

    The generated client walks every body in Python to turn model objects and dates into JSON values
    (``sanitize_for_serialization``), a copy of the whole dict per request: about 4 % of the operator's CPU in a
    burst of new experiments, most of it on status writes (issue #20). ``json.dumps`` in C answers whether the
    walk has anything to do; a body it cannot encode (a model object, a date) takes the client's own path."""

    def sanitize_for_serialization(self, obj: object) -> object:
        if isinstance(obj, dict):
            try:
                json.dumps(obj)
            except (TypeError, ValueError):
                pass
            else:
                return obj
        return super().sanitize_for_serialization(obj)


class NoConfiguration(config.ConfigException):
    """Neither an in-cluster service account nor a kubeconfig file: nothing to log in with."""


@dataclass(frozen=True)
class Credentials:
    """Where the API server is and how to authenticate to it, as loaded once (no client objects).

    Certificate and key data from a kubeconfig or an exec plugin are paths too: the loader writes them to
    private temporary files (one per content, removed at exit). ``expiration`` is known for exec-plugin tokens
    that state one (``status.expirationTimestamp``); a login after it runs the plugin again."""

    server: str
    ca_path: str | None = None
    insecure: bool = False
    certificate_path: str | None = None
    private_key_path: str | None = None
    scheme: str | None = None
    """The ``Authorization`` scheme of ``token``, e.g. ``Bearer``."""
    token: str | None = field(default=None, repr=False)
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    default_namespace: str | None = None
    """The service account's namespace in a cluster, else the context's ``namespace`` (None when it has none)."""
    proxy_url: str | None = None
    expiration: datetime.datetime | None = None
    """When the token expires (timezone-aware, UTC), if the source said."""


class _ExecTokenRefresh:
    """The operator's own client re-runs the exec plugin shortly before its token expires (as kubectl does).

    Installed as the Configuration's ``refresh_api_key_hook``, which the client awaits before every request; the
    loader runs the plugin again only within five minutes of the expiry, one run at a time."""

    def __init__(self, loader: KubeConfigLoader) -> None:
        self._loader = loader
        self._lock = asyncio.Lock()

    async def __call__(self, configuration: client.Configuration) -> None:
        async with self._lock:
            await self._loader.load_from_exec_plugin()
        configuration.api_key["BearerToken"] = self._loader.token


@dataclass(frozen=True)
class _Loaded:
    configuration: client.Configuration
    credentials: Credentials


def _kubeconfig_paths(kubeconfig: str | None, in_cluster: Exception) -> str:
    """``kubeconfig``, else $KUBECONFIG now, else ~/.kube/config; NoConfiguration when none of its files exists."""
    paths = kubeconfig or os.environ.get("KUBECONFIG") or DEFAULT_KUBECONFIG
    if not any(Path(p).expanduser().is_file() for p in paths.split(os.pathsep) if p):
        raise NoConfiguration(f"no in-cluster service account ({in_cluster}) and no kubeconfig file {paths}")
    return paths


def _service_account_namespace() -> str | None:
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def _context_namespace(loader: KubeConfigLoader) -> str | None:
    current = loader.current_context
    context = current.get("context") if isinstance(current, dict) else None
    namespace = context.get("namespace") if isinstance(context, dict) else None
    return namespace if isinstance(namespace, str) and namespace else None


def _authorization(header: str | None) -> tuple[str | None, str | None, str | None, str | None]:
    """``(scheme, token, username, password)`` of the loader's ``Authorization`` value (Basic split in two)."""
    if not header or not header.strip():
        return None, None, None, None
    scheme, _, token = header.strip().partition(" ")  # a token file's trailing newline is no part of the token
    token = token.strip()
    if not token:  # no scheme: a bare token, which Kopf and the API server take as Bearer
        return None, scheme, None, None
    if scheme.lower() == "basic":
        try:
            username, _, password = base64.b64decode(token, validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return scheme, token, None, None
        return None, None, username, password
    return scheme, token, None, None


async def _load(kubeconfig: str | None, context: str | None) -> _Loaded:
    """One run of the loader into a fresh Configuration (the process-wide default is left alone)."""
    configuration = client.Configuration()
    namespace: str | None
    expiration: datetime.datetime | None = None
    try:
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]  # untyped
        namespace = _service_account_namespace()
    except config.ConfigException as in_cluster:
        loader = await config.load_kube_config(
            config_file=_kubeconfig_paths(kubeconfig, in_cluster),
            context=context,
            client_configuration=configuration,
        )
        namespace = _context_namespace(loader)
        expiry = getattr(loader, "exec_plugin_expiry", None)  # set only by an exec plugin's token with an expiry
        if isinstance(expiry, datetime.datetime):
            expiration = expiry.astimezone(datetime.UTC)
            configuration.refresh_api_key_hook = _ExecTokenRefresh(loader)
    header = configuration.api_key.get("BearerToken")
    scheme, token, username, password = _authorization(header if isinstance(header, str) else None)
    host = configuration.host
    assert isinstance(host, str), "the loader always sets the server"
    credentials = Credentials(
        server=host,
        ca_path=configuration.ssl_ca_cert or None,
        insecure=not configuration.verify_ssl,
        certificate_path=configuration.cert_file or None,
        private_key_path=configuration.key_file or None,
        scheme=scheme,
        token=token,
        username=username,
        password=password,
        default_namespace=namespace,
        proxy_url=configuration.proxy or None,
        expiration=expiration,
    )
    return _Loaded(configuration, credentials)


async def load_credentials(kubeconfig: str | None = None, context: str | None = None) -> Credentials:
    """The in-cluster service account, else ``kubeconfig`` (else $KUBECONFIG, else ~/.kube/config) at ``context``
    (else its current context), loaded now: an exec plugin runs on every call, so a new call gets a new token."""
    return (await _load(kubeconfig, context)).credentials


async def api_client(kubeconfig: str | None = None, context: str | None = None) -> client.ApiClient:
    """An ApiClient from the in-cluster config, else ``kubeconfig`` (else $KUBECONFIG, else ~/.kube/config) at
    ``context`` (else its current context): the same load as :func:`load_credentials`. The service account's
    token is re-read, and an exec plugin's token renewed before it expires, while the client lives."""
    api = JsonApiClient((await _load(kubeconfig, context)).configuration)
    await _look_up_nothing_per_request(api)
    return api


async def _look_up_nothing_per_request(api: client.ApiClient) -> None:
    """Give the client a session that reads no environment on each request, with the same proxy.

    ``kubernetes_asyncio`` makes its aiohttp session with ``trust_env=True``: aiohttp then reads ``~/.netrc`` and
    the proxy variables in a worker thread before every request. In a burst of 500 new experiments those thread
    hops were about a tenth of the operator's CPU (issue #20, bench/RESULTS.md). The proxy the environment names
    for the API server (``HTTPS_PROXY``, ``NO_PROXY``, ...) is looked up here once and given to the client as its
    configured proxy (one the configuration names already wins); the same connection pool is kept."""
    rest = api.rest_client
    host = api.configuration.host
    headers: dict[str, str] = {}
    if not rest.proxy and isinstance(host, str):
        try:
            proxy, auth = get_env_proxy_for_url(URL(host))
        except (LookupError, ValueError):
            pass
        else:
            rest.proxy = str(proxy)
            if auth is not None and host.startswith("https:"):  # sent on the tunnel's CONNECT
                rest.proxy_headers = {**(rest.proxy_headers or {}), "Proxy-Authorization": auth.encode()}
            elif auth is not None:  # a plain request goes to the proxy whole: its own headers carry them
                headers["Proxy-Authorization"] = auth.encode()
    old = rest.pool_manager
    rest.pool_manager = aiohttp.ClientSession(
        connector=old.connector, headers=headers, trust_env=False, read_bufsize=READ_BUFSIZE
    )
    old.detach()  # the connector now belongs to the new session, which closes it
