"""``kubectl pexp get``: the summary, the tree and the conditions, from statuses built with the API models."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from canopy_operator.api import status as api_status
from canopy_operator.api.conditions import Condition
from canopy_operator.api.spec import PromptExperimentSpec
from canopy_operator.api.status import (
    ConfidenceSequence,
    DeliveryStatus,
    EvaluationProgress,
    EvaluationResults,
    EvaluationRun,
    Evidence,
    Negatives,
    PromptExperimentStatus,
    TrajectoryPoint,
    VoteCounts,
)
from canopy_operator.pexp import tree
from canopy_operator.pexp.tree import Lookup, Related

NOW = datetime(2026, 1, 2, 10, 0, tzinfo=UTC)
STARTED = NOW - timedelta(hours=2)
TEST_ID = "9c1e2f3a4b5c6d7e"


def realistic_status(
    name: str = "tone", phase: str = "Running", test_id: str = TEST_ID, now: datetime = NOW
) -> PromptExperimentStatus:
    """A test two hours in: 214 to 106 with 12 ties, its band clear of 0.5 from 152 votes (decided once minVotes,
    300, were in), two evaluation runs."""
    started = now - timedelta(hours=2)
    trajectory = []
    for k in range(1, 41):
        n = 8 * k
        width = 2.2 / math.sqrt(n)
        trajectory.append(
            TrajectoryPoint(
                at=started + timedelta(minutes=3 * k),
                decisive_votes=n,
                lower=max(0.0, 0.68 - width),
                upper=min(1.0, 0.68 + width),
                p_value=min(1.0, 3 / n),
            )
        )
    return PromptExperimentStatus(
        phase=phase,  # type: ignore[arg-type]  # a Phase literal
        message="challenger ahead: 214 to 106",
        observed_generation=3,
        test=api_status.TestIdentity(
            id=test_id,
            started_at=started,
            champion_hash="a" * 16,
            challenger_hash="b" * 16,
            champion_prompt="Summarize the following text:",
            method="msprt",
            alpha=0.05,
            tau=0.1,
            min_votes=300,
            max_votes=5000,
        ),
        votes=VoteCounts(challenger_wins=214, champion_wins=106, ties=12, unattributed=3),
        evidence=Evidence(
            decisive_votes=320,
            e_value=41.2,
            max_e_value=41.2,
            p_value=0.0243,
            confidence_sequence=ConfidenceSequence(lower=0.551, upper=0.789),
            decision="continue",
            reason="the confidence sequence excludes 0.5; waiting for minVotes",
        ),
        negatives=Negatives(
            total=23,
            since_last_evaluation=3,
            ledger_secret=f"{name}-negatives",
            dataset_secret=f"{name}-dataset-81d2aa07",
            awaiting_review=4,
        ),
        delivery=DeliveryStatus(
            mode="ConfigMap",
            revision="sha256:1a2b3c4d5e6f7a8b9c0d",
            applied_at=started,
            verified_at=started + timedelta(minutes=1),
        ),
        evaluations=[
            EvaluationRun(
                name=f"{name}-eval-81d2aa07",
                test_id=test_id,
                trigger="negatives",
                dataset_secret=f"{name}-dataset-77aa0011",
                cases=12,
                started_at=started + timedelta(minutes=30),
                finished_at=started + timedelta(minutes=34),
                state="Succeeded",
                scored=11,
                challenger_better_rate=0.75,
                passed=True,
                message="11/12 cases scored, challenger better in 75%",
                unreviewed=2,
                results=EvaluationResults(secrets=[f"{name}-eval-81d2aa07-results-0"], cases=12),
            ),
            EvaluationRun(
                name=f"{name}-eval-3f9a0c12",
                test_id=test_id,
                trigger="gate",
                dataset_secret=f"{name}-dataset-81d2aa07",
                cases=40,
                started_at=now - timedelta(minutes=5),
                progress=EvaluationProgress(done=12, total=40, eta_seconds=200, updated_at=now),
            ),
        ],
        trajectory=trajectory,
        progress="320/300 votes",
        conditions=[
            Condition(
                type="Ready",
                status="True",
                reason="Verified",
                message="the backend serves the config",
                last_transition_time=started + timedelta(minutes=1),
            ),
            Condition(
                type="EvaluationPassed",
                status="False",
                reason="EvaluationRunning",
                message=f"evaluation {name}-eval-3f9a0c12 is running",
                last_transition_time=now - timedelta(minutes=5),
            ),
        ],
    )


def status_json(status: PromptExperimentStatus) -> dict[str, Any]:
    """The status as the API server returns it."""
    return status.model_dump(mode="json", by_alias=True, exclude_none=True)


def spec_json(**over: Any) -> dict[str, Any]:
    body = {"challenger": {"prompt": "Summarize in two sentences:"}, "analysis": {"minVotes": 300}, **over}
    return PromptExperimentSpec.model_validate(body).model_dump(mode="json", by_alias=True, exclude_none=True)


def experiment(status: dict[str, Any] | None, spec: dict[str, Any] | None = None, name: str = "tone") -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "canopy.genaiops.io/v1alpha1",
        "kind": "PromptExperiment",
        "metadata": {"name": name, "namespace": "shop", "resourceVersion": "4711", "generation": 3},
        "spec": spec if spec is not None else spec_json(),
    }
    if status is not None:
        obj["status"] = status
    return obj


RELATED = Related(
    configmap=Lookup(
        obj={"metadata": {"name": "canopy-config", "resourceVersion": "812"}, "keys": ["canopy-config.yaml"]}
    ),
    deployment=Lookup(
        obj={
            "metadata": {"name": "canopy-backend", "generation": 4},
            "spec": {"replicas": 3},
            "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2, "observedGeneration": 4},
        }
    ),
    jobs=Lookup(obj={"items": [{"metadata": {"name": "tone-eval-3f9a0c12"}, "status": {"active": 1}}]}),
)


def rows(output: str) -> dict[str, list[str]]:
    """The tree's rows by name (the tree prefix stripped): [kind, status, info]."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("NAME "))
    header = lines[start]
    cols = [header.index(c) for c in ("KIND", "STATUS", "INFO")]
    out = {}
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        name = re.sub(r"^[\s\u2502\u251c\u2514\u2500]+", "", line[: cols[0]]).strip()
        out[name] = [line[cols[0] : cols[1]].strip(), line[cols[1] : cols[2]].strip(), line[cols[2] :].strip()]
    return out


