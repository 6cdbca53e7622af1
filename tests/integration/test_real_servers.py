"""The harness of the Generation 2 vote sources: real MLflow and Phoenix servers, seeded like the course.

Each server starts once per module on 127.0.0.1 (``tests.support.mlflow_server`` / ``phoenix_server``) from
the virtualenvs of ``hack/servers-assets.sh``; seeding runs in those envs; every read here is plain HTTP
with httpx, as the operator's adapters will read. Each test seeds its own experiment, prompt or project, so
the tests do not see each other's votes. Locally a server that cannot start skips these tests with the
reason; under CI=true it fails them. docs/gen2-servers.md records the request/response shapes used here.
"""

from __future__ import annotations

import re
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from tests.support.mlflow_server import MlflowServer
from tests.support.phoenix_server import PhoenixServer
from tests.support.server_process import is_loopback

# A cold build of a server env takes minutes on 2 cores (once); the suite's default 300 s is too short then.
pytestmark = pytest.mark.timeout(1500)

HTTP_TIMEOUT = 30.0
MAX_PAGES = 100
ARM_IN_RATIONALE = re.compile(r"\(mapped to (\w+)\)$")
HOUR_MS = 3_600_000


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(trust_env=False, timeout=HTTP_TIMEOUT) as client:
        yield client


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# --- MLflow: what the adapter will do over REST ------------------------------------------------------------


def search_traces(
    http: httpx.Client, url: str, experiment_id: str, filter_string: str, *, max_results: int = 500
) -> tuple[list[dict[str, Any]], int]:
    """Every trace matching ``filter_string`` (``POST /api/3.0/mlflow/traces/search``, page tokens); pages."""
    traces: list[dict[str, Any]] = []
    body: dict[str, Any] = {
        "locations": [{"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": experiment_id}}],
        "filter": filter_string,
        "max_results": max_results,
        "order_by": ["timestamp_ms ASC"],
    }
    for pages in range(1, MAX_PAGES + 1):
        response = http.post(f"{url}/api/3.0/mlflow/traces/search", json=body)
        assert response.status_code == 200, response.text
        page = response.json()
        traces.extend(page.get("traces", []))
        if not (token := page.get("next_page_token")):
            return traces, pages
        body["page_token"] = token
    raise AssertionError(f"more than {MAX_PAGES} pages for {filter_string!r}")


