"""Which adapter serves an experiment: its delivery, its vote source and prompt store, its Git credentials.

The only place that knows the concrete adapters; the reconcile pass sees the ports alone.
"""

from __future__ import annotations

import contextlib
import shutil
import ssl
import tempfile
from collections.abc import Awaitable, Callable, Hashable, Iterator, Mapping
from functools import partial
from pathlib import Path

from canopy_operator.api.base import parse_duration
from canopy_operator.api.spec import PromptExperimentSpec
from canopy_operator.api.status import PromptExperimentStatus, TestIdentity
from canopy_operator.core.changes import commit_info, review_branch
from canopy_operator.core.credentials import Destination
from canopy_operator.core.readings import Reading, Window
from canopy_operator.core.redact import Redactor
from canopy_operator.core.values import ValuesReader, layout_for
from canopy_operator.delivery.base import Delivery, Failpoint, no_failpoint
from canopy_operator.delivery.configmap import ConfigMapApi, ConfigMapDelivery
from canopy_operator.delivery.git import GitDelivery
from canopy_operator.gitops.forge import Forge
from canopy_operator.gitops.policy import GitPolicy
from canopy_operator.gitops.repo import GitTarget, GitWorkspace
from canopy_operator.k8s.gateway import Gateway
from canopy_operator.service.credentials import SecretReader, git_credentials, server_credentials
from canopy_operator.service.settings import Settings
from canopy_operator.sources.base import AppProbe, RequestTimer, SourceError, VoteSource
from canopy_operator.sources.canopy.client import CanopyClient
from canopy_operator.sources.canopy.source import CanopySource
from canopy_operator.sources.http import JsonApi
from canopy_operator.sources.mlflow.client import MlflowClient
from canopy_operator.sources.mlflow.registry import MlflowRegistryStore
from canopy_operator.sources.mlflow.source import MlflowVotes
from canopy_operator.sources.phoenix.client import PhoenixClient
from canopy_operator.sources.phoenix.source import PhoenixVotes
from canopy_operator.sources.prompts import Arms, ConfigTextPrompts, PromptStore, StoreRefused
from canopy_operator.sources.webhook import WebhookPoster


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


def webhook_poster(tls: ssl.SSLContext) -> WebhookPoster:
    """The notification webhook's HTTP poster (docs/notifications.md), with the process's trust store."""
    return WebhookPoster(tls=tls)


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
    reads: ConfigMapApi | None = None,
) -> Delivery:
    """The delivery the spec asks for. Git mode reads its credentials Secret now and refuses it (before anything
    is sent) unless it opted in for the repository and, in PullRequest mode, the forge's API URL. ``reads``: the
    ConfigMap delivery's calls (a daemon's :class:`~canopy_operator.k8s.watched.WatchedReads`), else the gateway."""
    git = spec.delivery.git
    if spec.delivery.mode != "Git" or git is None:
        cm = spec.delivery.config_map
        return ConfigMapDelivery(
            reads if reads is not None else gateway,
            namespace,
            cm.name,
            cm.key,
            cm.deployment,
            failpoint,
            workspace.read_keys,
            layout=layout_for(spec.backend.generation),
        )
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
        layout=layout_for(spec.backend.generation),
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


def source_key(spec: PromptExperimentSpec, settings: Settings) -> Hashable:
    """What :func:`source_for` makes its client from: a client is reused while this stays the same."""
    return (
        spec.backend.url,
        parse_duration(spec.backend.request_timeout),
        settings.max_backend_body,
        settings.max_backend_log_body,
        spec.backend.generation,
    )


def source_for(
    spec: PromptExperimentSpec, settings: Settings, timer: RequestTimer, tls: ssl.SSLContext | None = None
) -> CanopySource:
    """The backend's HTTP API as app probe and vote source (the caller closes it); ``tls`` is shared. Its pool
    is bounded (``wire.POOL_CONNECTIONS``): a daemon keeps it for the experiment's life (:mod:`.session`)."""
    client = CanopyClient(
        spec.backend.url,
        timeout=parse_duration(spec.backend.request_timeout),
        max_body_bytes=settings.max_backend_body,
        max_log_bytes=settings.max_backend_log_body,
        tls=tls,
    )
    return CanopySource(client, timer, generation=spec.backend.generation)


class ServerApis:
    """The MLflow and Phoenix clients of one pass, opened on first use (their credentials Secret is read and
    checked then, before anything is sent) and closed with the pass."""

    def __init__(
        self,
        reader: SecretReader,
        namespace: str,
        settings: Settings,
        timer: RequestTimer,
        tls: ssl.SSLContext | None = None,
        redactor: Redactor | None = None,
    ) -> None:
        self.reader, self.namespace, self.settings = reader, namespace, settings
        self.timer, self.tls, self.redactor = timer, tls, redactor
        self._open: list[JsonApi] = []

    async def open(self, name: str, url: str, secret: str | None, field: str, request_timeout: float) -> JsonApi:
        credentials = await server_credentials(
            self.reader,
            self.namespace,
            secret,
            Destination(field, url),
            field.rsplit(".", 1)[0] + ".credentialsSecret",
            allow_insecure_http=self.settings.allow_insecure_http,
            redactor=self.redactor,
        )
        basic = None
        if credentials is not None and credentials.username and credentials.password:
            basic = (credentials.username, credentials.password)
        api = JsonApi(
            name,
            url,
            request_timeout,
            self.settings.max_backend_body,
            bearer=credentials.token if credentials is not None else None,
            basic=basic,
            tls=self.tls,
            timer=self.timer,
        )
        self._open.append(api)
        return api

    async def aclose(self) -> None:
        for api in self._open:
            await api.aclose()
        self._open.clear()


