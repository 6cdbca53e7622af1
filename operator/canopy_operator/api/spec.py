"""The desired state of a PromptExperiment: what users write (kubectl apply, or Git synced by Argo CD)."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, StringConstraints, field_validator, model_validator
from pydantic.config import JsonDict

from canopy_operator.api.base import ApiModel, Duration, parse_duration

NonEmptyText = Annotated[str, StringConstraints(min_length=1, max_length=65536)]
K8sName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"),
]


_VISIBLE = re.compile(r"[^\t\n\f\r ]")
"""What RE2's ``\\S`` matches (the CRD's CEL rule): a prompt must hold one such character."""


def _visible(text: str, field: str) -> str:
    if not _VISIBLE.search(text):
        raise ValueError(f"{field} must contain a non-whitespace character")
    return text


def _cel(rule: str, message: str, field_path: str | None = None) -> JsonDict:
    out: JsonDict = {"rule": rule, "message": message}
    if field_path:
        out["fieldPath"] = field_path
    return out


class BackendSpec(ApiModel):
    """How to reach the Canopy backend's HTTP API."""

    url: str = Field(default="http://canopy-backend:8000", pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$", max_length=2048)
    """Base URL of the Canopy backend (no auth, no query), a Service of this namespace: http://canopy-backend:8000 or http://canopy-backend.<namespace>.svc:8000. Other hosts only if the operator's allow-list has them."""
    feature: Literal["summarize"] = "summarize"
    """The backend feature whose prompt is tested. Generation 1 of the backend supports only summarize."""
    request_timeout: Duration = "10s"
    """Timeout of one HTTP request to the backend."""


class ConfigMapDelivery(ApiModel):
    """Deliver by patching the backend's ConfigMap and rolling its Deployment."""

    name: K8sName = "canopy-config"
    """Name of the ConfigMap that holds the backend's merged Helm values."""
    key: Annotated[str, StringConstraints(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")] = (
        "canopy-config.yaml"
    )
    """Key in the ConfigMap whose value is the values YAML."""
    deployment: K8sName = "canopy-backend"
    """Deployment to roll after a change (the process reads its config only at start-up)."""


class GitAuthor(ApiModel):
    """Author and committer of the operator's commits."""

    name: Annotated[str, StringConstraints(min_length=1, max_length=256)] = "canopy-operator"
    """Name written as the author and committer of the operator's commits."""
    email: Annotated[str, StringConstraints(min_length=3, max_length=256, pattern=r"^[^@\s]+@[^@\s]+$")] = (
        "canopy-operator@noreply.canopy.genaiops.io"
    )
    """Author e-mail."""


class PullRequestSpec(ApiModel):
    """Where to open pull requests in PullRequest mode."""

    provider: Literal["Gitea", "GitHub"] = "Gitea"
    """The forge's API flavour (the course uses Gitea)."""
    api_url: str | None = Field(default=None, pattern=r"^https?://\S+$", max_length=2048)
    """API base, e.g. https://gitea.example.com/api/v1 or https://api.github.com. Without it, the branch is pushed and the pull request is left to a human."""
    base_branch: str | None = Field(default=None, max_length=255)
    """Branch the pull request targets; defaults to spec.delivery.git.branch."""


class GitDelivery(ApiModel):
    """Deliver by committing the values file to the Git repository Argo CD syncs."""

    repository: Annotated[
        str,
        StringConstraints(min_length=1, max_length=2048, pattern=r"^(https?://|ssh://|file://|[^@\s]+@[^:\s]+:)\S+$"),
    ]
    """Clone URL: https://, ssh://, git@host:path or file://. Never put credentials in it; use credentialsSecret."""
    branch: Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=r"^[^\s~^:?*\[\\]+$")] = "main"
    """Branch Argo CD syncs from."""
    values_file: Annotated[str, StringConstraints(min_length=1, max_length=1024, pattern=r"^[^/\s][^\s]*\.ya?ml$")] = (
        "chart/values-test.yaml"
    )
    """Path of the Helm values file inside the repository, e.g. chart/values-test.yaml."""
    credentials_secret: K8sName | None = None
    """Secret in the experiment's namespace with username and password (or token) for HTTPS, or ssh-privatekey (and optionally known_hosts) for SSH; optionally ca.crt, the PEM certificate authority to trust for HTTPS instead of the system's."""
    method: Literal["Push", "PullRequest"] = "Push"
    """Push commits straight to the branch, or push a branch and open a pull request."""
    pull_request: PullRequestSpec = Field(default_factory=PullRequestSpec)
    """Pull-request settings, used when method is PullRequest."""
    author: GitAuthor = Field(default_factory=GitAuthor)
    """Author and committer of the operator's commits."""


