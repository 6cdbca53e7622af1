"""Where an experiment's backend may be: a Service in the experiment's own namespace, or an allowed host.

``spec.backend.url`` is tenant input, and the operator reads from it with rights and a network position the
tenant does not have: a URL naming another team's backend would copy their users' feedback into this
experiment, and any other host turns the operator into a proxy (security-model rule 2). The rule:

- a single-label host (``canopy-backend``) means that Service in the experiment's namespace, and is made
  explicit (``canopy-backend.<namespace>.svc``), since the operator's own namespace would resolve it otherwise;
- ``<service>.<namespace>``, ``<service>.<namespace>.svc`` and ``<service>.<namespace>.svc.cluster.local`` are
  allowed when ``<namespace>`` is the experiment's;
- any other host (another namespace, an IP address, a name outside the cluster) only when the operator's
  allow-list has it (``host``, ``host:port``, or ``*.suffix`` with an optional ``:port``).

A query or fragment is refused too: it would neutralise the path the operator appends (``?x=``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from urllib.parse import SplitResult, urlsplit, urlunsplit

CLUSTER_SUFFIXES = ((), ("svc",), ("svc", "cluster", "local"))
ALLOW_LIST = "CANOPY_BACKEND_HOSTS"


class BackendNotAllowed(ValueError):
    """The backend URL is not one this experiment may use; the message names the field and the rule."""


def _port(parts: SplitResult, field: str) -> int | None:
    try:
        return parts.port
    except ValueError:
        raise BackendNotAllowed(f"{field} has an invalid port") from None


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def host_allowed(host: str, port: int | None, patterns: Sequence[str]) -> bool:
    """Whether ``host[:port]`` matches one of the allow-list ``patterns``."""
    for raw in patterns:
        pattern = raw.strip().lower()
        want_port: int | None = None
        if pattern.startswith("[") and "]" in pattern:  # [v6]:port
            inner, _, rest = pattern[1:].partition("]")
            pattern, want_port = inner, int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else None
        elif pattern.count(":") == 1:
            name, _, port_text = pattern.partition(":")
            if not port_text.isdigit():
                continue
            pattern, want_port = name, int(port_text)
        if want_port is not None and want_port != port:
            continue
        if pattern.startswith("*."):
            suffix = pattern[1:]
            if host.endswith(suffix) and len(host) > len(suffix) and not _is_ip(host):
                return True
        elif host == pattern:
            return True
    return False


def backend_url(url: str, namespace: str, allowed_hosts: Sequence[str] = (), *, field: str = "spec.backend.url") -> str:
    """The URL the operator will use for ``url`` in ``namespace``, or :class:`BackendNotAllowed` naming ``field``
    (the same rule holds for every server an experiment names: the backend, MLflow, Phoenix)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise BackendNotAllowed(f"{field} must be an http:// or https:// URL")
    if parts.query or parts.fragment or "?" in url or "#" in url:
        raise BackendNotAllowed(f"{field} must not carry a query or a fragment")
    host = (parts.hostname or "").lower()
    if not host:
        raise BackendNotAllowed(f"{field} has no host")
    port = _port(parts, field)
    labels = host.split(".")
    if host_allowed(host, port, allowed_hosts):
        return url
    if len(labels) == 1 and not _is_ip(host):
        return _with_host(parts, f"{host}.{namespace}.svc")
    if len(labels) >= 2 and labels[1] == namespace and tuple(labels[2:]) in CLUSTER_SUFFIXES:
        return url
    raise BackendNotAllowed(
        f"{field} names {host}{f':{port}' if port else ''}, which is neither a Service in namespace "
        f"{namespace} (<service>, <service>.{namespace}[.svc[.cluster.local]]) nor on the operator's allow-list "
        f"({ALLOW_LIST})"
    )


def _with_host(parts: SplitResult, host: str) -> str:
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = (f"{userinfo}@" if userinfo else "") + host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
