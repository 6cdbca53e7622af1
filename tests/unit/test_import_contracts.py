"""The import contracts (``.importlinter``) hold for the product, and they do fail on a violation."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / ".importlinter"
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(package_parent: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(package_parent)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(CONFIG), "--no-cache"],
        cwd=package_parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def broken(output: str) -> set[str]:
    return {line.removesuffix(" BROKEN").strip() for line in output.splitlines() if line.endswith(" BROKEN")}


def test_the_product_keeps_every_import_contract() -> None:
    result = lint_imports(ROOT / "operator")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 7 kept, 0 broken." in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("core/stats.py", "import kopf", "Kopf only in handlers"),
        ("core/values.py", "import os", "event loop)"),
        ("gitops/forge.py", "from canopy_operator.k8s import errors", "yamlsplice"),
        ("delivery/git.py", "import kubernetes_asyncio", "The Kubernetes client only in k8s"),
        ("service/wiring.py", "import httpx", "runner; aiohttp errors in k8s)"),
        ("core/plan.py", "from canopy_operator.service import settings", "yamlsplice"),
        ("handlers/main.py", "import canopy_devkit", "Nothing in the product imports the dev kit"),
    ],
)
def test_a_forbidden_import_breaks_its_contract(tmp_path: Path, module: str, line: str, contract: str) -> None:
    shutil.copytree(ROOT / "operator" / "canopy_operator", tmp_path / "canopy_operator")
    target = tmp_path / "canopy_operator" / module
    target.write_text(target.read_text(encoding="utf-8") + f"\n{line}  # the violation\n", encoding="utf-8")
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    assert contract in broken(result.stdout), result.stdout
