"""The observed state of a PromptExperiment. Everything that must survive an operator restart lives here."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from canopy_operator.api.base import ApiModel
from canopy_operator.api.conditions import Condition

Phase = Literal[
    "Pending",
    "Progressing",
    "Running",
    "AwaitingApproval",
    "Promoting",
    "Concluded",
    "Degraded",
    "Suspended",
    "Aborted",
]
Decision = Literal["continue", "challenger", "champion", "no_winner", "equivalent"]
Side = Literal["champion", "challenger"]

PROMOTION_HISTORY_LIMIT = 10
TEST_HISTORY_LIMIT = 10
EVALUATION_HISTORY_LIMIT = 10
TRAJECTORY_LIMIT = 120
NOTIFICATION_LIMIT = 20


class VoteCounts(ApiModel):
    """Votes counted in the active test."""

    challenger_wins: int = Field(default=0, ge=0)
    """Votes preferring the challenger (w_B)."""
    champion_wins: int = Field(default=0, ge=0)
    """Votes preferring the champion (w_A)."""
    ties: int = Field(default=0, ge=0)
    """Tie votes, counted apart and excluded from the test."""
    unattributed: int = Field(default=0, ge=0)
    """Votes whose prompt text could not be tied to this test's prompts (cast under another config); not counted."""
    duplicates_dropped: int = Field(default=0, ge=0)
    """Votes over the duplicate cap (same input and answers) that were dropped."""
    left_challenger: int = Field(default=0, ge=0)
    """Votes where the challenger was shown on side a (position-balance health signal)."""


class ConfidenceSequence(ApiModel):
    """An always-valid confidence interval for P(challenger preferred)."""

    lower: float = Field(ge=0, le=1)
    """Lower end of the interval (0 to 1): below it, P(challenger preferred) is ruled out at level alpha."""
    upper: float = Field(ge=0, le=1)
    """Upper end of the interval (0 to 1): above it, P(challenger preferred) is ruled out at level alpha."""


class Evidence(ApiModel):
    """The sequential test's evidence at the last count."""

    decisive_votes: int = Field(default=0, ge=0)
    """n = challenger wins + champion wins."""
    e_value: float = Field(default=1.0, ge=0)
    """The test statistic (mSPRT Lambda_n, Bayes factor or the betting fund's wealth); a decision needs e_value >= 1/alpha."""
    max_e_value: float = Field(default=1.0, ge=0)
    """Running maximum of the e-value over the test."""
    p_value: float = Field(default=1.0, ge=0, le=1)
    """Always-valid p-value: min(1, 1/maxEValue)."""
    confidence_sequence: ConfidenceSequence | None = None
    """Confidence sequence for P(challenger preferred), valid at every n at once."""
    decision: Decision = "continue"
    """continue, challenger, champion, no_winner (max votes) or equivalent (equivalence stop)."""
    reason: str = ""
    """One-line explanation of the decision."""


class TestIdentity(ApiModel):
    """The active test: a new one starts whenever a prompt or an analysis setting changes."""

    id: str = Field(min_length=1, max_length=64)
    """Stable id derived from the prompts and the analysis settings."""
    started_at: datetime
    """When this test started."""
    champion_hash: str
    """sha256 (hex, first 16) of the champion prompt text."""
    challenger_hash: str
    """sha256 (hex, first 16) of the challenger prompt text."""
    champion_prompt: str
    """The champion text pinned when the test started (spec.champion.prompt or the configured prompt)."""
    method: str
    """Decision method fixed at the test's start: msprt, bayes-factor, one-sided or betting."""
    method_version: int | None = Field(default=None, ge=1, le=1000)
    """Version of the method's constants fixed at the test's start (betting: 2 gives the challenger's side 56 % of
    the fund, 1 split it evenly); absent: 1, a test started before versions were recorded."""
    alpha: float
    """False-promotion bound (significance level) fixed at the test's start."""
    tau: float
    """Mixture width of the mSPRT (tau), fixed at the test's start."""
    min_votes: int
    """Minimum decisive votes."""
    max_votes: int
    """Maximum decisive votes."""
    equivalence_delta: float | None = None
    """Equivalence margin, if any."""
    champion_version: str | None = None
    """The registry version the champion alias named when the test started (prompts.store MLflowRegistry)."""
    challenger_version: str | None = None
    """The challenger's registry version (prompts.store MLflowRegistry)."""


