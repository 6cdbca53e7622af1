"""The spec patches of ``approve``, ``suspend``, ``resume`` and ``abort``, decided from the experiment as read.

Each function takes the experiment (a JSON object from the API server) and returns an :class:`Action`: the
merge patch of the spec (None when there is nothing to change) and the one line to print. ``approve`` refuses
(:class:`Refused`) unless the experiment awaits approval, and approves the current test only: the patch names
``status.test.id`` in ``spec.promotion.approvedTestId`` (the command sends it with the resourceVersion it read, so
a test that moved on in between makes the write fail instead of approving the wrong test).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from canopy_operator.pexp.fields import clean, dig

AWAITING_APPROVAL = "AwaitingApproval"
_TEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


class Refused(Exception):
    """The verb does not apply to the experiment as it is (exit 1, the message says why)."""


@dataclass(frozen=True)
class Action:
    """A spec merge patch (None: nothing to change) and what to tell the user."""

    patch: dict[str, Any] | None
    message: str


def ref(obj: Mapping[str, Any], namespace: str, name: str) -> str:
    """``promptexperiment <namespace>/<name>`` as the object names itself (falling back to the arguments)."""
    ns = dig(obj, "metadata", "namespace")
    own = dig(obj, "metadata", "name")
    return f"promptexperiment {clean(ns if isinstance(ns, str) else namespace, 63)}/" + clean(
        own if isinstance(own, str) else name, 253
    )


def phase_of(obj: Mapping[str, Any]) -> str:
    phase = dig(obj, "status", "phase")
    return clean(phase, 40) if isinstance(phase, str) and phase else "Pending (no status yet)"


def approve(obj: Mapping[str, Any], namespace: str, name: str) -> Action:
    """Approve the promotion the current test awaits; :class:`Refused` in any other phase."""
    who = ref(obj, namespace, name)
    phase = dig(obj, "status", "phase")
    if phase != AWAITING_APPROVAL:
        raise Refused(
            f"cannot approve {who}: its phase is {phase_of(obj)}, not {AWAITING_APPROVAL} "
            "(an approval counts only while the test awaits it); nothing was changed"
        )
    test_id = dig(obj, "status", "test", "id")
    if not isinstance(test_id, str) or not _TEST_ID.fullmatch(test_id):
        raise Refused(f"cannot approve {who}: status.test.id names no test; nothing was changed")
    patch = {"promotion": {"approved": True, "approvedTestId": test_id}}
    return Action(patch, f"{who} approved for test {test_id} (spec.promotion.approved=true, approvedTestId={test_id})")


def suspend(obj: Mapping[str, Any], namespace: str, name: str, value: bool) -> Action:
    """Set ``spec.suspend`` (suspend: true, resume: false)."""
    who = ref(obj, namespace, name)
    current = dig(obj, "spec", "suspend") is True
    word = "suspended" if value else "resumed"
    field = f"spec.suspend={'true' if value else 'false'}"
    note = ""
    if not value and dig(obj, "spec", "abort") is True:
        note = "; spec.abort is still true, so no test runs until it is false"
    if current == value:
        state = "already suspended" if value else "not suspended"
        return Action(None, f"{who} is {state} ({field}); nothing changed{note}")
    return Action({"suspend": value}, f"{who} {word} ({field}){note}")


def abort(obj: Mapping[str, Any], namespace: str, name: str) -> Action:
    """Set ``spec.abort=true``: the active test ends and the champion stays."""
    who = ref(obj, namespace, name)
    if dig(obj, "spec", "abort") is True:
        return Action(None, f"{who} is already aborted (spec.abort=true); nothing changed")
    return Action(
        {"abort": True}, f"{who} aborted (spec.abort=true): the active test ends and the champion prompt stays"
    )
