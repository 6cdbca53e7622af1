"""Simulated users of the Canopy UI: they compare two answers and vote through the backend's HTTP API.

Like the course's UI, each comparison first asks ``/summarize/ab`` for both answers (the backend
shuffles which prompt is shown left and right and says so in its ``ab_config`` event), then posts the
user's pick to ``/feedback/ab`` with that mapping. The user's taste is a real preference: with
probability ``p_challenger`` they prefer the challenger's answer, whichever side it is shown on.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from canopy_devkit.gen2.client import Gen2Client
from canopy_operator.sources.canopy.client import CanopyClient

Pick = Literal["challenger", "champion", "tie"]
CHALLENGER_KEY = "prompt_b"
CHAMPION_KEY = "prompt"


@dataclass(frozen=True)
class Tally:
    """What the simulated users posted."""

    challenger: int = 0
    champion: int = 0
    ties: int = 0

    def add(self, pick: Pick) -> Tally:
        return Tally(
            self.challenger + (pick == "challenger"), self.champion + (pick == "champion"), self.ties + (pick == "tie")
        )


def preference_for(pick: Pick, mapping: Mapping[str, str]) -> str:
    """The ``preference`` a user who picked ``pick`` posts, given which key was shown as ``a``/``b``."""
    if pick == "tie":
        return "tie"
    key = CHALLENGER_KEY if pick == "challenger" else CHAMPION_KEY
    return "a" if mapping["a"] == key else "b"


def fixed_picks(challenger: int, champion: int, ties: int) -> list[Pick]:
    """Exactly these many picks of each kind, in that order."""
    picks: list[Pick] = ["challenger"] * challenger
    picks += ["champion"] * champion
    picks += ["tie"] * ties
    return picks


def draw_picks(count: int, p_challenger: float, rng: random.Random, tie_rate: float = 0.0) -> list[Pick]:
    """``count`` users' picks: a tie with ``tie_rate``, else the challenger with ``p_challenger``."""
    picks: list[Pick] = []
    for _ in range(count):
        if rng.random() < tie_rate:
            picks.append("tie")
        else:
            picks.append("challenger" if rng.random() < p_challenger else "champion")
    return picks


async def post_votes(url: str, picks: Sequence[Pick], *, seed: int = 1, ask_answers: bool = False) -> Tally:
    """Post one A/B vote per pick. With ``ask_answers`` each vote first streams ``/summarize/ab`` like the UI.

    Without it the side shown left is shuffled here (as the backend would), which is much cheaper.
    """
    rng = random.Random(seed)  # noqa: S311 - simulated users, not cryptography
    tally = Tally()
    async with CanopyClient(url, timeout=10) as http:
        for i, pick in enumerate(picks):
            article = f"article {seed}-{i}"
            if ask_answers:
                answers = await http.summarize_ab(article)
                mapping: dict[str, str] = dict(answers.mapping)
                response_a, response_b = answers.response_a, answers.response_b
            else:
                swap = rng.random() < 0.5
                mapping = {"a": CHALLENGER_KEY, "b": CHAMPION_KEY} if swap else {"a": CHAMPION_KEY, "b": CHALLENGER_KEY}
                response_a, response_b = f"answer a {i}", f"answer b {i}"
            await http.post_ab_feedback(article, response_a, response_b, preference_for(pick, mapping), mapping)
            tally = tally.add(pick)
    return tally


async def post_gen2_votes(url: str, picks: Sequence[Pick], *, seed: int = 1) -> Tally:
    """Post one A/B vote per pick to a Generation 2 backend, as its UI does: ``/summarize/ab`` for both answers
    and their traces, then ``/feedback/ab`` with the pick and ``prompt_mapping`` in ``champion``/``challenger``
    words. The Generation 2 UI has no tie button: a ``tie`` pick is posted as ``tie``, which the backend counts
    as a ``b`` win its rationale maps to ``unknown``."""
    tally = Tally()
    async with Gen2Client(url, timeout=10) as http:
        for i, pick in enumerate(picks):
            answers = await http.summarize_ab(f"article {seed}-{i}")
            await http.feedback_ab(answers, preference_for(pick, answers.mapping))
            tally = tally.add(pick)
    return tally