def field(output: str, key: str) -> str:
    line = next(line for line in output.splitlines() if line.startswith(f"{key}:"))
    return line.split(":", 1)[1].strip()


def test_the_summary_shows_phase_votes_progress_and_evidence() -> None:
    status = realistic_status()
    out = tree.render(experiment(status_json(status)), RELATED, "shop", NOW)
    assert field(out, "Name") == "tone"
    assert field(out, "Namespace") == "shop"
    assert field(out, "Phase") == status.phase
    assert field(out, "Message") == status.message
    assert field(out, "Progress") == status.progress
    assert field(out, "Test") == f"{TEST_ID} (msprt, alpha 0.05, started 2026-01-02T08:00:00Z, 2h00m ago)"
    assert field(out, "Votes") == "challenger 214  champion 106  ties 12  (unattributed 3)"
    assert field(out, "Min votes") == "[########################] 320/300 decisive votes (100%)"
    assert field(out, "Evidence") == "CS [0.551, 0.789]  p-value 0.0243  e-value 41.2  decision continue"
    assert field(out, "Reason") == status.evidence.reason
    assert field(out, "Trajectory") == "40 points (kubectl pexp plot tone -n shop)"


def test_progress_toward_min_votes_is_a_share_of_the_spec() -> None:
    status = realistic_status()
    status.evidence.decisive_votes = 75
    out = tree.render(experiment(status_json(status)), RELATED, "shop", NOW)
    assert field(out, "Min votes") == "[######------------------] 75/300 decisive votes (25%)"


