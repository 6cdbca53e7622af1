"""Process-wide wiring: the Kubernetes API client, delivery and backend factories, settings from env."""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from kubernetes_asyncio import client, config

from canopy_operator import logs
from canopy_operator.api.base import parse_duration
from canopy_operator.api.spec import GitDelivery as GitSpec
from canopy_operator.api.spec import PromptExperimentSpec
from canopy_operator.api.status import PromptExperimentStatus
from canopy_operator.sources.canopy.client import CanopyClient
from canopy_operator.core.values import ManagedKeys, managed_hash
from canopy_operator.gitops.credentials import GitCredentials
from canopy_operator.gitops.delivery import GitDelivery, GitDeliveryError
from canopy_operator.gitops.errors import GitCredentialsError
from canopy_operator.gitops.forge import Forge
from canopy_operator.gitops.repo import CommitInfo, GitTarget, GitWorkspace, branch_name
from canopy_operator.handlers.collection import ClientReader
from canopy_operator.k8s.configmap_delivery import ConfigMapDelivery
from canopy_operator.k8s.errors import NotFound
from canopy_operator.k8s.gateway import Gateway

GIT_CACHE_ENV = "CANOPY_GIT_CACHE_DIR"
#: Keys read from the credentials Secret (kubernetes.io/basic-auth and kubernetes.io/ssh-auth names first).
USERNAME_KEYS = ("username",)
PASSWORD_KEYS = ("password", "token")
SSH_KEY_KEYS = ("ssh-privatekey", "sshPrivateKey")
KNOWN_HOSTS_KEYS = ("known_hosts", "knownHosts")


@dataclass(frozen=True)
class OperatorSettings:
    """Settings from the environment (the Deployment sets them)."""

    max_backend_body: int = 32 * 1024 * 1024
    delete_attempts: int = 3
    git_cache_dir: str | None = None
    """Where Git clones are cached; None: a temporary directory made at start-up and removed at exit."""

    @classmethod
    def from_env(cls) -> OperatorSettings:
        return cls(
            max_backend_body=int(os.environ.get("CANOPY_MAX_BACKEND_BODY", str(32 * 1024 * 1024))),
            delete_attempts=int(os.environ.get("CANOPY_DELETE_ATTEMPTS", "3")),
            git_cache_dir=os.environ.get(GIT_CACHE_ENV) or None,
        )


async def api_client() -> client.ApiClient:
    """An ApiClient from the in-cluster config, else $KUBECONFIG / ~/.kube/config."""
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]  # untyped in the client
    except config.ConfigException:
        # The client reads $KUBECONFIG once at import; read it now so the current environment wins.
        await config.load_kube_config(config_file=os.environ.get("KUBECONFIG") or None)
    return client.ApiClient()


def open_git_workspace(settings: OperatorSettings) -> GitWorkspace:
    """The process-wide clone cache ($CANOPY_GIT_CACHE_DIR, else a fresh private temporary directory)."""
    if settings.git_cache_dir:
        path = Path(settings.git_cache_dir)
        path.mkdir(parents=True, exist_ok=True)
    else:
        path = Path(tempfile.mkdtemp(prefix="canopy-git-cache-"))
    return GitWorkspace(path)


def close_git_workspace(workspace: GitWorkspace, settings: OperatorSettings) -> None:
    """Remove the cache if it was a temporary directory (a configured one is kept for the next start)."""
    if not settings.git_cache_dir:
        shutil.rmtree(workspace.cache_dir, ignore_errors=True)


async def delivery_for(
    gateway: Gateway,
    workspace: GitWorkspace,
    namespace: str,
    name: str,
    spec: PromptExperimentSpec,
    status: PromptExperimentStatus,
    *,
    restoring: bool = False,
) -> ConfigMapDelivery | GitDelivery:
    """The delivery the spec asks for (Git mode reads its credentials Secret now)."""
    git = spec.delivery.git
    if spec.delivery.mode != "Git" or git is None:
        cm = spec.delivery.config_map
        return ConfigMapDelivery(gateway, namespace, cm.name, cm.key, cm.deployment)
    credentials = await git_credentials(gateway, namespace, git.credentials_secret)
    info = commit_info(namespace, name, git, status, restoring=restoring)
    pull_request = git.method == "PullRequest"
    forge = None
    if pull_request and git.pull_request.api_url:
        forge = Forge(git.pull_request.provider, git.pull_request.api_url, credentials)
    return GitDelivery(
        workspace=workspace,
        target=GitTarget(repository=git.repository, branch=git.branch, values_file=git.values_file),
        credentials=credentials,
        info=info,
        last_applied=status.delivery.applied_hash or None,
        pr_branch_for=partial(_pr_branch, namespace, name, info.change) if pull_request else None,
        pr_base=git.pull_request.base_branch,
        forge=forge,
    )


def _pr_branch(namespace: str, name: str, change: str, desired: ManagedKeys) -> str:
    return branch_name(namespace, name, change, managed_hash(desired))


async def git_credentials(gateway: Gateway, namespace: str, secret: str | None) -> GitCredentials | None:
    """Username and password/token, or an SSH key, from the Secret; every secret value is registered for redaction."""
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
    for value in (password, ssh_key):
        if value:
            logs.register_secret(value)
    return GitCredentials(
        username=_first(data, USERNAME_KEYS, strip=True),
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


def commit_info(
    namespace: str, name: str, git: GitSpec, status: PromptExperimentStatus, *, restoring: bool = False
) -> CommitInfo:
    """Who commits and why: the change the status says is next, and the evidence for a decided test."""
    change, evidence = _change(status, restoring)
    return CommitInfo(
        experiment=f"{namespace}/{name}",
        change=change,
        evidence=evidence,
        author_name=git.author.name,
        author_email=git.author.email,
    )


_OUTCOME_CHANGE = {
    "challenger": "promote the challenger",
    "champion": "keep the champion",
    "no_winner": "end the test with no winner",
    "equivalent": "end the test: prompts equivalent",
}


def _change(status: PromptExperimentStatus, restoring: bool) -> tuple[str, str]:
    if restoring:
        return "restore the champion-only config", ""
    pending = status.pending_promotion
    if pending is None:
        fresh = status.test is None or status.delivery.verified_at is None
        return ("start the A/B test" if fresh else "re-apply the A/B test config"), ""
    votes, ev = status.votes, status.evidence
    lines = [
        f"Decision: {pending.summary}",
        f"Test: {pending.test_id}",
        f"Votes: challenger {votes.challenger_wins}, champion {votes.champion_wins}, ties {votes.ties}",
        f"Always-valid p-value: {ev.p_value:.4g}",
    ]
    if ev.confidence_sequence is not None:
        cs = ev.confidence_sequence
        lines.append(f"Confidence sequence for P(challenger preferred): [{cs.lower:.4f}, {cs.upper:.4f}]")
    return _OUTCOME_CHANGE[pending.outcome], "\n".join(lines)


def backend_for(spec: PromptExperimentSpec, settings: OperatorSettings) -> tuple[CanopyClient, ClientReader]:
    """An HTTP client for the spec's backend (the caller closes it)."""
    http = CanopyClient(
        spec.backend.url,
        timeout=parse_duration(spec.backend.request_timeout),
        max_body_bytes=settings.max_backend_body,
    )
    return http, ClientReader(http)
