"""The failpoint facility: silent unless named, dies on exactly the named hit, pauses on request."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from canopy_operator import failpoints
from canopy_operator.failpoints import KNOWN, Failpoints, Trigger, parse

PACKAGE = Path(failpoints.__file__).parent
SCRIPT = """\
from canopy_operator.service.settings import Settings
failpoint = Settings.from_env().make_failpoints()
for i in range(5):
    print(i, flush=True)
    failpoint("p")
"""


def run_script(env_value: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != failpoints.ENV}
    if env_value is not None:
        env[failpoints.ENV] = env_value
    return subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_parse_reads_points_hits_and_actions() -> None:
    assert parse(" a:2, b-c:1=pause ,") == {"a": (Trigger(2, "exit"),), "b-c": (Trigger(1, "pause"),)}


def test_a_point_may_act_at_several_hits_but_never_twice_at_one() -> None:
    assert parse("a:1=pause,b:1,a:3") == {"a": (Trigger(1, "pause"), Trigger(3, "exit")), "b": (Trigger(1, "exit"),)}
    with pytest.raises(ValueError, match="named twice"):
        parse("a:2,a:2=pause")


def test_the_hits_of_one_point_are_counted_once_for_all_its_triggers() -> None:
    points = Failpoints({"p": (Trigger(2, "pause"), Trigger(4, "pause"))})
    paused: list[int] = []
    points._pause = lambda name, hit: paused.append(hit)  # type: ignore[method-assign]
    for _ in range(5):
        points("p")
    assert paused == [2, 4]


@pytest.mark.parametrize("bad", ["a", "a:", "a:0", "a:x", ":1", "a:1=explode"])
def test_parse_rejects_malformed_items(bad: str) -> None:
    with pytest.raises(ValueError, match="name:hit"):
        parse(bad)


def test_failpoint_does_nothing_when_unset() -> None:
    result = run_script(None)
    assert result.returncode == 0
    assert result.stdout.split() == ["0", "1", "2", "3", "4"]


def test_failpoint_kills_the_process_on_the_named_hit() -> None:
    result = run_script("p:3,other:1")
    assert result.returncode == failpoints.EXIT_CODE
    assert result.stdout.split() == ["0", "1", "2"]
    assert "failpoint p:3 reached" in result.stderr


def test_failpoint_pauses_until_the_marker_is_removed(tmp_path: Path) -> None:
    failpoint = Failpoints.from_text("p:2=pause", str(tmp_path))
    failpoint("p")  # hit 1: passes
    marker = tmp_path / "p.2"
    done = threading.Event()

    def second_hit() -> None:
        failpoint("p")
        done.set()

    thread = threading.Thread(target=second_hit)
    thread.start()
    deadline = time.monotonic() + 10
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert marker.exists()
    assert not done.wait(0.3), "the failpoint returned while its marker still existed"
    marker.unlink()
    assert done.wait(10)
    thread.join()


def test_every_failpoint_in_the_operator_is_known() -> None:
    used: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        used |= set(re.findall(r'\bfailpoint\("([a-z-]+)"\)', path.read_text(encoding="utf-8")))
    assert used == set(KNOWN)