def human_assessments(trace: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """The valid assessments ``name`` of a trace made by a HUMAN source (judges and code do not vote)."""
    return [
        a
        for a in trace.get("assessments", [])
        if a["assessment_name"] == name and a["source"]["source_type"] == "HUMAN" and a.get("valid", True)
    ]


def ab_wins_by_arm(traces: list[dict[str, Any]]) -> Counter[str]:
    """Human ``ab_preference = true`` assessments per arm (the arm is only in the rationale)."""
    wins: Counter[str] = Counter()
    for trace in traces:
        for a in human_assessments(trace, "ab_preference"):
            if a["feedback"]["value"] is True:
                match = ARM_IN_RATIONALE.search(a["rationale"])
                wins[match.group(1) if match else "unknown"] += 1
    return wins


@pytest.mark.mlflow
def test_mlflow_server_listens_only_on_loopback(mlflow_server: MlflowServer) -> None:
    sockets = mlflow_server.listening()
    port = int(mlflow_server.url.rsplit(":", 1)[1])
    assert ("127.0.0.1", port) in sockets
    assert all(is_loopback(address) for address, _ in sockets), sockets
    assert mlflow_server.startup_seconds < mlflow_server.ready_timeout


@pytest.mark.mlflow
def test_ab_votes_counted_per_arm_in_the_test_window_and_judge_votes_ignored(
    mlflow_server: MlflowServer, http: httpx.Client
) -> None:
    experiment = unique("ab")
    champion_first = {"a": "champion", "b": "challenger"}
    challenger_first = {"a": "challenger", "b": "champion"}
    old = mlflow_server.seed(
        [{"op": "ab_vote", "preference": "a", "prompt_mapping": champion_first, "start_time_ms": now_ms() - HOUR_MS}],
        experiment=experiment,
    )
    window_start = now_ms()
    seeded = mlflow_server.seed(
        [
            {"op": "ab_vote", "preference": "a", "prompt_mapping": champion_first},  # champion wins
            {"op": "ab_vote", "preference": "b", "prompt_mapping": champion_first},  # challenger wins
            {"op": "ab_vote", "preference": "b", "prompt_mapping": challenger_first},  # champion wins (at b)
            {"op": "ab_vote", "preference": "x", "prompt_mapping": challenger_first},  # not "a": b wins, arm unknown
            # An LLM judge's verdict on the first vote's loser, with the backend's wording: not a user's vote.
            {
                "op": "assessment",
                "request": 0,
                "position": "b",
                "name": "ab_preference",
                "value": True,
                "rationale": "User preferred this response (mapped to challenger)",
                "source": {"type": "LLM_JUDGE", "id": "judge"},
            },
        ],
        experiment=experiment,
    )
    experiment_id = seeded["experiment_id"]
    votes = seeded["steps"][:4]
    assert [v["winner_arm"] for v in votes] == ["champion", "challenger", "champion", "unknown"]
    assert seeded["steps"][4]["trace_id"] == votes[0]["loser_trace_id"]

    window = f"trace.timestamp_ms >= {window_start}"
    winners, pages = search_traces(
        http, mlflow_server.url, experiment_id, f"feedback.ab_preference = 'true' AND {window}"
    )
    assert pages == 1
    # The filter matches a trace with ANY such assessment, the judge's too: the adapter must read the sources.
    assert {t["trace_id"] for t in winners} == {v["winner_trace_id"] for v in votes} | {votes[0]["loser_trace_id"]}
    assert ab_wins_by_arm(winners) == Counter({"champion": 2, "challenger": 1, "unknown": 1})
    assert {t["tags"]["mlflow.traceName"] for t in winners} == {"summarization_ab_a", "summarization_ab_b"}

    losers, _ = search_traces(http, mlflow_server.url, experiment_id, f"feedback.ab_preference = 'false' AND {window}")
    assert {t["trace_id"] for t in losers} == {v["loser_trace_id"] for v in votes}
    loser_rationales = {a["rationale"] for t in losers for a in human_assessments(t, "ab_preference")}
    assert "User preferred the alternative response (mapped to challenger)" in loser_rationales

    # Paging with page tokens returns the same traces, one per page here.
    paged, pages = search_traces(
        http, mlflow_server.url, experiment_id, f"feedback.ab_preference = 'true' AND {window}", max_results=1
    )
    assert [t["trace_id"] for t in paged] == [t["trace_id"] for t in winners]
    assert pages == len(winners) + 1  # the last page is empty: a token is returned while a full page came back

    # The vote from before the window counts only without the window.
    everything, _ = search_traces(http, mlflow_server.url, experiment_id, "feedback.ab_preference = 'true'")
    assert old["steps"][0]["winner_trace_id"] in {t["trace_id"] for t in everything}
    assert old["steps"][0]["winner_trace_id"] not in {t["trace_id"] for t in winners}


@pytest.mark.mlflow
def test_thumbs_down_found_by_user_satisfaction_false(mlflow_server: MlflowServer, http: httpx.Client) -> None:
    experiment = unique("thumbs")
    window_start = now_ms()
    seeded = mlflow_server.seed(
        [
            {"op": "summarize"},
            {"op": "thumbs", "request": 0, "rating": "thumbs_up", "comment": "clear"},
            {"op": "summarize"},
            {"op": "thumbs", "request": 2, "rating": "thumbs_down", "comment": "too long"},
            {"op": "summarize"},
            {"op": "thumbs", "request": 4, "rating": "thumbs_down"},
        ],
        experiment=experiment,
    )
    down, _ = search_traces(
        http,
        mlflow_server.url,
        seeded["experiment_id"],
        f"feedback.user_satisfaction = 'false' AND trace.timestamp_ms >= {window_start}",
    )
    assert {t["trace_id"] for t in down} == {seeded["steps"][2]["trace_id"], seeded["steps"][4]["trace_id"]}
    assert {t["tags"]["mlflow.traceName"] for t in down} == {"summarization"}
    feedback = [a for t in down for a in human_assessments(t, "user_satisfaction")]
    assert [a["feedback"]["value"] for a in feedback] == [False, False]
    assert {a["source"]["source_id"] for a in feedback} == {"canopy_user"}
    assert sorted(a.get("rationale", "") for a in feedback) == ["", "too long"]


@pytest.mark.mlflow
def test_late_vote_on_an_old_trace_is_found_only_by_recounting_the_window(
    mlflow_server: MlflowServer, http: httpx.Client
) -> None:
    experiment = unique("late")
    window_start = now_ms()
    request = mlflow_server.seed([{"op": "ab_request"}], experiment=experiment)
    experiment_id = request["experiment_id"]
    shown = request["steps"][0]
    cursor = max(shown["timestamp_ms_a"], shown["timestamp_ms_b"])  # a poller's "newest trace seen"
    later = mlflow_server.seed(
        [
            {"op": "summarize"},
            {"op": "ab_feedback", **shown, "preference": "b", "prompt_mapping": {"a": "champion", "b": "challenger"}},
        ],
        experiment=experiment,
    )
    assert later["steps"][0]["timestamp_ms"] > cursor

    since_cursor, _ = search_traces(
        http, mlflow_server.url, experiment_id, f"feedback.ab_preference = 'true' AND trace.timestamp_ms > {cursor}"
    )
    assert since_cursor == []
    recount, _ = search_traces(
        http,
        mlflow_server.url,
        experiment_id,
        f"feedback.ab_preference = 'true' AND trace.timestamp_ms >= {window_start}",
    )
    assert [t["trace_id"] for t in recount] == [shown["trace_id_b"]]
    assert ab_wins_by_arm(recount) == Counter({"challenger": 1})


@pytest.mark.mlflow
def test_prompt_alias_is_read_and_moved_over_rest_and_traces_link_the_version(
    mlflow_server: MlflowServer, http: httpx.Client
) -> None:
    prompt = unique("summarization")
    experiment = unique("prompts")
    registered = mlflow_server.seed(
        [
            {"op": "register_prompt", "name": prompt, "template": "Summarize: {{text}}", "alias": "champion"},
            {"op": "register_prompt", "name": prompt, "template": "Summarize in one line: {{text}}"},
        ],
        experiment=experiment,
    )
    assert [s["version"] for s in registered["steps"]] == [1, 2]

    def aliases() -> dict[str, str]:
        response = http.get(f"{mlflow_server.url}/api/2.0/mlflow/registered-models/get", params={"name": prompt})
        assert response.status_code == 200, response.text
        model = response.json()["registered_model"]
        assert {"key": "mlflow.prompt.is_prompt", "value": "true"} in model["tags"]
        return {a["alias"]: a["version"] for a in model.get("aliases", [])}

    assert aliases() == {"champion": "1"}
    moved = http.post(
        f"{mlflow_server.url}/api/2.0/mlflow/registered-models/alias",
        json={"name": prompt, "alias": "champion", "version": "2"},
    )
    assert moved.status_code == 200, moved.text
    assert aliases() == {"champion": "2"}
    by_alias = http.get(
        f"{mlflow_server.url}/api/2.0/mlflow/registered-models/alias", params={"name": prompt, "alias": "champion"}
    )
    version = by_alias.json()["model_version"]
    assert version["version"] == "2"
    assert {"key": "mlflow.prompt.text", "value": "Summarize in one line: {{text}}"} in version["tags"]

    # A client loading the alias now gets version 2; loaded inside the trace, the version is linked to it.
    window_start = now_ms()
    seeded = mlflow_server.seed(
        [
            {
                "op": "ab_vote",
                "preference": "a",
                "prompt_mapping": {"a": "champion", "b": "challenger"},
                "prompts": {"a": f"prompts:/{prompt}@champion", "b": f"prompts:/{prompt}/1"},
                "load_prompts_in_trace": True,
            },
            {"op": "ab_vote", "preference": "a", "prompt_mapping": {"a": "champion", "b": "challenger"}},
        ],
        experiment=experiment,
    )
    linked, _ = search_traces(
        http,
        mlflow_server.url,
        seeded["experiment_id"],
        f"prompt = '{prompt}/2' AND trace.timestamp_ms >= {window_start}",
    )
    assert [t["trace_id"] for t in linked] == [seeded["steps"][0]["trace_id_a"]]
    assert linked[0]["tags"]["mlflow.linkedPrompts"] == f'[{{"name": "{prompt}", "version": "2"}}]'
    unlinked, _ = search_traces(
        http, mlflow_server.url, seeded["experiment_id"], f"trace.timestamp_ms >= {window_start}"
    )
    assert sum("mlflow.linkedPrompts" not in t["tags"] for t in unlinked) == 2  # loaded outside: no link


@pytest.mark.mlflow
def test_course_document_filter_on_assessments_is_rejected(mlflow_server: MlflowServer, http: httpx.Client) -> None:
    experiment_id = mlflow_server.seed([], experiment=unique("filters"))["experiment_id"]
    response = http.post(
        f"{mlflow_server.url}/api/3.0/mlflow/traces/search",
        json={
            "locations": [{"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": experiment_id}}],
            "filter": "assessments.user_satisfaction.value = 'false'",
            "max_results": 500,
        },
    )
    assert response.status_code == 400
    assert response.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert "Invalid entity type 'assessments'" in response.json()["message"]