def test_the_tree_shows_delivery_deployment_jobs_and_secrets() -> None:
    out = tree.render(experiment(status_json(realistic_status())), RELATED, "shop", NOW)
    table = rows(out)
    assert table["tone"][:2] == ["PromptExperiment", "Running"]
    assert table["canopy-config"][:2] == ["ConfigMap", "found"]
    assert "key canopy-config.yaml" in table["canopy-config"][2]
    assert "revision sha256:1a2b3c4d5e6f" in table["canopy-config"][2]
    assert "resourceVersion 812" in table["canopy-config"][2]
    assert table["canopy-backend"][:2] == ["Deployment", "2/3 ready"]
    assert table["tone-eval-3f9a0c12"][:2] == ["Job", "Running"]
    assert table["tone-eval-3f9a0c12"][2].startswith("12/40 cases, ETA 3m20s")
    assert table["tone-eval-81d2aa07"][:2] == ["Job", "Succeeded"]
    assert table["tone-eval-81d2aa07"][2] == (
        "11/12 scored, challenger better 75%, passed, 2 unreviewed, trigger negatives, Job gone"
    )
    assert table["tone-eval-81d2aa07-results-0"][:2] == ["Secret", "results"]
    assert table["tone-dataset-77aa0011"][:2] == ["Secret", "dataset"]
    assert table["tone-negatives"] == ["Secret", "ledger", "23 negatives, 3 since the last run, 4 awaiting review"]
    # the ledger's current dataset is listed under a run and as the experiment's own
    assert out.count("tone-dataset-81d2aa07") == 2
    # the newest run comes first, and the tree is drawn with branches
    lines = out.splitlines()
    assert lines.index(next(x for x in lines if "tone-eval-3f9a0c12 " in x)) < lines.index(
        next(x for x in lines if "tone-eval-81d2aa07 " in x)
    )
    assert any(x.startswith("\u251c\u2500\u2500 canopy-config") for x in lines)
    assert any(x.startswith("\u2514\u2500\u2500 tone-dataset-81d2aa07") for x in lines)


def test_a_run_whose_results_could_not_be_kept_says_why() -> None:
    status = realistic_status()
    status.evaluations[0].results = EvaluationResults(unavailable="the pod was gone")
    out = tree.render(experiment(status_json(status)), RELATED, "shop", NOW)
    assert rows(out)["-"] == ["Secret", "no results", "the pod was gone"]
    assert "tone-eval-81d2aa07-results-0" not in out


def test_conditions_are_listed_in_words() -> None:
    out = tree.render(experiment(status_json(realistic_status())), RELATED, "shop", NOW)
    lines = out.splitlines()
    start = lines.index("Conditions:")
    assert lines[start + 1].split() == ["TYPE", "STATUS", "REASON", "AGE", "MESSAGE"]
    assert lines[start + 2].split()[:4] == ["Ready", "True", "Verified", "1h59m"]
    assert lines[start + 2].endswith("the backend serves the config")
    assert lines[start + 3].split()[:4] == ["EvaluationPassed", "False", "EvaluationRunning", "5m00s"]


def test_awaiting_approval_says_how_to_approve() -> None:
    out = tree.render(experiment(status_json(realistic_status(phase="AwaitingApproval"))), RELATED, "shop", NOW)
    assert field(out, "Approval") == "awaited: kubectl pexp approve tone -n shop"
    spec = spec_json(suspend=True, abort=True, promotion={"approved": True, "approvedTestId": TEST_ID})
    status = realistic_status().model_copy(update={"suspended_at": NOW - timedelta(minutes=7)})
    out = tree.render(experiment(status_json(status), spec), RELATED, "shop", NOW)
    assert field(out, "Suspended") == "yes (spec.suspend), since 2026-01-02T09:53:00Z"
    assert field(out, "Abort").startswith("requested")
    assert field(out, "Approval") == f"given for test {TEST_ID}"


