"""The operator's wheel ships the operator only; the dev kit is its own wheel; neither build warns.

Each wheel is built from a copy of exactly what its image build sees (``.dockerignore``), with the installed
setuptools and no build isolation, so the test runs offline in about a second.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from email.message import Message
from email.parser import Parser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_BUILD = "import sys; from setuptools import build_meta; print(build_meta.build_wheel(sys.argv[1]))"
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "dist")


@dataclass(frozen=True)
class Built:
    names: list[str]
    metadata: Message
    entry_points: str
    output: str  # the build's stdout and stderr, where setuptools prints its warnings


def build_wheel(src: Path, out: Path) -> Built:
    result = subprocess.run(
        [sys.executable, "-W", "default", "-c", _BUILD, str(out)],
        cwd=src,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"the wheel did not build (setuptools >= 77 is needed):\n{output}"
    wheel = out / result.stdout.strip().splitlines()[-1]
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        dist_info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        metadata = Parser().parsestr(archive.read(f"{dist_info}/METADATA").decode("utf-8"))
        entry_points = archive.read(f"{dist_info}/entry_points.txt").decode("utf-8")
    return Built(names, metadata, entry_points, output)


@pytest.fixture(scope="module")
def operator_wheel(tmp_path_factory: pytest.TempPathFactory) -> Built:
    src = tmp_path_factory.mktemp("operator-src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "operator", src / "operator", ignore=_IGNORE)
    return build_wheel(src, tmp_path_factory.mktemp("operator-dist"))


@pytest.fixture(scope="module")
def devkit_wheel(tmp_path_factory: pytest.TempPathFactory) -> Built:
    src = tmp_path_factory.mktemp("devkit-src") / "devkit"
    shutil.copytree(ROOT / "devkit", src, ignore=_IGNORE)
    return build_wheel(src, tmp_path_factory.mktemp("devkit-dist"))


def _modules(built: Built) -> list[str]:
    return [n for n in built.names if ".dist-info/" not in n]


def test_operator_wheel_contains_only_the_operator_package(operator_wheel: Built) -> None:
    modules = _modules(operator_wheel)
    assert {"canopy_operator/__init__.py", "canopy_operator/cli.py", "canopy_operator/py.typed"} <= set(modules)
    assert {n.split("/")[0] for n in modules} == {"canopy_operator"}


def test_operator_wheel_ships_no_test_kit(operator_wheel: Built) -> None:
    kit = ("canopy_devkit", "devenv", "sim_app", "sim_config", "sim_http", "simulator", "kubelet", "controlplane")
    assert [n for n in operator_wheel.names if any(word in n for word in kit)] == []


def test_operator_wheel_does_not_require_cryptography(operator_wheel: Built) -> None:
    requires = operator_wheel.metadata.get_all("Requires-Dist") or []
    runtime = [r for r in requires if "extra ==" not in r]
    assert "kopf==1.45.2" in runtime
    assert [r for r in requires if r.lower().startswith("cryptography")] == []


def test_operator_wheel_requires_sniffio_so_httpcore_does_not_retry_its_import(operator_wheel: Built) -> None:
    """Without sniffio httpcore repeats a failed ``import sniffio`` on every lock set-up (8 % of idle CPU).

    The image installs exactly the wheel's requirements (Dockerfile: ``pip wheel .``), so the pin here is the pin
    in the image."""
    requires = operator_wheel.metadata.get_all("Requires-Dist") or []
    assert "sniffio==1.3.1" in [r for r in requires if "extra ==" not in r]


def test_operator_wheel_declares_its_license_as_an_spdx_expression(operator_wheel: Built) -> None:
    assert operator_wheel.metadata["License-Expression"] == "Apache-2.0"
    assert operator_wheel.metadata["License"] is None  # the deprecated table form would write this


def test_operator_wheel_builds_without_a_deprecation_warning(operator_wheel: Built) -> None:
    assert "SetuptoolsDeprecationWarning" not in operator_wheel.output
    assert "project.license" not in operator_wheel.output


def test_devkit_wheel_is_the_kit_with_its_command_and_dependencies(devkit_wheel: Built) -> None:
    modules = _modules(devkit_wheel)
    assert {"canopy_devkit/py.typed", "canopy_devkit/cli.py", "canopy_devkit/simulator/runner.py"} <= set(modules)
    assert {n.split("/")[0] for n in modules} == {"canopy_devkit"}
    assert "canopy-devkit = canopy_devkit.cli:main" in devkit_wheel.entry_points
    requires = devkit_wheel.metadata.get_all("Requires-Dist") or []
    assert {"canopy-operator", "cryptography==50.0.2"} <= set(requires)
    assert devkit_wheel.metadata["License-Expression"] == "Apache-2.0"
    assert "SetuptoolsDeprecationWarning" not in devkit_wheel.output
