"""Failpoints: named places where a test can make the operator die (or stop) on purpose.

``failpoints("after-config-write")`` does nothing unless the environment variable ``CANOPY_FAILPOINTS``
names that point. The service settings read the variable once, at start-up, into a :class:`Failpoints`
that the pass and the adapters are given; unset or empty, a failpoint costs one lookup on an empty dict.
The variable is a comma-separated list of ``name:hit[=action]``:

- ``after-config-write:2`` kills the process with ``os._exit(137)`` (as SIGKILL would: no cleanup, no
  finalizers, no flushing) the 2nd time the point is reached;
- ``before-status-write:3=pause`` stops the whole process at the 3rd hit until the file
  ``$CANOPY_FAILPOINT_DIR/before-status-write.3`` (created at the hit) is deleted, for at most
  ``PAUSE_LIMIT`` seconds, so a test can change the world at exactly that moment (e.g. write a
  conflicting object) and then let the operator go on.

A point may be named at several hits (``before-status-write:1=pause,before-status-write:2=pause``). Hits are
counted per process from 1. A restarted process without the variable runs normally. Points are
named ``before-``/``after-`` the step they guard; :data:`KNOWN` lists every point the operator has.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ENV = "CANOPY_FAILPOINTS"
DIR_ENV = "CANOPY_FAILPOINT_DIR"
EXIT_CODE = 137
PAUSE_LIMIT = 120.0

KNOWN = (
    "reconcile-start",
    "after-source-read",
    "before-status-write",
    "after-status-write",
    "before-config-write",
    "before-configmap-write",
    "after-configmap-write",
    "before-roll",
    "after-roll",
    "after-config-write",
    "after-verify",
    "after-poll",
    "after-decision",
    "after-store-promote",
    "after-conclude",
)
"""Every failpoint placed in the operator (the unit tests check the code names no other)."""


@dataclass(frozen=True)
class Trigger:
    """What to do at one hit of one point."""

    hit: int
    action: str  # "exit" or "pause"


def parse(text: str) -> dict[str, tuple[Trigger, ...]]:
    """``"a:2,b:1=pause,b:3=pause"`` -> ``{"a": (Trigger(2, "exit"),), "b": (Trigger(1, "pause"), Trigger(3,
    "pause"))}``: a point may act at several hits; ValueError if malformed or a hit is named twice."""
    triggers: dict[str, tuple[Trigger, ...]] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        spec, _, action = item.partition("=")
        name, sep, hit = spec.partition(":")
        action = action or "exit"
        if not name or not sep or not hit.isdigit() or int(hit) < 1 or action not in ("exit", "pause"):
            raise ValueError(f"{ENV}: {item!r} is not name:hit[=exit|pause] with hit >= 1")
        if any(t.hit == int(hit) for t in triggers.get(name, ())):
            raise ValueError(f"{ENV}: {name}:{hit} is named twice")
        triggers[name] = (*triggers.get(name, ()), Trigger(int(hit), action))
    return triggers


class Failpoints:
    """The failpoints of one operator process: triggers parsed from ``CANOPY_FAILPOINTS`` at start-up."""

    def __init__(self, triggers: dict[str, tuple[Trigger, ...]] | None = None, pause_dir: Path | None = None) -> None:
        self.triggers = dict(triggers or {})
        self.pause_dir = pause_dir or Path()
        self.hits: dict[str, int] = {}

    @classmethod
    def from_text(cls, text: str, pause_dir: str | None = None) -> Failpoints:
        """From the variable's text (``""``: none); ValueError when malformed."""
        return cls(parse(text), Path(pause_dir) if pause_dir else None)

    def __call__(self, name: str) -> None:
        """Die or pause here if the triggers ask for this hit of ``name``; otherwise nothing."""
        triggers = self.triggers.get(name)
        if triggers is None:
            return
        hits = self.hits.get(name, 0) + 1
        self.hits[name] = hits
        trigger = next((t for t in triggers if t.hit == hits), None)
        if trigger is None:
            return
        if trigger.action == "pause":
            self._pause(name, hits)
            return
        print(f"failpoint {name}:{hits} reached: exiting {EXIT_CODE}", file=sys.stderr, flush=True)
        os._exit(EXIT_CODE)

    def _pause(self, name: str, hit: int) -> None:
        """Block the process (deliberately, event loop included) until the marker file is removed."""
        marker = self.pause_dir / f"{name}.{hit}"
        marker.write_text(str(os.getpid()), encoding="utf-8")
        deadline = time.monotonic() + PAUSE_LIMIT
        while marker.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