class DeliverySpec(ApiModel):
    """How the operator changes the backend's configuration."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "self.mode != 'Git' || has(self.git)",
                    "spec.delivery.git is required when spec.delivery.mode is Git",
                    ".git",
                ),
            ]
        }
    )

    mode: Literal["ConfigMap", "Git"] = "ConfigMap"
    """ConfigMap patches the ConfigMap and rolls the Deployment; Git commits to the repository Argo CD syncs (use it wherever Argo CD self-heal owns the ConfigMap)."""
    config_map: ConfigMapDelivery = Field(default_factory=ConfigMapDelivery)
    """ConfigMap-mode settings."""
    git: GitDelivery | None = None
    """Git-mode settings; required when mode is Git."""
    verify_timeout: Duration = "5m"
    """How long to wait for the running backend to report a change before the experiment is Degraded."""
    on_drift: Literal["Reapply", "Stop"] = "Reapply"
    """What to do when something else changes the experiment's keys back: apply them again, or stop and report."""

    @model_validator(mode="after")
    def _git_block_present(self) -> DeliverySpec:
        if self.mode == "Git" and self.git is None:
            raise ValueError("spec.delivery.git is required when spec.delivery.mode is Git")
        return self


class FeedbackSpec(ApiModel):
    """The backend's thumbs-up/down feedback feature."""

    enabled: bool = True
    """Turn on feedback collection while the experiment runs."""


class ChampionSpec(ApiModel):
    """The current prompt."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "!has(self.prompt) || self.prompt.matches('\\\\S')",
                    "spec.champion.prompt must contain a non-whitespace character",
                    ".prompt",
                ),
            ]
        }
    )

    prompt: NonEmptyText | None = None
    """The champion prompt text. Defaults to the summarize.prompt configured when the test starts."""

    @field_validator("prompt")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        return value if value is None else _visible(value, "spec.champion.prompt")


class ChallengerSpec(ApiModel):
    """The candidate prompt."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "self.prompt.matches('\\\\S')",
                    "spec.challenger.prompt must contain a non-whitespace character",
                    ".prompt",
                ),
            ]
        }
    )

    prompt: NonEmptyText
    """The challenger prompt text, served as summarize.prompt_b during the test."""

    @field_validator("prompt")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        return _visible(value, "spec.challenger.prompt")


class AnalysisSpec(ApiModel):
    """How the A/B test decides. alpha, tau, method, minVotes, maxVotes and equivalenceDelta are fixed when a test starts: changing them starts a new test."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "self.maxVotes >= self.minVotes",
                    "spec.analysis.maxVotes must be >= spec.analysis.minVotes",
                    ".maxVotes",
                ),
                _cel(
                    "duration(self.interval) >= duration('5s')",
                    "spec.analysis.interval must be at least 5s",
                    ".interval",
                ),
            ]
        }
    )

    method: Literal["msprt", "bayes-factor", "one-sided"] = "msprt"
    """msprt: two-sided normal-mixture SPRT (default); bayes-factor: Beta(10,10) mixture; one-sided: only the challenger can win."""
    alpha: float = Field(default=0.05, gt=0, le=0.5)
    """Bound on the probability of ever promoting when there is no real difference (0 < alpha <= 0.5)."""
    tau: float = Field(default=0.1, gt=0, le=10)
    """Mixture scale of the mSPRT prior on the effect (larger tau favours larger effects)."""
    min_votes: int = Field(default=30, ge=1, le=1_000_000)
    """Decisive votes (ties excluded) before any decision."""
    max_votes: int = Field(default=5000, ge=1, le=1_000_000)
    """Decisive votes after which the test stops with no winner (the champion stays)."""
    equivalence_delta: float | None = Field(default=None, gt=0, lt=0.5)
    """Optional: stop with no meaningful winner when the confidence sequence lies inside (1/2 - delta, 1/2 + delta)."""
    interval: Duration = "30s"
    """How often to read votes and feedback from the backend (at least 5s)."""
    duplicate_vote_cap: int = Field(default=3, ge=1, le=1000)
    """At most this many votes with the same input and the same pair of answers count; the rest are dropped and reported."""

    @model_validator(mode="after")
    def _consistent(self) -> AnalysisSpec:
        if self.max_votes < self.min_votes:
            raise ValueError("spec.analysis.maxVotes must be >= spec.analysis.minVotes")
        if parse_duration(self.interval) < 5:
            raise ValueError("spec.analysis.interval must be at least 5s")
        return self


class PromotionSpec(ApiModel):
    """What happens when the test decides."""

    policy: Literal["Automatic", "Manual"] = "Automatic"
    """Automatic promotes a winning challenger at once; Manual waits in AwaitingApproval for approved: true."""
    approved: bool = False
    """Approve the pending promotion (kubectl patch, or a Git commit synced by Argo CD). Only an approval given while the test awaits it counts, unless approvedTestId names the test."""
    approved_test_id: Annotated[str, StringConstraints(max_length=64)] | None = None
    """Optional: the status.test.id this approval is for; an approval naming another test does nothing."""
    keep_feedback: bool = True
    """Leave feedback enabled after the test ends (true) or restore the flag it had before the experiment (false)."""
    on_delete: Literal["Restore", "Keep"] = "Restore"
    """On deletion: Restore the champion-only config and the flags as they were, or Keep the config as it is."""


class JudgeSpec(ApiModel):
    """The LLM judge used by evaluations (any OpenAI-compatible chat-completions endpoint; Llama Stack serves one)."""

    endpoint: str | None = Field(default=None, pattern=r"^https?://\S+$", max_length=2048)
    """Base URL of the OpenAI-compatible API, e.g. http://llamastack:8321/v1/openai/v1. Without it, only non-LLM scorers run."""
    model: Annotated[str, StringConstraints(min_length=1, max_length=256)] = "llama32"
    """Judge model id."""
    api_key_secret: K8sName | None = None
    """Optional Secret with key api-key, sent as a bearer token."""


