"""Credentials for git, handed over through the environment of each git process and never written to a repo.

HTTPS: git asks a tiny ``GIT_ASKPASS`` script for the username and password; the script holds no secret, it
prints two environment variables that only the git process (and its children) receive. SSH: the private key
goes to a 0600 file in a private temporary directory that exists only while the command runs, used through
``GIT_SSH_COMMAND`` with the ``known_hosts`` the Secret holds and ``StrictHostKeyChecking=yes``: a host key the
operator was not given is never trusted (no ``accept-new``; without known_hosts every SSH connection fails, and
the Secret is refused before that). A private certificate authority (the Secret's ``ca.crt``) reaches git as
``GIT_SSL_CAINFO`` and the forge client as its only trust store; certificate checks are never switched off. Global
and system git config are ignored, so no credential helper can store
anything; ``file`` is among the allowed transports only when the operator allows ``file://`` repositories.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import ssl
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from canopy_operator.core.redact import Redactor

_ASKPASS = """#!/bin/sh
case "$1" in
  Username*|username*) printf '%s\\n' "$CANOPY_GIT_USERNAME" ;;
  *) printf '%s\\n' "$CANOPY_GIT_PASSWORD" ;;
esac
"""
ALLOWED_PROTOCOLS = "http:https:ssh"
FILE_PROTOCOLS = "file:http:https:ssh"


@dataclass(frozen=True)
class GitCredentials:
    """What the experiment's credentials Secret holds (the caller reads the Secret)."""

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    """Password or access token for HTTPS (and the forge's API)."""
    ssh_private_key: str | None = field(default=None, repr=False)
    known_hosts: str | None = None
    ca_bundle: str | None = None
    """PEM certificates to trust for HTTPS instead of the system's (a forge behind a private CA)."""

    def redactor(self) -> Redactor:
        return Redactor([self.password, self.ssh_private_key], self.username)


def base_env(home: Path, *, allow_file: bool = False) -> dict[str, str]:
    """A clean environment for git: no prompts, no user/system config, only safe transports."""
    return {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "HOME": str(home),
        "LC_ALL": "C",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_ALLOW_PROTOCOL": FILE_PROTOCOLS if allow_file else ALLOWED_PROTOCOLS,
        "GIT_LITERAL_PATHSPECS": "1",
        "SSH_ASKPASS": "",
    }


@contextlib.contextmanager
def git_environment(credentials: GitCredentials | None, *, allow_file: bool = False) -> Iterator[dict[str, str]]:
    """The environment for git commands; temporary files vanish when the block ends."""
    with tempfile.TemporaryDirectory(prefix="canopy-git-") as tmp:
        home = Path(tmp)
        home.chmod(stat.S_IRWXU)
        env = base_env(home, allow_file=allow_file)
        if credentials is not None and credentials.password is not None:
            askpass = home / "askpass.sh"
            askpass.write_text(_ASKPASS, encoding="utf-8")
            askpass.chmod(stat.S_IRWXU)
            env["GIT_ASKPASS"] = str(askpass)
            env["CANOPY_GIT_USERNAME"] = credentials.username or ""
            env["CANOPY_GIT_PASSWORD"] = credentials.password
        if credentials is not None and credentials.ca_bundle:
            bundle = home / "ca.crt"
            bundle.write_text(credentials.ca_bundle, encoding="utf-8")
            env["GIT_SSL_CAINFO"] = str(bundle)
        env["GIT_SSH_COMMAND"] = _ssh_command(home, credentials or GitCredentials())
        yield env


def tls_context(credentials: GitCredentials | None) -> ssl.SSLContext:
    """The trust store for the forge's API: the Secret's ``ca.crt`` when it has one, else the system's."""
    if credentials is not None and credentials.ca_bundle:
        return ssl.create_default_context(cadata=credentials.ca_bundle)
    return ssl.create_default_context()


def _ssh_command(home: Path, credentials: GitCredentials) -> str:
    """ssh with only the given key and host keys: strict checking, no agent, no prompts."""
    parts = ["ssh"]
    if credentials.ssh_private_key is not None:
        key = home / "id_key"
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            text = credentials.ssh_private_key
            handle.write(text if text.endswith("\n") else text + "\n")
        parts += ["-i", str(key)]
    known = home / "known_hosts"
    known.write_text(credentials.known_hosts or "", encoding="utf-8")
    parts += [
        "-F",
        os.devnull,
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "IdentityAgent=none",
        "-o",
        "BatchMode=yes",
        "-o",
        f"UserKnownHostsFile={known}",
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        "-o",
        "StrictHostKeyChecking=yes",
    ]
    return " ".join(shlex.quote(p) for p in parts)
