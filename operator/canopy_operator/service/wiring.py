"""Which adapter serves an experiment: its delivery, its vote source and prompt store, its Git credentials.

The only place that knows the concrete adapters; the reconcile pass sees the ports alone.
"""

from __future__ import annotations

import shutil
import ssl
import tempfile
from functools import partial
from pathlib import Path

from canopy_operator.api.base import parse_duration
from canopy_operator.api.spec import PromptExperimentSpec
from canopy_operator.api.status import PromptExperimentStatus
from canopy_operator.core.changes import commit_info, review_branch
from canopy_operator.core.credentials import Destination
from canopy_operator.core.redact import Redactor
from canopy_operator.core.values import ValuesReader
from canopy_operator.delivery.base import Delivery, Failpoint, no_failpoint
from canopy_operator.delivery.configmap import ConfigMapDelivery
from canopy_operator.delivery.git import GitDelivery
from canopy_operator.gitops.forge import Forge
from canopy_operator.gitops.policy import GitPolicy
from canopy_operator.gitops.repo import GitTarget, GitWorkspace
from canopy_operator.k8s.gateway import Gateway
from canopy_operator.service.credentials import git_credentials
from canopy_operator.service.settings import Settings
from canopy_operator.sources.base import RequestTimer
from canopy_operator.sources.canopy.client import CanopyClient
from canopy_operator.sources.canopy.source import CanopySource
from canopy_operator.sources.prompts import ConfigTextPrompts, PromptStore


def open_git_workspace(settings: Settings, read: ValuesReader | None = None) -> GitWorkspace:
    """The process-wide clone cache ($CANOPY_GIT_CACHE_DIR, else a fresh private temporary directory), with the
    operator's Git policy (``file://`` repositories, credentials over plain HTTP)."""
    if settings.git_cache_dir:
        path = Path(settings.git_cache_dir)
        path.mkdir(parents=True, exist_ok=True)
    else:
        path = Path(tempfile.mkdtemp(prefix="canopy-git-cache-"))
    policy = GitPolicy(
        allow_file_repositories=settings.allow_file_repositories, allow_insecure_http=settings.allow_insecure_http
    )
    return GitWorkspace(path, read=read or ValuesReader(), policy=policy)


def close_git_workspace(workspace: GitWorkspace, settings: Settings) -> None:
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
    redactor: Redactor | None = None,
    failpoint: Failpoint = no_failpoint,
) -> Delivery:
    """The delivery the spec asks for. Git mode reads its credentials Secret now and refuses it (before anything
    is sent) unless it opted in for the repository and, in PullRequest mode, the forge's API URL."""
    git = spec.delivery.git
    if spec.delivery.mode != "Git" or git is None:
        cm = spec.delivery.config_map
        return ConfigMapDelivery(gateway, namespace, cm.name, cm.key, cm.deployment, failpoint, workspace.read_keys)
    pull_request = git.method == "PullRequest"
    destinations = [Destination("spec.delivery.git.repository", git.repository)]
    if pull_request and git.pull_request.api_url:
        destinations.append(Destination("spec.delivery.git.pullRequest.apiUrl", git.pull_request.api_url))
    credentials = await git_credentials(
        gateway,
        namespace,
        git.credentials_secret,
        destinations,
        allow_insecure_http=workspace.policy.allow_insecure_http,
        redactor=redactor,
    )
    info = commit_info(
        f"{namespace}/{name}",
        status,
        author_name=git.author.name,
        author_email=git.author.email,
        restoring=restoring,
    )
    forge = None
    if pull_request and git.pull_request.api_url:
        forge = Forge(git.pull_request.provider, git.pull_request.api_url, credentials)
    return GitDelivery(
        workspace=workspace,
        target=GitTarget(
            repository=git.repository, branch=git.branch, values_file=git.values_file, namespace=namespace
        ),
        credentials=credentials,
        info=info,
        last_applied=status.delivery.applied_hash or None,
        pr_branch_for=partial(review_branch, namespace, name, info.change) if pull_request else None,
        pr_base=git.pull_request.base_branch,
        forge=forge,
    )


def source_for(
    spec: PromptExperimentSpec, settings: Settings, timer: RequestTimer, tls: ssl.SSLContext | None = None
) -> CanopySource:
    """The backend's HTTP API as app probe and vote source (the caller closes it); ``tls`` is shared."""
    client = CanopyClient(
        spec.backend.url,
        timeout=parse_duration(spec.backend.request_timeout),
        max_body_bytes=settings.max_backend_body,
        tls=tls,
    )
    return CanopySource(client, timer)


def prompts_for(spec: PromptExperimentSpec) -> PromptStore:
    """Where the spec's prompts are kept: today, as text in the delivered config."""
    return ConfigTextPrompts()