# --- Phoenix: what the adapter will do over REST -----------------------------------------------------------


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


def list_spans(
    http: httpx.Client, url: str, project: str, *, limit: int = 1000, **filters: Any
) -> tuple[list[dict[str, Any]], int]:
    """Every span matching ``filters`` (``GET /v1/projects/{project}/spans``, ``next_cursor``); pages."""
    spans: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": limit, **filters}
    for pages in range(1, MAX_PAGES + 1):
        response = http.get(f"{url}/v1/projects/{project}/spans", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        spans.extend(page["data"])
        if not (cursor := page.get("next_cursor")):
            return spans, pages
        params["cursor"] = cursor
    raise AssertionError(f"more than {MAX_PAGES} pages of spans")


def read_annotations(
    http: httpx.Client, url: str, project: str, span_ids: list[str], name: str = "user_feedback"
) -> list[dict[str, Any]]:
    """Annotations ``name`` of ``span_ids`` (``GET .../span_annotations``, 100 span ids a request, cursor)."""
    annotations: list[dict[str, Any]] = []
    for i in range(0, len(span_ids), 100):
        params: dict[str, Any] = {"span_ids": span_ids[i : i + 100], "include_annotation_names": name, "limit": 1000}
        for _ in range(MAX_PAGES):
            response = http.get(f"{url}/v1/projects/{project}/span_annotations", params=params)
            assert response.status_code == 200, response.text
            page = response.json()
            annotations.extend(page["data"])
            if not (cursor := page.get("next_cursor")):
                break
            params["cursor"] = cursor
        else:
            raise AssertionError(f"more than {MAX_PAGES} pages of annotations")
    return annotations


def votes_by_arm(annotations: list[dict[str, Any]]) -> Counter[tuple[str, str]]:
    """(arm, label) of the HUMAN annotations: LLM or CODE annotators do not vote."""
    return Counter((a["metadata"]["arm"], a["result"]["label"]) for a in annotations if a["annotator_kind"] == "HUMAN")


def up(arm: str, identifier: str, **extra: Any) -> dict[str, Any]:
    return {"op": "vote", "label": "thumbs_up", "score": 1, "metadata": {"arm": arm}, "identifier": identifier, **extra}


def down(arm: str, identifier: str, **extra: Any) -> dict[str, Any]:
    return {
        "op": "vote",
        "label": "thumbs_down",
        "score": 0,
        "metadata": {"arm": arm},
        "identifier": identifier,
        **extra,
    }


@pytest.mark.phoenix
def test_phoenix_server_and_its_grpc_receiver_listen_only_on_loopback(phoenix_server: PhoenixServer) -> None:
    sockets = phoenix_server.listening()
    ports = {port for _, port in sockets}
    http_port = int(phoenix_server.url.rsplit(":", 1)[1])
    assert {http_port, phoenix_server.grpc_port} <= ports, sockets  # gRPC is on, only not on every interface
    assert all(is_loopback(address) for address, _ in sockets), sockets
    assert phoenix_server.startup_seconds < phoenix_server.ready_timeout


@pytest.mark.phoenix
def test_llm_span_votes_in_the_window_are_counted_per_arm(phoenix_server: PhoenixServer, http: httpx.Client) -> None:
    project = unique("canopy")
    old = phoenix_server.seed([up("challenger", "old-1", start_time_ms=now_ms() - HOUR_MS)], project=project)
    window_start = now_ms()
    seeded = phoenix_server.seed(
        [
            up("champion", "v1"),
            up("champion", "v2", http_child=True),  # an HTTP client span under the LLM span: not a vote target
            down("champion", "v3"),
            up("challenger", "v4"),
            down("challenger", "v5"),
            {**down("challenger", "judge-1"), "annotator_kind": "LLM"},  # an LLM judge: not a user's vote
        ],
        project=project,
    )
    spans, pages = list_spans(
        http,
        phoenix_server.url,
        project,
        limit=2,
        span_kind="LLM",
        name="ChatCompletion",
        start_time=iso(window_start),
    )
    assert pages == 3
    assert {s["context"]["span_id"] for s in spans} == {s["llm_span_id"] for s in seeded["steps"]}
    assert all(s["span_kind"] == "LLM" and s["parent_id"] for s in spans)
    assert old["steps"][0]["llm_span_id"] not in {s["context"]["span_id"] for s in spans}

    annotations = read_annotations(http, phoenix_server.url, project, [s["context"]["span_id"] for s in spans])
    assert votes_by_arm(annotations) == Counter(
        {
            ("champion", "thumbs_up"): 2,
            ("champion", "thumbs_down"): 1,
            ("challenger", "thumbs_up"): 1,
            ("challenger", "thumbs_down"): 1,
        }
    )
    assert len(annotations) == 6


@pytest.mark.phoenix
def test_reposting_an_identifier_replaces_the_vote(phoenix_server: PhoenixServer, http: httpx.Client) -> None:
    project = unique("canopy")
    seeded = phoenix_server.seed(
        [
            up("champion", "user-1"),
            {
                "op": "annotate",
                "request": 0,
                "label": "thumbs_down",
                "score": 0,
                "metadata": {"arm": "champion"},
                "identifier": "user-1",
                "explanation": "changed my mind",
            },
            {
                "op": "annotate",
                "request": 0,
                "label": "thumbs_up",
                "score": 1,
                "metadata": {"arm": "champion"},
                "identifier": "user-2",
            },
        ],
        project=project,
    )
    span_id = seeded["steps"][0]["llm_span_id"]
    assert seeded["steps"][1]["id"] == seeded["steps"][0]["id"]  # the same row, updated
    annotations = read_annotations(http, phoenix_server.url, project, [span_id])
    by_identifier = {a["identifier"]: a for a in annotations}
    assert set(by_identifier) == {"user-1", "user-2"}
    assert by_identifier["user-1"]["result"] == {"label": "thumbs_down", "score": 0.0, "explanation": "changed my mind"}
    assert votes_by_arm(annotations) == Counter({("champion", "thumbs_down"): 1, ("champion", "thumbs_up"): 1})


@pytest.mark.phoenix
def test_votes_on_the_parent_span_are_found_only_through_the_parent_spans(
    phoenix_server: PhoenixServer, http: httpx.Client
) -> None:
    project = unique("canopy")
    window_start = now_ms()
    seeded = phoenix_server.seed(
        [up("champion", "p1", on="parent"), down("challenger", "p2", on="parent")], project=project
    )
    llm_spans, _ = list_spans(http, phoenix_server.url, project, span_kind="LLM", start_time=iso(window_start))
    assert read_annotations(http, phoenix_server.url, project, [s["context"]["span_id"] for s in llm_spans]) == []

    roots, _ = list_spans(
        http, phoenix_server.url, project, parent_id="null", name="summarize", start_time=iso(window_start)
    )
    assert {s["context"]["span_id"] for s in roots} == {s["parent_span_id"] for s in seeded["steps"]}
    assert {s["span_kind"] for s in roots} == {"CHAIN"}
    annotations = read_annotations(http, phoenix_server.url, project, [s["context"]["span_id"] for s in roots])
    assert votes_by_arm(annotations) == Counter({("champion", "thumbs_up"): 1, ("challenger", "thumbs_down"): 1})