def test_git_delivery_shows_repository_branch_revision_and_pull_request() -> None:
    spec = spec_json(
        delivery={
            "mode": "Git",
            "git": {
                "repository": "https://bot:hunter2@git.example.com/shop/deploy.git",
                "branch": "release",
                "method": "PullRequest",
            },
        }
    )
    status = realistic_status()
    status.delivery = DeliveryStatus(
        mode="Git",
        revision="0a1b2c3d4e5f60718293a4b5c6d7e8f901234567",
        branch="canopy/tone-9c1e2f3a",
        pull_request_url="https://git.example.com/shop/deploy/pulls/17",
        applied_at=STARTED,
    )
    out = tree.render(experiment(status_json(status), spec), Related(), "shop", NOW)
    assert "hunter2" not in out
    table = rows(out)
    repo = next(k for k in table if k.startswith("https://***@git.example.com"))
    kind, state, info = table[repo]
    assert (kind, state) == ("Git", "branch release")
    assert info.startswith("chart/values-test.yaml, PullRequest, revision 0a1b2c3d4e5f, applied 2h00m ago")
    assert info.endswith("not verified yet")
    assert table["canopy/tone-9c1e2f3a"] == ["PullRequest", "opened", "https://git.example.com/shop/deploy/pulls/17"]
    assert tree.targets(experiment(None, spec)).configmap is None


def test_shadow_mode_delivers_nothing_and_lookups_that_failed_are_shown() -> None:
    spec = spec_json(delivery={"mode": "Shadow"})
    related = Related(
        deployment=Lookup(error=tree.NOT_FOUND),
        jobs=Lookup(error='list Jobs in shop: 403 Forbidden: jobs.batch is forbidden: User "ann"'),
    )
    out = tree.render(experiment(status_json(realistic_status()), spec), related, "shop", NOW)
    table = rows(out)
    assert table["-"][0] == "Shadow"
    assert table["canopy-backend"][:2] == ["Deployment", "not found"]
    assert table["evaluation Jobs"][1] == "error"
    assert "403 Forbidden" in table["evaluation Jobs"][2]
    # Jobs could not be listed, so no run is called gone
    assert "Job gone" not in out


def test_targets_come_from_the_spec() -> None:
    spec = spec_json(delivery={"configMap": {"name": "backend-values", "deployment": "summarizer"}})
    want = tree.targets(experiment(None, spec))
    assert (want.configmap, want.deployment) == ("backend-values", "summarizer")
    assert want.job_selector == "canopy.genaiops.io/experiment=tone"
    bare = tree.targets({"metadata": {"name": "tone"}, "spec": {"delivery": {"configMap": {"name": "Bad Name!"}}}})
    assert bare.configmap is None
    assert bare.deployment == "canopy-backend"


def test_an_experiment_without_status_renders() -> None:
    out = tree.render(experiment(None), Related(), "shop", NOW)
    assert field(out, "Phase") == "Pending (no status yet)"
    assert field(out, "Test") == "- (no active test)"
    assert "Conditions:  none" in out


def test_hostile_text_cannot_reach_the_terminal() -> None:
    status = status_json(realistic_status())
    status["message"] = "fine\x1b[2J\x1b]0;pwned\x07\r\nsecond line \u202eevil"
    status["conditions"][0]["message"] = "x" * 10_000
    status["evaluations"][0]["name"] = "\x1b[31mred"
    out = tree.render(experiment(status), RELATED, "shop", NOW)
    assert "\x1b" not in out
    assert "\x07" not in out
    assert "\r" not in out
    assert "\u202e" not in out
    assert field(out, "Message").startswith("fine?[2J?]0;pwned?  second line ?evil")
    assert max(len(line) for line in out.splitlines()) < 260


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=15,
)
STATUS_KEYS = st.sampled_from(
    [
        "phase",
        "message",
        "progress",
        "test",
        "votes",
        "evidence",
        "negatives",
        "delivery",
        "evaluations",
        "trajectory",
        "conditions",
        "winner",
        "suspendedAt",
    ]
)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(STATUS_KEYS, JSON, max_size=8), JSON, JSON)
def test_any_shape_renders_without_failing(status: dict[str, Any], spec: Any, jobs: Any) -> None:
    obj = {"metadata": {"name": "tone"}, "spec": spec, "status": status}
    out = tree.render(obj, Related(jobs=Lookup(obj={"items": jobs}), deployment=Lookup(obj=jobs)), "shop", NOW)
    assert out.startswith("Name:")
