"""Credential Secrets of the experiment's namespace: the one place that reads them for Git, the forge and the judge.

A Secret is read by the name the spec gives, then checked by :mod:`canopy_operator.core.credentials` (opt-in
label, allowed URL prefixes, plain HTTP, length) before any value leaves the operator. Git and forge refusals are
:class:`~canopy_operator.gitops.errors.GitCredentialsError` subclasses, so the experiment degrades with their
reason; the judge's refusal is returned as a reason and message for the evaluation to report (the operator never
reads the judge's key, only the Secret's metadata: the Job gets it through a ``secretKeyRef``).
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from canopy_operator.core.credentials import (
    CredentialsRefused,
    Destination,
    SecretRef,
    check_length,
    check_opt_in,
)
from canopy_operator.core.redact import Redactor
from canopy_operator.delivery.git import GitDeliveryError
from canopy_operator.gitops.credentials import GitCredentials
from canopy_operator.gitops.errors import CredentialsNotAllowed, GitCredentialsError
from canopy_operator.k8s.errors import NotFound
from canopy_operator.sources.base import ErrorKind, SourceError

#: Keys read from the credentials Secret (kubernetes.io/basic-auth and kubernetes.io/ssh-auth names first).
USERNAME_KEYS = ("username",)
PASSWORD_KEYS = ("password", "token")
SSH_KEY_KEYS = ("ssh-privatekey", "sshPrivateKey")
KNOWN_HOSTS_KEYS = ("known_hosts", "knownHosts")
CA_KEYS = ("ca.crt", "caCert")
GIT_FIELD = "spec.delivery.git.credentialsSecret"
JUDGE_FIELD = "spec.evaluation.judge.apiKeySecret"


class SecretLike(Protocol):
    """What the operator needs of a Secret: its data, labels and annotations (``k8s.gateway.SecretView``)."""

    @property
    def data(self) -> Mapping[str, str]: ...
    @property
    def labels(self) -> Mapping[str, str]: ...
    @property
    def annotations(self) -> Mapping[str, str]: ...


class SecretReader(Protocol):
    """Reads one Secret by name (``k8s.gateway.Gateway``); raises ``NotFound``."""

    async def read_secret(self, namespace: str, name: str) -> SecretLike: ...


async def git_credentials(
    reader: SecretReader,
    namespace: str,
    secret: str | None,
    destinations: Sequence[Destination],
    *,
    allow_insecure_http: bool = False,
    redactor: Redactor | None = None,
) -> GitCredentials | None:
    """Username and password/token, or an SSH key and its known_hosts, and optionally a private CA (``ca.crt``),
    from a Secret that may go to every one of ``destinations`` (the repository, the forge's API); every secret
    value goes to ``redactor``.

    Raises ``GitDeliveryError`` (CredentialsNotAllowed, GitCredentialsMissing) before anything is sent."""
    if secret is None:
        return None
    ref = SecretRef(namespace, secret, GIT_FIELD)
    try:
        view = await reader.read_secret(namespace, secret)
    except NotFound:
        raise GitDeliveryError(GitCredentialsError(f"{ref} not found")) from None
    try:
        check_opt_in(ref, view.labels, view.annotations, destinations, allow_insecure_http=allow_insecure_http)
    except CredentialsRefused as exc:
        raise GitDeliveryError(CredentialsNotAllowed(str(exc))) from None
    data = view.data
    password_key, password = _first(data, PASSWORD_KEYS, strip=True)
    ssh_key_name, ssh_key = _first(data, SSH_KEY_KEYS)
    if password is None and ssh_key is None:
        keys = ", ".join(PASSWORD_KEYS + SSH_KEY_KEYS)
        raise GitDeliveryError(GitCredentialsError(f"{ref} holds none of the keys {keys}"))
    try:
        for key, value in ((password_key, password), (ssh_key_name, ssh_key)):
            if value is not None:
                check_length(ref, key, value)
    except CredentialsRefused as exc:
        raise GitDeliveryError(CredentialsNotAllowed(str(exc))) from None
    _, known_hosts = _first(data, KNOWN_HOSTS_KEYS)
    if ssh_key is not None and known_hosts is None:
        raise GitDeliveryError(
            GitCredentialsError(
                f"{ref} holds an SSH key but no {KNOWN_HOSTS_KEYS[0]}: add the Git server's host keys under "
                f"{KNOWN_HOSTS_KEYS[0]} (the operator never trusts a host key it has not been given)"
            )
        )
    ca_bundle = _ca_bundle(ref, data)
    _, username = _first(data, USERNAME_KEYS, strip=True)
    if redactor is not None:
        for value in (password, ssh_key):
            if value:
                redactor.register(value, username)
    return GitCredentials(
        username=username, password=password, ssh_private_key=ssh_key, known_hosts=known_hosts, ca_bundle=ca_bundle
    )


def _ca_bundle(ref: SecretRef, data: Mapping[str, str]) -> str | None:
    """The Secret's private certificate authority (PEM), checked to load as one before git or the forge get it."""
    key, bundle = _first(data, CA_KEYS)
    if bundle is None:
        return None
    if "-----BEGIN CERTIFICATE-----" not in bundle:
        raise GitDeliveryError(GitCredentialsError(f"{ref}: key {key} holds no PEM certificate"))
    try:
        ssl.create_default_context(cadata=bundle)
    except (ssl.SSLError, ValueError):
        raise GitDeliveryError(GitCredentialsError(f"{ref}: key {key} is not a valid PEM certificate bundle")) from None
    return bundle


async def judge_refusal(
    reader: SecretReader,
    namespace: str,
    secret: str | None,
    endpoint: str | None,
    *,
    allow_insecure_http: bool = False,
) -> tuple[str, str] | None:
    """Why the judge's key may not go to ``endpoint`` (reason, message), or None when it may (or none is sent).
    Only the Secret's metadata is looked at: the key itself reaches the Job through a ``secretKeyRef``."""
    if secret is None or endpoint is None:
        return None
    ref = SecretRef(namespace, secret, JUDGE_FIELD)
    try:
        view = await reader.read_secret(namespace, secret)
    except NotFound:
        return "JudgeCredentialsMissing", f"{ref} not found"
    destination = Destination("spec.evaluation.judge.endpoint", endpoint)
    try:
        check_opt_in(ref, view.labels, view.annotations, [destination], allow_insecure_http=allow_insecure_http)
    except CredentialsRefused as exc:
        return exc.reason, str(exc)
    return None


class ServerCredentialsRefused(SourceError):
    """The Secret named for a vote or prompt server may not be used (missing, not opted in, no token)."""

    kind: ErrorKind = "http_4xx"

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class ServerCredentials:
    """A bearer token, or a username and password, for a vote or prompt server."""

    token: str | None = field(default=None, repr=False)
    username: str | None = None
    password: str | None = field(default=None, repr=False)


async def server_credentials(
    reader: SecretReader,
    namespace: str,
    secret: str | None,
    destination: Destination,
    field_name: str,
    *,
    allow_insecure_http: bool = False,
    redactor: Redactor | None = None,
) -> ServerCredentials | None:
    """The token (``token``, ``password`` with ``username``) of a Secret opted in for ``destination``, the MLflow
    or Phoenix server; raises :class:`ServerCredentialsRefused` before anything is sent."""
    if secret is None:
        return None
    ref = SecretRef(namespace, secret, field_name)
    try:
        view = await reader.read_secret(namespace, secret)
    except NotFound:
        raise ServerCredentialsRefused("CredentialsMissing", f"{ref} not found") from None
    try:
        check_opt_in(ref, view.labels, view.annotations, [destination], allow_insecure_http=allow_insecure_http)
        key, token = _first(view.data, ("token", "api-key", "password"), strip=True)
        if token is None:
            raise ServerCredentialsRefused(
                "CredentialsMissing", f"{ref} holds none of the keys token, api-key, password"
            )
        check_length(ref, key, token)
    except CredentialsRefused as exc:
        raise ServerCredentialsRefused(exc.reason, str(exc)) from None
    _, username = _first(view.data, USERNAME_KEYS, strip=True)
    if redactor is not None:
        redactor.register(token, username)
    if key == "password" and username:
        return ServerCredentials(username=username, password=token)
    return ServerCredentials(token=token)


def _first(data: Mapping[str, str], keys: tuple[str, ...], *, strip: bool = False) -> tuple[str, str | None]:
    """The first key with a non-empty value and that value; ``strip`` drops the trailing newline `echo` leaves."""
    for key in keys:
        value = data.get(key, "")
        value = value.rstrip("\r\n") if strip else value
        if value:
            return key, value
    return keys[0], None
