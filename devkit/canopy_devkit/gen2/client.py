"""What the course's UI does with a Generation 2 backend: ask for two answers, then post the user's pick.

The UI reads which prompt is shown on which side from the ``ab_config`` event (``prompt`` / ``prompt_b``) and
posts ``prompt_mapping`` in the Generation 2 backend's words, ``champion`` / ``challenger``, with the two trace
ids the answers were recorded under (the stand-in's ``trace_ids`` key of the same event).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import httpx

ARM_OF_KEY = {"prompt": "champion", "prompt_b": "challenger"}
"""The ``ab_config`` key name of each prompt and the arm the Generation 2 backend's ``prompt_mapping`` calls it."""
MAX_STREAM_BYTES = 1024 * 1024


class Gen2Error(Exception):
    """The backend answered with an error status (``detail`` is FastAPI's, when it gave one)."""

    def __init__(self, endpoint: str, status: int, detail: str) -> None:
        super().__init__(f"{endpoint}: {status} {detail}")
        self.status = status
        self.detail = detail


@dataclass(frozen=True)
class AbAnswers:
    """Both answers of one ``/summarize/ab`` request, as the UI shows them."""

    mapping: dict[str, str]
    """Side (``a``/``b``) -> ``prompt`` (the champion) or ``prompt_b`` (the challenger)."""
    trace_ids: dict[str, str]
    """Side -> the MLflow trace of that answer."""
    response_a: str
    response_b: str

    def side_of(self, key: str) -> str:
        """The side the prompt ``key`` (``prompt``/``prompt_b``) is shown on."""
        return "a" if self.mapping["a"] == key else "b"

    @property
    def prompt_mapping(self) -> dict[str, str]:
        """What the UI posts with the vote: side -> ``champion``/``challenger``."""
        return {side: ARM_OF_KEY.get(key, key) for side, key in self.mapping.items()}


def _events(text: str) -> list[dict[str, Any] | str]:
    events: list[dict[str, Any] | str] = []
    for block in text.split("\n\n"):
        if not block.startswith("data: "):
            continue
        payload = block.removeprefix("data: ")
        events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


class Gen2Client:
    """The UI's calls to one Generation 2 backend at ``url``."""

    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        self._http = httpx.AsyncClient(base_url=url.rstrip("/"), timeout=timeout, trust_env=False)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        response = await self._http.post(path, json=body)
        if response.status_code != 200:
            try:
                detail = str(response.json().get("detail", ""))
            except ValueError:
                detail = response.reason_phrase
            raise Gen2Error(f"POST {path}", response.status_code, detail)
        if len(response.content) > MAX_STREAM_BYTES:
            raise Gen2Error(f"POST {path}", 200, "answer too big")
        return response

    async def flags(self) -> dict[str, bool]:
        response = await self._http.get("/feature-flags")
        response.raise_for_status()
        flags: dict[str, bool] = response.json()
        return flags

    async def summarize(self, text: str) -> tuple[str, str]:
        """The answer of ``/summarize`` and the trace it was recorded under."""
        response = await self._post("/summarize", {"prompt": text})
        deltas = [e["delta"] for e in _events(response.text) if isinstance(e, dict)]
        return "".join(deltas), response.headers.get("X-Trace-Id", "")

    async def summarize_ab(self, text: str) -> AbAnswers:
        """Both answers of ``/summarize/ab``, their sides and their traces."""
        response = await self._post("/summarize/ab", {"prompt": text})
        events = _events(response.text)
        config = events[0] if events else None
        if not isinstance(config, dict) or config.get("type") != "ab_config" or events[-1] != "[DONE]":
            raise Gen2Error("POST /summarize/ab", 200, f"not an A/B stream: {response.text[:120]!r}")
        parts: dict[str, list[str]] = {"a": [], "b": []}
        for event in events[1:-1]:
            if isinstance(event, dict):
                parts[str(event["variant"])].append(str(event["delta"]))
        return AbAnswers(
            mapping=dict(config["mapping"]),
            trace_ids=dict(config.get("trace_ids") or {}),
            response_a="".join(parts["a"]),
            response_b="".join(parts["b"]),
        )

    async def feedback_ab(self, answers: AbAnswers, preference: str, *, feature: str = "summarization") -> None:
        """The user's pick (``a``/``b`` as shown) for these answers."""
        body = {
            "trace_id_a": answers.trace_ids.get("a", ""),
            "trace_id_b": answers.trace_ids.get("b", ""),
            "preference": preference,
            "prompt_mapping": answers.prompt_mapping,
            "feature": feature,
        }
        await self._post("/feedback/ab", body)

    async def feedback(
        self, trace_id: str, rating: str, *, comment: str | None = None, feature: str = "summarization"
    ) -> None:
        """A thumbs-up or thumbs-down on one answer."""
        await self._post("/feedback", {"trace_id": trace_id, "rating": rating, "feature": feature, "comment": comment})
