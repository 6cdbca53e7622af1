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
    generation: Literal[1, 2] = 1
    """The backend's generation. 1: prompt texts in summarize.prompt / summarize.prompt_b, votes in its own API. 2: the summarization section, prompts in the MLflow registry (summarization.mlflow_prompt_version is the champion, ab_testing.mlflow_prompt_b_version the challenger's version), votes in MLflow."""
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

    mode: Literal["ConfigMap", "Git", "Shadow"] = "ConfigMap"
    """ConfigMap patches the ConfigMap and rolls the Deployment; Git commits to the repository Argo CD syncs (use it wherever Argo CD self-heal owns the ConfigMap); Shadow writes nothing and promotes nothing: it decides on the A/B test the backend already runs (its prompt and prompt_b must be the spec's champion and challenger)."""
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
    """The candidate prompt: its text (prompts.store Config) or its version in the MLflow prompt registry."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "!has(self.prompt) || self.prompt.matches('\\\\S')",
                    "spec.challenger.prompt must contain a non-whitespace character",
                    ".prompt",
                ),
                _cel(
                    "has(self.prompt) != has(self.version)",
                    "spec.challenger needs exactly one of prompt (prompt text) or version (MLflow registry version)",
                ),
            ]
        }
    )

    prompt: NonEmptyText | None = None
    """The challenger prompt text, served as summarize.prompt_b during the test (prompts.store Config)."""
    version: int | None = Field(default=None, ge=1, le=1_000_000_000)
    """The challenger's version number in the MLflow prompt registry (prompts.store MLflowRegistry): a concrete version, never latest or an alias, so the arm cannot change under the test."""

    @field_validator("prompt")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        return value if value is None else _visible(value, "spec.challenger.prompt")

    @model_validator(mode="after")
    def _one_arm(self) -> ChallengerSpec:
        if (self.prompt is None) == (self.version is None):
            raise ValueError(
                "spec.challenger needs exactly one of prompt (prompt text) or version (MLflow registry version)"
            )
        return self


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

    method: Literal["msprt", "bayes-factor", "one-sided", "betting"] = "betting"
    """betting (default): testing by betting, a fund of constant and plug-in bettors (two-sided, about 12 % fewer votes than msprt); msprt: two-sided normal-mixture SPRT (the default of earlier releases: objects created then keep it); bayes-factor: Beta(10,10) mixture; one-sided: only the challenger can win."""
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
    case_budget: Duration = "30s"
    """Expected time of one case (the backend's answers and the judge's calls): the Job's deadline is derived from it and the number of cases, with a margin."""
    concurrency: int = Field(default=4, ge=1, le=32)
    """Cases evaluated at once."""
    active_deadline: Duration = "6h"
    """The longest the derived deadline of one evaluation Job (its activeDeadlineSeconds) may be, e.g. 6h."""
    judge_unreviewed: bool = False
    """Also ask llm-as-judge::base about cases nobody has written an expected result for (the course does; the grade says little without a reference). The pairwise judge sees every case either way."""
    backoff_limit: int = Field(default=1, ge=0, le=10)
    """How many times a failed evaluation pod is retried (the Job's backoffLimit)."""
    ttl_after_finished: Duration = "24h"
    """How long a finished Job stays before Kubernetes deletes it (its ttlSecondsAfterFinished), e.g. 24h."""
    history_limit: int = Field(default=5, ge=1, le=50)
    """Finished evaluation Jobs kept."""


ServerUrl = Annotated[str, StringConstraints(max_length=2048, pattern=r"^https?://[^\s/?#@]+(/[^\s?#]*)?$")]
"""An http(s) server URL without userinfo, query or fragment; the host follows spec.backend.url's rule."""
AnnotationName = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")]


class MlflowVotes(ApiModel):
    """Votes kept as MLflow assessments on the application's traces (the course's Generation 2 backend): ab_preference per A/B answer, user_satisfaction for thumbs."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "self.armFrom != 'Tag' || has(self.armTag)",
                    "spec.votes.mlflow.armTag is required when armFrom is Tag",
                    ".armTag",
                ),
            ]
        }
    )

    tracking_url: ServerUrl
    """The MLflow tracking server, e.g. http://mlflow.toolings.svc:5000 (a Service of this namespace, or a host on the operator's allow-list)."""
    experiment_id: Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
    """The MLflow experiment the application's traces go to."""
    arm_from: Literal["Rationale", "Tag", "Prompt"] = "Rationale"
    """Where a vote's arm is read: the Generation 2 backend's rationale text ("... (mapped to challenger)"), a trace tag, or (Prompt) the registry version the trace links to (MLflow links a trace to a prompt version when the application loads the prompt inside the trace; needs prompts.store MLflowRegistry, whose pinned versions name the arms)."""
    arm_tag: AnnotationName | None = None
    """The trace tag whose value is the arm (champion or challenger) when armFrom is Tag."""
    credentials_secret: K8sName | None = None
    """Secret with a token (or username and password) for the tracking server, opted in like the Git credentials."""


