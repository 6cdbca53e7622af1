"""Credentials from the experiment's namespace: which Secret, which keys, and where they may be sent."""

from __future__ import annotations

from canopy_operator.core.redact import Redactor
from canopy_operator.delivery.git import GitDeliveryError
from canopy_operator.gitops.credentials import GitCredentials
from canopy_operator.gitops.errors import GitCredentialsError
from canopy_operator.k8s.errors import NotFound
from canopy_operator.k8s.gateway import Gateway

#: Keys read from the credentials Secret (kubernetes.io/basic-auth and kubernetes.io/ssh-auth names first).
USERNAME_KEYS = ("username",)
PASSWORD_KEYS = ("password", "token")
SSH_KEY_KEYS = ("ssh-privatekey", "sshPrivateKey")
KNOWN_HOSTS_KEYS = ("known_hosts", "knownHosts")


async def git_credentials(
    gateway: Gateway, namespace: str, secret: str | None, redactor: Redactor | None = None
) -> GitCredentials | None:
    """Username and password/token, or an SSH key, from the Secret; every secret value goes to ``redactor``."""
    if secret is None:
        return None
    try:
        data = await gateway.get_secret_data(namespace, secret)
    except NotFound:
        raise GitDeliveryError(
            GitCredentialsError(f"Secret {namespace}/{secret} (spec.delivery.git.credentialsSecret) not found")
        ) from None
    password = _first(data, PASSWORD_KEYS, strip=True)
    ssh_key = _first(data, SSH_KEY_KEYS)
    if password is None and ssh_key is None:
        keys = ", ".join(PASSWORD_KEYS + SSH_KEY_KEYS)
        raise GitDeliveryError(GitCredentialsError(f"Secret {namespace}/{secret} holds none of the keys {keys}"))
    username = _first(data, USERNAME_KEYS, strip=True)
    if redactor is not None:
        for value in (password, ssh_key):
            if value:
                redactor.register(value, username)
    return GitCredentials(
        username=username,
        password=password,
        ssh_private_key=ssh_key,
        known_hosts=_first(data, KNOWN_HOSTS_KEYS),
    )


def _first(data: dict[str, str], keys: tuple[str, ...], *, strip: bool = False) -> str | None:
    """The first non-empty value; ``strip`` drops the trailing newline `echo` leaves in a password."""
    for key in keys:
        value = data.get(key, "")
        value = value.rstrip("\r\n") if strip else value
        if value:
            return value
    return None
