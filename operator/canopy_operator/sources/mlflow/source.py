"""Votes kept as MLflow assessments (the course's Generation 2 backend) as a
:class:`~canopy_operator.sources.base.VoteSource`.

Each poll recounts the test's window (``trace.timestamp_ms >= test start``): MLflow keeps the votes, so no read
position is needed, a late vote on an old trace is counted, and a trace exported late (asynchronous export makes
one visible a few seconds after it ends) is counted on the next poll. The search filter only narrows what is
read (``feedback.ab_preference = 'true'`` matches a trace where *any* source said true); what counts is decided
by :func:`canopy_operator.core.tallies.count_mlflow_votes` from the assessments themselves. Thumbs-down traces
(``user_satisfaction`` false, from a human) become feedback entries ordered by when the vote was made, so a late
thumbs-down on an old trace is new to the ledger, not a reshuffle.
"""

from __future__ import annotations

from typing import Literal

from canopy_operator.core.collect import FeedbackEntry
from canopy_operator.core.readings import FeedbackLog, Reading, VoteTally, Window
from canopy_operator.core.tallies import (
    AB_PREFERENCE,
    USER_SATISFACTION,
    Arm,
    MlflowTrace,
    SourceCount,
    count_mlflow_votes,
    thumbs_down,
)
from canopy_operator.sources.mlflow.client import PAGE_SIZE, MlflowClient, preview_text


def window_filter(name: str, value: str, window: Window) -> str:
    start_ms = int(window.started_at.timestamp() * 1000)
    return f"feedback.{name} = '{value}' AND trace.timestamp_ms >= {start_ms}"


class MlflowVotes:
    """The A/B votes and thumbs of one MLflow experiment."""

    def __init__(
        self,
        client: MlflowClient,
        experiment_id: str,
        *,
        where: str,
        arm_from: Literal["Rationale", "Tag", "Prompt"] = "Rationale",
        arm_tag: str | None = None,
        prompt: str | None = None,
    ) -> None:
        self.client = client
        self.experiment_id = experiment_id
        self.where = where
        self.arm_from: Literal["Rationale", "Tag", "Prompt"] = arm_from
        self.arm_tag = arm_tag
        self.prompt = prompt
        self.last_unmapped = 0
        """Preferred answers of the last poll whose arm could not be told (for messages)."""

    async def read(self, window: Window) -> Reading:
        versions: dict[str, Arm] = {}
        if window.champion_version is not None:
            versions[window.champion_version] = "champion"
        if window.challenger_version is not None:
            versions[window.challenger_version] = "challenger"
        # Counted a page at a time: memory is one page plus the ids seen, whatever the window holds.
        challenger = champion = unmapped = 0
        page: list[MlflowTrace] = []
        async for trace in self.client.search(self.experiment_id, window_filter(AB_PREFERENCE, "true", window)):
            page.append(trace)
            if len(page) >= PAGE_SIZE:
                counted = self._count(page, versions)
                challenger, champion = (
                    challenger + counted.tally.challenger_wins,
                    champion + counted.tally.champion_wins,
                )
                unmapped += counted.unmapped
                page.clear()
        counted = self._count(page, versions)
        tally = VoteTally(
            challenger_wins=challenger + counted.tally.challenger_wins,
            champion_wins=champion + counted.tally.champion_wins,
        )
        self.last_unmapped = unmapped + counted.unmapped
        negatives = []
        async for trace in self.client.search(self.experiment_id, window_filter(USER_SATISFACTION, "false", window)):
            vote = thumbs_down(trace)
            if vote is not None:
                negatives.append((vote.created_at, trace, vote.rationale))
        negatives.sort(key=lambda item: (item[0].timestamp() if item[0] else 0.0, item[1].trace_id))
        entries = [
            FeedbackEntry(
                id=index,
                timestamp=(created.isoformat() if created else str(trace.timestamp_ms)),
                feature=window.feature,
                rating="thumbs_down",
                input_text=preview_text(trace.request, "text"),
                response_text=preview_text(trace.response, "summary"),
                comment=comment,
            )
            for index, (created, trace, comment) in enumerate(negatives, start=1)
        ]
        return Reading(tally, FeedbackLog(tuple(entries), len(entries)))

    def _count(self, traces: list[MlflowTrace], versions: dict[str, Arm]) -> SourceCount:
        return count_mlflow_votes(
            traces, arm_from=self.arm_from, arm_tag=self.arm_tag, prompt=self.prompt, versions=versions
        )