class EpochPrompts(ApiModel):
    """The prompt texts (by hash) live in one backend epoch, used to attribute its votes."""

    prompt: str | None = None
    """Hash of summarize.prompt in this epoch."""
    prompt_b: str | None = None
    """Hash of summarize.prompt_b in this epoch."""


class Collection(ApiModel):
    """Read position in the backend's in-memory stores; advanced in the same status write as the counts."""

    epoch: int = Field(default=0, ge=0)
    """Backend epochs seen (a restart starts a new one)."""
    ab_fingerprint: str = ""
    """Fingerprint of the first A/B entry of the current epoch (detects restarts)."""
    ab_cursor: int = Field(default=0, ge=0)
    """Highest A/B entry id read in the current epoch."""
    feedback_fingerprint: str = ""
    """Fingerprint of the first feedback entry of the current epoch."""
    feedback_cursor: int = Field(default=0, ge=0)
    """Highest feedback entry id read in the current epoch."""
    epoch_prompts: EpochPrompts = Field(default_factory=EpochPrompts)
    """The prompts live in the current epoch."""
    restarts_detected: int = Field(default=0, ge=0)
    """Backend restarts detected."""
    last_poll_time: datetime | None = None
    """When a poll last found new entries or a restart (an idle poll writes nothing, so status stays unchanged)."""
    vote_fingerprints: str = ""
    """Compact record of vote fingerprints and their counts, for the duplicate cap (internal)."""


class Negatives(ApiModel):
    """Thumbs-down feedback kept by the operator (the backend forgets it on restart)."""

    total: int = Field(default=0, ge=0)
    """Distinct thumbs-down entries read (deduplicated across backend restarts), including any trimmed from the ledger."""
    since_last_evaluation: int = Field(default=0, ge=0)
    """Entries that arrived after the last evaluation started."""
    at_last_evaluation: int = Field(default=0, ge=0)
    """The total when the last evaluation started."""
    dataset_secret: str | None = None
    """Name of the dataset Secret (the /feedback/export format, named by content hash) for the ledger's current entries; created when an evaluation starts."""
    ledger_secret: str | None = None
    """Secret holding every kept thumbs-down entry (the negative-feedback ledger)."""
    trimmed: int = Field(default=0, ge=0)
    """Oldest entries dropped from the ledger to keep it under its size cap."""
    awaiting_review: int = Field(default=0, ge=0)
    """Kept entries nobody has written an expected result for: evaluations report them as unreviewed (never as subset_of passes) and judge them pairwise only."""


class DeliveryStatus(ApiModel):
    """What the operator last applied and whether the running backend reports it."""

    mode: str = ""
    """ConfigMap or Git."""
    desired_hash: str = ""
    """Hash of the four managed keys the operator wants."""
    applied_hash: str = ""
    """Hash of the managed keys last written."""
    revision: str = ""
    """The last rollout (config sha256) or commit SHA applied."""
    applied_at: datetime | None = None
    """When it was written."""
    verified_at: datetime | None = None
    """When the running backend first reported it."""
    branch: str | None = None
    """Branch pushed in PullRequest mode."""
    pull_request_url: str | None = None
    """Pull request opened in PullRequest mode."""
    argo_managed: bool = False
    """The ConfigMap carries Argo CD tracking metadata (Git mode is the right one there)."""


class OriginalConfig(ApiModel):
    """The managed keys as they were before the experiment, restored on deletion with onDelete: Restore."""

    prompt: str | None = None
    """summarize.prompt before the experiment (the champion text then)."""
    prompt_b: str | None = None
    """summarize.prompt_b before the experiment (null: absent)."""
    feedback_enabled: bool | None = None
    """feedback.enabled (null: the section was absent)."""
    ab_testing_enabled: bool | None = None
    """ab_testing.enabled (null: the section was absent)."""


