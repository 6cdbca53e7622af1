"""Votes and thumbs kept as Arize Phoenix span annotations, as a
:class:`~canopy_operator.sources.base.VoteSource`.

Each poll recounts the test's window: the LLM spans that started since the test began (optionally only those of
one name), then their annotations in batches. The spans whose annotations count are the LLM spans themselves,
where the course teaches to put feedback, or their parents when ``countOn: ParentSpan`` says the application
annotates the request span. A re-posted vote (same identifier) replaces the earlier one; only human annotations
count (:func:`canopy_operator.core.tallies.count_phoenix_votes`). Thumbs-down annotations become feedback
entries with the LLM span's input and output, ordered by when they were last written.
"""

from __future__ import annotations

from typing import Literal

from canopy_operator.core.collect import FeedbackEntry
from canopy_operator.core.readings import FeedbackLog, Reading, Window
from canopy_operator.core.tallies import HUMAN_SOURCE_TYPE, count_phoenix_votes, is_negative, latest_per_identifier
from canopy_operator.sources.phoenix.client import PhoenixClient, Span


class PhoenixVotes:
    """The votes of one Phoenix project."""

    def __init__(
        self,
        client: PhoenixClient,
        *,
        where: str,
        vote_name: str,
        feedback_name: str,
        span_name: str | None = None,
        count_on: Literal["LLMSpan", "ParentSpan"] = "LLMSpan",
    ) -> None:
        self.client = client
        self.where = where
        self.vote_name = vote_name
        self.feedback_name = feedback_name
        self.span_name = span_name
        self.count_on: Literal["LLMSpan", "ParentSpan"] = count_on

    async def read(self, window: Window) -> Reading:
        spans = [s async for s in self.client.llm_spans(window.started_at, self.span_name)]
        by_counted: dict[str, Span] = {}
        for span in spans:
            key = span.span_id if self.count_on == "LLMSpan" else span.parent_id
            if key:
                by_counted.setdefault(key, span)
        annotations = await self.client.annotations(sorted(by_counted), [self.vote_name, self.feedback_name])
        count = count_phoenix_votes(annotations, set(by_counted), name=self.vote_name)
        negatives = [
            a
            for a in latest_per_identifier(x for x in annotations if x.name == self.feedback_name)
            if (a.annotator_kind or "").upper() == HUMAN_SOURCE_TYPE and is_negative(a)
        ]
        negatives.sort(key=lambda a: (a.updated_at.timestamp() if a.updated_at else 0.0, a.span_id, a.identifier))
        entries = [
            FeedbackEntry(
                id=index,
                timestamp=a.updated_at.isoformat() if a.updated_at else "",
                feature=window.feature,
                rating="thumbs_down",
                input_text=by_counted[a.span_id].input_text,
                response_text=by_counted[a.span_id].output_text,
                comment=a.explanation,
            )
            for index, a in enumerate(negatives, start=1)
        ]
        return Reading(count.tally, FeedbackLog(tuple(entries), len(entries)))
