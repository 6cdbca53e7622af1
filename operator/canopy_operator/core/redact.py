"""The one redactor: URL userinfo, bearer tokens and known secret values never leave the operator.

Git and forge messages are redacted with the credentials of the call (``Redactor(secrets, username)``); the
log filter keeps one long-lived redactor to which every secret the operator reads is added
(:meth:`Redactor.register`). A secret is masked raw, URL-encoded and, with a username, as the Basic-auth
token that carries it.
"""

from __future__ import annotations

import base64
import re
import threading
from collections.abc import Iterable
from urllib.parse import quote

MASK = "***"
MIN_REGISTERED_LENGTH = 4
"""Shorter values are not registered for the logs: replacing them everywhere would shred every line."""
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)[^/@\s]*@")
_BEARER = re.compile(r"(?i)(?P<word>bearer\s+)[A-Za-z0-9._~+/=\-]+")


def _variants(secret: str, username: str | None) -> set[str]:
    out = {secret, quote(secret, safe="")}
    if username:
        out.add(base64.b64encode(f"{username}:{secret}".encode()).decode())
    return out


class Redactor:
    """Masks URL userinfo, bearer tokens and every secret it knows (longest first)."""

    def __init__(self, secrets: Iterable[str | None] = (), username: str | None = None) -> None:
        values: set[str] = set()
        for secret in secrets:
            if secret:
                values |= _variants(secret, username)
        self._secrets = tuple(sorted(values, key=len, reverse=True))
        self._lock = threading.Lock()

    def register(self, secret: str, username: str | None = None) -> None:
        """Mask ``secret`` from now on (values shorter than :data:`MIN_REGISTERED_LENGTH` are ignored)."""
        if len(secret) < MIN_REGISTERED_LENGTH:
            return
        with self._lock:
            merged = set(self._secrets) | _variants(secret, username)
            self._secrets = tuple(sorted(merged, key=len, reverse=True))

    def __call__(self, text: str) -> str:
        out = text
        for secret in self._secrets:
            out = out.replace(secret, MASK)
        out = _USERINFO.sub(lambda m: f"{m.group('scheme')}{MASK}@", out)
        return _BEARER.sub(lambda m: f"{m.group('word')}{MASK}", out)


def redact(text: str, secrets: Iterable[str | None] = (), username: str | None = None) -> str:
    """``text`` without URL userinfo, bearer tokens or any of ``secrets``."""
    return Redactor(secrets, username)(text)
