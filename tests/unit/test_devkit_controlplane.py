"""Start-up failures of the control plane: clear errors with log tails, retries on port races, no leftovers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from canopy_devkit.controlplane import AssetPaths, ControlPlane, ControlPlaneError
from canopy_devkit.controlplane.lifecycle import OWNER_FILE, sweep_stale_dirs


def _script(path: Path, body: str) -> Path:
    path.write_text(f"#!/bin/sh\n{body}\n", encoding="ascii")
    path.chmod(0o755)
    return path


def test_start_failure_reports_the_log_tail_and_cleans_up(tmp_path: Path) -> None:
    etcd = _script(tmp_path / "etcd", 'echo "etcd: fatal: data dir is broken"; exit 3')
    apiserver = _script(tmp_path / "kube-apiserver", "exit 1")
    runs = tmp_path / "runs"
    runs.mkdir()
    plane = ControlPlane(crd_paths=[], assets=AssetPaths(apiserver, etcd), tmp_root=runs)
    with pytest.raises(ControlPlaneError, match="data dir is broken") as caught:
        plane.start()
    assert "exited with code 3" in str(caught.value)
    assert list(runs.iterdir()) == []


def test_start_retries_the_whole_start_on_a_port_race(tmp_path: Path) -> None:
    attempts = tmp_path / "attempts"
    etcd = _script(
        tmp_path / "etcd",
        f'[ "$1" = "--help" ] && exit 0; echo x >> {attempts}; echo "listen tcp: bind: address already in use"; exit 1',
    )
    apiserver = _script(tmp_path / "kube-apiserver", "exit 1")
    runs = tmp_path / "runs"
    runs.mkdir()
    plane = ControlPlane(crd_paths=[], assets=AssetPaths(apiserver, etcd), start_attempts=3, tmp_root=runs)
    with pytest.raises(ControlPlaneError, match="attempt 3"):
        plane.start()
    assert attempts.read_text().count("x") == 3
    assert list(runs.iterdir()) == []


def test_sweep_removes_dirs_of_dead_owners_only(tmp_path: Path) -> None:
    dead = tmp_path / "canopy-envtest-1-dead"
    mine = tmp_path / "canopy-envtest-2-mine"
    for path, pid in ((dead, 2**22 + 1), (mine, os.getpid())):
        path.mkdir()
        (path / OWNER_FILE).write_text(str(pid), encoding="ascii")
    assert sweep_stale_dirs(tmp_path) == [dead]
    assert mine.exists()