class PendingPromotion(ApiModel):
    """A promotion decided and recorded before it is delivered, so it happens exactly once."""

    test_id: str
    """Test that decided."""
    outcome: Literal["challenger", "champion", "no_winner", "equivalent", "aborted"]
    """What the test concluded."""
    prompt_hash: str
    """Hash of the prompt that stays or becomes summarize.prompt."""
    decided_at: datetime
    """When the decision was made."""
    summary: str
    """One-line decision summary."""
    store_moved_at: datetime | None = None
    """When the prompt store made the winner the champion (the MLflow alias move); the promotion completes once the application's alias cache has expired after it."""
    store_revision: str | None = None
    """What the prompt store did, e.g. prompts:/summarization@champion 3 -> 5."""


class PromotionRecord(ApiModel):
    """One concluded test in the bounded promotion history."""

    test_id: str
    """Id of the concluded test (a hash of its prompts and settings)."""
    outcome: Literal["challenger", "champion", "no_winner", "equivalent", "aborted"]
    """What was concluded."""
    promoted_hash: str
    """Hash of the prompt that is summarize.prompt afterwards."""
    challenger_wins: int = Field(ge=0)
    """w_B at the decision."""
    champion_wins: int = Field(ge=0)
    """w_A at the decision."""
    ties: int = Field(ge=0)
    """Ties at the decision."""
    p_value: float = Field(ge=0, le=1)
    """Always-valid p-value at the decision."""
    confidence_sequence: ConfidenceSequence | None = None
    """Confidence sequence at the decision."""
    summary: str
    """One-line summary."""
    decided_at: datetime
    """When the test decided (the pending promotion was recorded)."""
    completed_at: datetime
    """When the resulting config was verified in the running backend."""
    previous_version: str | None = None
    """The registry version the champion alias named before the promotion: move the alias back to it to roll back."""
    revision: str
    """Commit SHA or rollout that delivered it."""


class TestRecord(ApiModel):
    """A test that ended because the spec changed (superseded) or concluded."""

    test_id: str
    """Id of the ended test (a hash of its prompts and settings)."""
    ended_at: datetime
    """When it ended."""
    result: str
    """superseded, or the decision."""
    challenger_wins: int = Field(ge=0)
    """Votes preferring the challenger (w_B in the decision rule)."""
    champion_wins: int = Field(ge=0)
    """Votes preferring the champion (w_A in the decision rule)."""
    ties: int = Field(ge=0)
    """Tie votes (counted, but not part of the test)."""
    p_value: float = Field(ge=0, le=1)
    """Always-valid p-value."""


class EvaluationProgress(ApiModel):
    """How far a running evaluation is, from the runner's log."""

    done: int = Field(ge=0)
    """Cases finished."""
    total: int = Field(ge=0)
    """Cases in the run."""
    eta_seconds: float | None = Field(default=None, ge=0)
    """Estimated seconds left, from the pace so far."""
    updated_at: datetime
    """When the operator read it."""


ResultsSecretName = Annotated[
    str, StringConstraints(max_length=253), Field(description="A results Secret: <job>-results-<n>.")
]


class EvaluationResults(ApiModel):
    """Where a finished evaluation's per-case results are kept (they outlive its Job and pod)."""

    secrets: list[ResultsSecretName] = Field(default_factory=list, max_length=64)
    """Secrets holding the results, key results.jsonl, one JSON object per case (kubectl pexp results)."""
    cases: int = Field(default=0, ge=0)
    """Cases with results."""
    truncated: bool = False
    """Some cases' results did not fit and were left out."""
    unavailable: str | None = None
    """Why no per-case results could be collected (e.g. the pod was gone)."""


class EvaluationRun(ApiModel):
    """One evaluation Job and its machine-readable result."""

    name: str
    """Name of the evaluation Job in the experiment's namespace."""
    test_id: str
    """Test it evaluated."""
    trigger: str
    """negatives, gate or request."""
    dataset_secret: str
    """Dataset Secret it read."""
    cases: int = Field(ge=0)
    """Negative cases in the dataset."""
    started_at: datetime
    """When the Job was created."""
    finished_at: datetime | None = None
    """When it finished."""
    state: Literal["Running", "Succeeded", "Failed"] = "Running"
    """Running, Succeeded or Failed (read from the Job and its termination message)."""
    scored: int | None = None
    """Cases the runner scored (out of cases; the rest failed to score)."""
    challenger_better_rate: float | None = None
    """Share of cases where the pairwise judge preferred the challenger."""
    passed: bool | None = None
    """Whether it met spec.evaluation.minChallengerBetterRate."""
    message: str = ""
    """Failure reason or summary."""
    unreviewed: int | None = None
    """Cases without an expected result (named in the results, never counted as subset_of passes)."""
    progress: EvaluationProgress | None = None
    """Cases finished so far, while it runs."""
    results: EvaluationResults | None = None
    """Where its per-case results are kept."""


