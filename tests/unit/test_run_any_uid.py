"""The operator starts as a UID the image's /etc/passwd does not know (OpenShift's restricted-v2 assigns one).

Kopf names itself after the login user unless given an identity, and ``getpass.getuser()`` raises ``KeyError``
for such a UID: the pod crashed at start-up on the real node's restricted-v2 emulation. ``run`` gives Kopf an
identity of its own, so no lookup of the user happens.
"""

from __future__ import annotations

import getpass
from types import SimpleNamespace
from typing import Any

import kopf
import pytest

from canopy_operator.handlers import main
from canopy_operator.service.settings import Settings


def test_run_gives_kopf_an_identity_so_no_passwd_entry_is_needed(monkeypatch: pytest.MonkeyPatch) -> None:
    def unknown_uid() -> str:
        raise KeyError("getpwuid(): uid not found: 1000680000")

    seen: dict[str, Any] = {}

    def fake_run(**kwargs: Any) -> None:
        seen.update(kwargs)
        # What kopf.run does with identity=None (kopf._core.engines.peering.detect_own_id).
        if kwargs.get("identity") is None:
            getpass.getuser()

    monkeypatch.setattr(main, "configure_logging", lambda *a, **k: SimpleNamespace(redactor=None))
    monkeypatch.setattr(getpass, "getuser", unknown_uid)
    monkeypatch.setattr(kopf, "run", fake_run)
    main.run(Settings.from_env({}), [])
    assert seen["identity"].startswith("canopy-operator@")
    assert seen["standalone"] is True