class PhoenixVotes(ApiModel):
    """Votes kept as Arize Phoenix span annotations."""

    url: ServerUrl
    """The Phoenix server, e.g. http://phoenix.toolings.svc:6006 (a Service of this namespace, or a host on the operator's allow-list)."""
    project: Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=r"^[^\s/?#]+$")] = "default"
    """The Phoenix project the application's spans go to."""
    annotation_name: AnnotationName = "ab_preference"
    """The annotation that records an A/B vote on a span: metadata.arm names the arm, a score of 1 (or label true/preferred) that it won."""
    feedback_annotation_name: AnnotationName = "user_feedback"
    """The annotation that records thumbs feedback (label thumbs_down or score 0 is negative)."""
    span_name: Annotated[str, StringConstraints(min_length=1, max_length=256)] | None = None
    """Only LLM spans of this name (e.g. ChatCompletion)."""
    count_on: Literal["LLMSpan", "ParentSpan"] = "LLMSpan"
    """Which span's annotations are votes: the LLM span (where the course teaches to put them) or its parent, for an application that annotates the request span."""
    credentials_secret: K8sName | None = None
    """Secret with an API key for Phoenix, opted in like the Git credentials."""


class VoteSourceSpec(ApiModel):
    """Where the votes and the thumbs feedback of a test are read."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "self.source != 'MLflow' || has(self.mlflow)",
                    "spec.votes.mlflow is required when spec.votes.source is MLflow",
                    ".mlflow",
                ),
                _cel(
                    "self.source != 'Phoenix' || has(self.phoenix)",
                    "spec.votes.phoenix is required when spec.votes.source is Phoenix",
                    ".phoenix",
                ),
            ]
        }
    )

    source: Literal["Canopy", "MLflow", "Phoenix"] = "Canopy"
    """Canopy: the Generation 1 backend's own API (GET /feedback/ab, /feedback). MLflow: assessments on traces. Phoenix: span annotations."""
    mlflow: MlflowVotes | None = None
    """The MLflow vote source."""
    phoenix: PhoenixVotes | None = None
    """The Phoenix vote source."""

    @model_validator(mode="after")
    def _configured(self) -> VoteSourceSpec:
        for name in ("mlflow", "phoenix"):
            wanted = {"mlflow": "MLflow", "phoenix": "Phoenix"}[name]
            if self.source == wanted and getattr(self, name) is None:
                raise ValueError(f"spec.votes.{name} is required when spec.votes.source is {wanted}")
        if self.mlflow is not None and self.mlflow.arm_from == "Tag" and self.mlflow.arm_tag is None:
            raise ValueError("spec.votes.mlflow.armTag is required when armFrom is Tag")
        return self


class MlflowRegistryPrompts(ApiModel):
    """Prompts in the MLflow prompt registry: the champion is an alias, the challenger a concrete version."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "self.championAlias != 'latest'",
                    "spec.prompts.mlflow.championAlias must not be latest: it moves whenever anyone registers a version",
                    ".championAlias",
                ),
            ]
        }
    )

    tracking_url: ServerUrl
    """The MLflow server holding the registry (the course's toolings workspace)."""
    name: Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9_.-]+$")]
    """The registered prompt's name."""
    champion_alias: Annotated[
        str, StringConstraints(min_length=1, max_length=255, pattern=r"^[A-Za-z_][A-Za-z0-9_-]*$")
    ] = "champion"
    """The alias the application serves as the champion; promotion moves it to the challenger's version."""
    alias_cache: Duration = "60s"
    """How long the application's MLflow client caches an alias lookup; a promotion is verified after it."""
    credentials_secret: K8sName | None = None
    """Secret with a token (or username and password) for the registry, opted in like the Git credentials."""

    @field_validator("champion_alias")
    @classmethod
    def _not_latest(cls, value: str) -> str:
        if value == "latest":
            raise ValueError(
                "spec.prompts.mlflow.championAlias must not be latest: it moves whenever anyone registers a version"
            )
        return value