class TrajectoryPoint(ApiModel):
    """One point of the confidence sequence over time (status.trajectory)."""

    at: datetime
    """When the operator computed it."""
    decisive_votes: int = Field(ge=0)
    """Decisive votes (challenger plus champion wins) so far."""
    lower: float = Field(ge=0, le=1)
    """Lower bound of the challenger's win rate."""
    upper: float = Field(ge=0, le=1)
    """Upper bound of the challenger's win rate."""
    p_value: float = Field(ge=0, le=1)
    """Always-valid p-value."""


class NotificationRecord(ApiModel):
    """A transition the webhook was told about (so a restart does not post it again)."""

    key: Annotated[str, StringConstraints(max_length=128)]
    """`<event>/<test id>`."""
    sent_at: datetime | None = None
    """When the webhook accepted it; unset while it is being sent."""
    attempts: int = Field(default=0, ge=0)
    """Posts tried."""


class PromptExperimentStatus(ApiModel):
    """Observed state, computed whole by the operator and written once per change."""

    phase: Phase = "Pending"
    """Pending, Progressing, Running, AwaitingApproval, Promoting, Concluded or Degraded."""
    message: str = ""
    """Human summary of the phase."""
    observed_generation: int = Field(default=0, ge=0)
    """The .metadata.generation last reconciled."""
    conditions: list[Condition] = Field(default_factory=list)
    """Conditions: Ready, Progressing, Degraded, ConfigDrift, Decided, AwaitingApproval, Promoted, EvaluationPassed."""
    test: TestIdentity | None = None
    """The active test."""
    votes: VoteCounts = Field(default_factory=VoteCounts)
    """Counts of the active test."""
    evidence: Evidence = Field(default_factory=Evidence)
    """The decision evidence of the active test."""
    winner: Literal["challenger", "champion", "none"] | None = None
    """The concluded test's winner (printer column)."""
    awaiting_approval_since_generation: int | None = None
    """Generation at which the test started awaiting approval; approvals must come later."""
    collection: Collection = Field(default_factory=Collection)
    """Read position in the backend's stores."""
    negatives: Negatives = Field(default_factory=Negatives)
    """Thumbs-down feedback kept for evaluations."""
    delivery: DeliveryStatus = Field(default_factory=DeliveryStatus)
    """The last config applied."""
    original: OriginalConfig | None = None
    """Managed keys before the experiment (for onDelete: Restore)."""
    pending_promotion: PendingPromotion | None = None
    """A decided promotion not yet verified."""
    promotions: list[PromotionRecord] = Field(default_factory=list, max_length=PROMOTION_HISTORY_LIMIT)
    """Concluded tests, newest last (bounded)."""
    test_history: list[TestRecord] = Field(default_factory=list, max_length=TEST_HISTORY_LIMIT)
    """Superseded or concluded tests, newest last (bounded)."""
    evaluations: list[EvaluationRun] = Field(default_factory=list, max_length=EVALUATION_HISTORY_LIMIT)
    """Evaluation runs, newest last (bounded)."""
    trajectory: list[TrajectoryPoint] = Field(default_factory=list, max_length=TRAJECTORY_LIMIT)
    """The active test's confidence sequence over time, thinned to at most 120 points (kubectl pexp plot)."""
    progress: str = ""
    """Short progress for the Progress column, e.g. 18/30 votes."""
    suspended_at: datetime | None = None
    """When spec.suspend took effect; unset while not suspended."""
    notifications: list[NotificationRecord] = Field(default_factory=list, max_length=NOTIFICATION_LIMIT)
    """Transitions posted to the webhook, newest last (bounded)."""
    last_run_request: str | None = None
    """The spec.evaluation.runRequest value last honoured (a different value requests a new evaluation)."""
