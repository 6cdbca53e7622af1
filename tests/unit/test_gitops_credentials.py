"""Credentials reach git only through a short-lived environment, and no error text carries them."""

from __future__ import annotations

import base64
import shlex
import stat
from pathlib import Path

from canopy_operator.core.redact import redact
from canopy_operator.gitops.credentials import GitCredentials, git_environment
from canopy_operator.gitops.errors import GitAuthError, GitError
from canopy_operator.gitops.gitcmd import PushRejected, classify

SECRET = "p@ss/word:1"


def test_redact_strips_url_userinfo_and_every_form_of_the_secret() -> None:
    basic = base64.b64encode(f"ada:{SECRET}".encode()).decode()
    text = f"fatal: https://ada:{SECRET}@git.example.com/a/b.git p%40ss%2Fword%3A1 {basic} {SECRET}"
    out = redact(text, [SECRET], username="ada")
    assert out == "fatal: https://***@git.example.com/a/b.git *** *** ***"


def test_https_credentials_are_handed_over_by_askpass_from_the_environment() -> None:
    with git_environment(GitCredentials(username="ada", password=SECRET)) as env:
        script = Path(env["GIT_ASKPASS"])
        assert SECRET not in script.read_text()
        assert script.stat().st_mode & 0o777 == 0o700
        assert (env["CANOPY_GIT_USERNAME"], env["CANOPY_GIT_PASSWORD"]) == ("ada", SECRET)
        assert env["GIT_TERMINAL_PROMPT"] == "0"
    assert not script.exists()


def test_ssh_key_lives_in_a_private_file_only_while_git_runs() -> None:
    creds = GitCredentials(ssh_private_key="-----BEGIN KEY-----\nabc\n-----END KEY-----")
    with git_environment(creds) as env:
        argv = shlex.split(env["GIT_SSH_COMMAND"])
        key = Path(argv[argv.index("-i") + 1])
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        assert key.read_text().endswith("-----END KEY-----\n")
        assert "StrictHostKeyChecking=yes" in argv
        assert not any("accept-new" in arg for arg in argv)
        assert "BatchMode=yes" in argv
        assert "GIT_ASKPASS" not in env
    assert not key.exists()


def test_ssh_uses_strict_host_checking_with_only_the_given_known_hosts() -> None:
    creds = GitCredentials(ssh_private_key="k", known_hosts="gitea.example.com ssh-ed25519 AAAA")
    with git_environment(creds) as env:
        argv = shlex.split(env["GIT_SSH_COMMAND"])
        assert "StrictHostKeyChecking=yes" in argv
        known = next(a.split("=", 1)[1] for a in argv if a.startswith("UserKnownHostsFile="))
        assert Path(known).read_text() == "gitea.example.com ssh-ed25519 AAAA"
        assert "GlobalKnownHostsFile=/dev/null" in argv


def test_ssh_without_a_key_still_trusts_no_unknown_host() -> None:
    with git_environment(None) as env:
        argv = shlex.split(env["GIT_SSH_COMMAND"])
        assert (argv[-1], argv[argv.index("BatchMode=yes")]) == ("StrictHostKeyChecking=yes", "BatchMode=yes")
        assert "-i" not in argv


def test_file_transport_is_allowed_only_when_the_operator_allows_file_repositories() -> None:
    with git_environment(None) as env:
        assert env["GIT_ALLOW_PROTOCOL"] == "http:https:ssh"
    with git_environment(None, allow_file=True) as env:
        assert env["GIT_ALLOW_PROTOCOL"] == "file:http:https:ssh"


def test_classify_tells_auth_failures_rejections_and_other_errors_apart() -> None:
    def kind(command: str, stderr: str) -> type[GitError]:
        return type(classify(command, stderr, lambda s: s))

    assert kind("fetch", "fatal: Authentication failed for 'https://x/'") is GitAuthError
    assert kind("clone", "git@x: Permission denied (publickey).") is GitAuthError
    assert kind("push", " ! [rejected]        HEAD -> main (fetch first)\nerror: failed to push") is PushRejected
    assert kind("push", "fatal: unable to access: Could not resolve host: x") is GitError
