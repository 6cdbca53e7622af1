"""``canopy-devkit``: one command for the simulator, the local control plane and the demo."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from canopy_devkit.demo import fresh_output, run_pexp


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


def test_demo_help_names_the_output_folder() -> None:
    result = devkit("demo", "--help")
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())  # argparse wraps to the terminal's width
    assert "--output-dir OUTPUT_DIR" in text
    assert "default: build/demo" in text


def test_fresh_output_creates_the_folder(tmp_path: Path) -> None:
    files = fresh_output(tmp_path / "a" / "b")
    assert [path.name for path in files] == ["pexp-get.txt", "pexp-plot.txt", "pexp-plot.png"]
    assert (tmp_path / "a" / "b").is_dir()


def test_fresh_output_drops_an_earlier_runs_files_only(tmp_path: Path) -> None:
    folder = tmp_path
    (folder / "pexp-plot.png").write_bytes(b"old")
    (folder / "notes.txt").write_text("mine", encoding="utf-8")
    files = fresh_output(folder)
    assert not any(path.exists() for path in files)
    assert (folder / "notes.txt").read_text(encoding="utf-8") == "mine"  # only the demo's own files go


async def test_a_failing_kubectl_pexp_is_shown_and_saved_not_raised(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    transcript = tmp_path / "pexp-get.txt"
    code = await run_pexp(["get", "tone", "-n", "shop"], tmp_path / "missing-kubeconfig", transcript)
    assert code == 1
    text = transcript.read_text(encoding="utf-8")
    assert text.startswith("$ kubectl pexp get tone -n shop\n")
    assert "kubectl pexp: cannot load the kubeconfig" in text
    assert text.rstrip("\n") in capsys.readouterr().out