class EvaluationSpec(ApiModel):
    """Evaluation Jobs run on the negative feedback the experiment collected."""

    enabled: bool = False
    """Run evaluation Jobs on the negative feedback (off by default)."""
    min_new_negatives: int = Field(default=10, ge=1, le=100000)
    """Start an evaluation when at least this many new thumbs-down entries arrived since the last one."""
    run_request: Annotated[str, StringConstraints(max_length=63)] | None = None
    """Change this value (from kubectl or Git) to request an evaluation now."""
    image: Annotated[str, StringConstraints(min_length=1, max_length=1024)] | None = None
    """Runner image; defaults to the operator's own image."""
    judge: JudgeSpec = Field(default_factory=JudgeSpec)
    """The LLM judge."""
    gate_promotion: bool = False
    """Promote a challenger only if its latest evaluation passed minChallengerBetterRate."""
    min_challenger_better_rate: float = Field(default=0.5, ge=0, le=1)
    """Pass threshold: share of negative cases where the pairwise judge prefers the challenger."""
    active_deadline: Duration = "15m"
    """How long one evaluation Job may run (its activeDeadlineSeconds), e.g. 15m."""
    backoff_limit: int = Field(default=1, ge=0, le=10)
    """How many times a failed evaluation pod is retried (the Job's backoffLimit)."""
    ttl_after_finished: Duration = "24h"
    """How long a finished Job stays before Kubernetes deletes it (its ttlSecondsAfterFinished), e.g. 24h."""
    history_limit: int = Field(default=5, ge=1, le=50)
    """Finished evaluation Jobs kept."""


class PromptExperimentSpec(ApiModel):
    """An A/B test of a challenger prompt against the champion on a running Canopy backend."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "!has(self.champion) || !has(self.champion.prompt) || self.champion.prompt != self.challenger.prompt",
                    "spec.challenger.prompt must differ from spec.champion.prompt",
                    ".challenger.prompt",
                ),
            ]
        }
    )

    backend: BackendSpec = Field(default_factory=BackendSpec)
    """The Canopy backend under test."""
    delivery: DeliverySpec = Field(default_factory=DeliverySpec)
    """How config reaches the backend."""
    feedback: FeedbackSpec = Field(default_factory=FeedbackSpec)
    """Thumbs-up/down feedback."""
    champion: ChampionSpec = Field(default_factory=ChampionSpec)
    """The current prompt."""
    challenger: ChallengerSpec
    """The candidate prompt."""
    analysis: AnalysisSpec = Field(default_factory=AnalysisSpec)
    """The sequential test."""
    promotion: PromotionSpec = Field(default_factory=PromotionSpec)
    """What happens on a decision and on deletion."""
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    """Evaluation Jobs on negative feedback."""

    @model_validator(mode="after")
    def _prompts_differ(self) -> PromptExperimentSpec:
        if self.champion.prompt is not None and self.champion.prompt == self.challenger.prompt:
            raise ValueError("spec.challenger.prompt must differ from spec.champion.prompt")
        return self