class LazyVotes:
    """A vote source made on its first read (so its credentials are read only when votes are)."""

    def __init__(self, where: str, make: Callable[[], Awaitable[VoteSource]]) -> None:
        self.where = where
        self._make = make
        self._votes: VoteSource | None = None

    async def read(self, window: Window) -> Reading:
        if self._votes is None:
            self._votes = await self._make()
        return await self._votes.read(window)


class SplitBackend:
    """The application answers what it serves; its votes are read elsewhere (MLflow, Phoenix)."""

    def __init__(self, probe: AppProbe, votes: VoteSource) -> None:
        self.probe = probe
        self.votes = votes

    @property
    def where(self) -> str:
        return self.votes.where

    async def flags(self) -> Mapping[str, bool]:
        return await self.probe.flags()

    async def ab_ready(self) -> bool:
        return await self.probe.ab_ready()

    async def read(self, window: Window) -> Reading:
        return await self.votes.read(window)


def votes_for(spec: PromptExperimentSpec, apis: ServerApis) -> VoteSource | None:
    """The vote source the spec names, or None for the backend's own API (Canopy Generation 1)."""
    timeout = parse_duration(spec.backend.request_timeout)
    votes = spec.votes
    if votes.source == "MLflow" and votes.mlflow is not None:
        m = votes.mlflow

        async def mlflow() -> VoteSource:
            api = await apis.open(
                "MLflow", m.tracking_url, m.credentials_secret, "spec.votes.mlflow.trackingUrl", timeout
            )
            prompt = spec.prompts.mlflow.name if spec.prompts.mlflow is not None else None
            return MlflowVotes(
                MlflowClient(api),
                m.experiment_id,
                where=m.tracking_url,
                arm_from=m.arm_from,
                arm_tag=m.arm_tag,
                prompt=prompt,
            )

        return LazyVotes(m.tracking_url, mlflow)
    if votes.source == "Phoenix" and votes.phoenix is not None:
        p = votes.phoenix

        async def phoenix() -> VoteSource:
            api = await apis.open("Phoenix", p.url, p.credentials_secret, "spec.votes.phoenix.url", timeout)
            return PhoenixVotes(
                PhoenixClient(api, p.project),
                where=p.url,
                vote_name=p.annotation_name,
                feedback_name=p.feedback_annotation_name,
                span_name=p.span_name,
                count_on=p.count_on,
            )

        return LazyVotes(p.url, phoenix)
    return None


class LazyRegistry:
    """The MLflow prompt registry store, made on first use; a server failure becomes a store refusal (a
    condition naming the server), never an internal error."""

    def __init__(self, spec: PromptExperimentSpec, apis: ServerApis) -> None:
        assert spec.prompts.mlflow is not None
        self.config = spec.prompts.mlflow
        self.apis = apis
        self.timeout = parse_duration(spec.backend.request_timeout)
        self.settle_seconds = parse_duration(self.config.alias_cache)
        self._store: MlflowRegistryStore | None = None

    async def _get(self) -> MlflowRegistryStore:
        if self._store is None:
            c = self.config
            api = await self.apis.open(
                "MLflow", c.tracking_url, c.credentials_secret, "spec.prompts.mlflow.trackingUrl", self.timeout
            )
            self._store = MlflowRegistryStore(MlflowClient(api), c)
        return self._store

    async def arms(self, spec: PromptExperimentSpec, configured_prompt: str | None) -> Arms | None:
        with _refused_by_registry():
            return await (await self._get()).arms(spec, configured_prompt)

    async def check(self, test: TestIdentity) -> None:
        with _refused_by_registry():
            await (await self._get()).check(test)

    async def promote(self, winner: str, test: TestIdentity) -> str | None:
        with _refused_by_registry():
            return await (await self._get()).promote(winner, test)


@contextlib.contextmanager
def _refused_by_registry() -> Iterator[None]:
    """A registry server failure (or its credentials' refusal) as the store's refusal, naming the server."""
    try:
        yield
    except SourceError as exc:
        raise StoreRefused(getattr(exc, "reason", type(exc).__name__), f"prompt registry: {exc}") from None


def prompts_for(spec: PromptExperimentSpec, apis: ServerApis | None = None) -> PromptStore:
    """Where the spec's prompts are kept: as text in the delivered config, or in the MLflow prompt registry."""
    if spec.prompts.store == "MLflowRegistry" and spec.prompts.mlflow is not None and apis is not None:
        return LazyRegistry(spec, apis)
    return ConfigTextPrompts()
