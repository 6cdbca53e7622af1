"""``canopy-devkit``: one command for the simulator, the local control plane and the demo."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def devkit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "canopy_devkit", *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_help_lists_simulate_up_and_demo() -> None:
    result = devkit("--help")
    assert result.returncode == 0, result.stderr
    assert "{simulate,up,demo}" in result.stdout


def test_simulate_exits_1_on_a_config_the_backend_would_crash_on(tmp_path: Path) -> None:
    config = tmp_path / "canopy-config.yaml"
    config.write_text("summarize:\n  enabled: true\n", encoding="utf-8")  # no LLAMA_STACK_URL
    result = devkit("simulate", "--config", str(config), "--port", "0")
    assert result.returncode == 1
    assert "backend start-up failed: KeyError: 'LLAMA_STACK_URL'" in result.stderr
