"""After the real node stops, the machine is as the node found it (runs last: it stops the session's node)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from canopy_devkit.node import host
from tests.support.node_e2e import Cluster


def _processes_mentioning(text: str) -> list[str]:
    found: list[str] = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmdline:
                found.append(f"{entry.name}: {cmdline[:200]}")
    return found


def test_machine_left_as_found_after_the_node_stops(cluster: Cluster) -> None:
    if cluster.node is None:
        pytest.skip(f"the tier runs on an existing {cluster.kind} cluster: no node of ours to stop")
    node = cluster.node
    before = node.before
    directory = str(node.dir)
    assert before is not None
    node.stop()

    assert node.stop_problems == []
    assert host.differences(before, host.capture()) == []
    assert _processes_mentioning(directory) == []
    assert not Path(directory).exists()