class PromptStoreSpec(ApiModel):
    """Where the champion and challenger prompts are kept."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "self.store != 'MLflowRegistry' || has(self.mlflow)",
                    "spec.prompts.mlflow is required when spec.prompts.store is MLflowRegistry",
                    ".mlflow",
                ),
            ]
        }
    )

    store: Literal["Config", "MLflowRegistry"] = "Config"
    """Config: the prompt texts are in the delivered config (Generation 1). MLflowRegistry: versions of a registered prompt."""
    mlflow: MlflowRegistryPrompts | None = None
    """The MLflow prompt registry."""

    @model_validator(mode="after")
    def _configured(self) -> PromptStoreSpec:
        if self.store == "MLflowRegistry" and self.mlflow is None:
            raise ValueError("spec.prompts.mlflow is required when spec.prompts.store is MLflowRegistry")
        return self


NotificationEvent = Annotated[
    Literal["AwaitingApproval", "Decided", "Promoted", "Degraded", "Aborted"],
    Field(description="A transition: AwaitingApproval, Decided, Promoted, Degraded or Aborted."),
]

ALL_NOTIFICATION_EVENTS: tuple[NotificationEvent, ...] = (
    "AwaitingApproval",
    "Decided",
    "Promoted",
    "Degraded",
    "Aborted",
)


class NotificationSpec(ApiModel):
    """A Slack-compatible incoming webhook told about AwaitingApproval, Decided, Promoted and Degraded."""

    webhook_secret: K8sName | None = None
    """Secret in the experiment's namespace whose key `url` is the webhook URL. It opts in like Git credentials (label canopy.genaiops.io/credentials=true, annotation canopy.genaiops.io/allowed-urls covering the URL). Without it, the operator-wide webhook (CANOPY_NOTIFY_WEBHOOK_URL), if any, is used."""
    events: list[NotificationEvent] = Field(default_factory=lambda: list(ALL_NOTIFICATION_EVENTS), max_length=5)
    """Which transitions to post (each at most once per test)."""


class PromptExperimentSpec(ApiModel):
    """An A/B test of a challenger prompt against the champion on a running Canopy backend."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    "!has(self.champion) || !has(self.champion.prompt) || !has(self.challenger.prompt) "
                    "|| self.champion.prompt != self.challenger.prompt",
                    "spec.challenger.prompt must differ from spec.champion.prompt",
                    ".challenger.prompt",
                ),
                _cel(
                    "(has(self.prompts) && self.prompts.store == 'MLflowRegistry') == has(self.challenger.version)",
                    "spec.challenger.version (a registry version) goes with spec.prompts.store MLflowRegistry, "
                    "spec.challenger.prompt (text) with the default store Config",
                    ".challenger",
                ),
                _cel(
                    "!has(self.prompts) || self.prompts.store != 'MLflowRegistry' "
                    "|| (has(self.backend) && has(self.backend.generation) && self.backend.generation == 2)",
                    "spec.prompts.store MLflowRegistry needs spec.backend.generation 2 (the Generation 1 backend "
                    "keeps prompt texts in its config)",
                    ".prompts.store",
                ),
                _cel(
                    "!has(self.prompts) || self.prompts.store != 'MLflowRegistry' || !has(self.champion) "
                    "|| !has(self.champion.prompt)",
                    "spec.champion.prompt is text; with spec.prompts.store MLflowRegistry the champion is "
                    "spec.prompts.mlflow.championAlias",
                    ".champion.prompt",
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
    votes: VoteSourceSpec = Field(default_factory=VoteSourceSpec)
    """Where votes and feedback are read (the Canopy backend by default)."""
    prompts: PromptStoreSpec = Field(default_factory=PromptStoreSpec)
    """Where the prompts are kept (text in the config by default)."""
    suspend: bool = False
    """Pause: no polling, no config writes, no promotion, no evaluation Jobs; every count and the read position are kept. Set back to false to resume where it stopped."""
    abort: bool = False
    """End the active test keeping the champion: the challenger is taken out of the config (A/B testing restored to what it was) and no test runs while this stays true. Set back to false to start a new test."""
    notifications: NotificationSpec = Field(default_factory=NotificationSpec)
    """Where to tell people that a human is needed or that the test moved on."""

    @model_validator(mode="after")
    def _prompts_differ(self) -> PromptExperimentSpec:
        if self.champion.prompt is not None and self.champion.prompt == self.challenger.prompt:
            raise ValueError("spec.challenger.prompt must differ from spec.champion.prompt")
        registry = self.prompts.store == "MLflowRegistry"
        if registry != (self.challenger.version is not None):
            raise ValueError(
                "spec.challenger.version (a registry version) goes with spec.prompts.store MLflowRegistry, "
                "spec.challenger.prompt (text) with the default store Config"
            )
        if registry and self.backend.generation != 2:
            raise ValueError(
                "spec.prompts.store MLflowRegistry needs spec.backend.generation 2 (the Generation 1 backend "
                "keeps prompt texts in its config)"
            )
        if registry and self.champion.prompt is not None:
            raise ValueError(
                "spec.champion.prompt is text; with spec.prompts.store MLflowRegistry the champion is "
                "spec.prompts.mlflow.championAlias"
            )
        return self

    @property
    def challenger_ref(self) -> str:
        """What the config's challenger key holds: the prompt text, or the registry version as text."""
        if self.challenger.prompt is not None:
            return self.challenger.prompt
        return str(self.challenger.version)
