"""Layering is a test: the deciding code imports no Kubernetes, Kopf, HTTP or metrics libraries."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "operator" / "canopy_operator"
PURE = [PKG / "api", PKG / "core", PKG / "yamlsplice", PKG / "gen" / "crds.py"]
FORBIDDEN = {"kopf", "kubernetes", "kubernetes_asyncio", "prometheus_client", "httpx", "aiohttp"}
FORBIDDEN_LOCAL = {
    "canopy_operator.handlers",
    "canopy_operator.k8s",
    "canopy_operator.metrics",
    "canopy_operator.gitops",
}


def _modules(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for p in paths:
        files.extend(sorted(p.rglob("*.py")) if p.is_dir() else [p])
    return files


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_pure_packages_import_no_io_libraries() -> None:
    offenders = []
    for path in _modules(PURE):
        for name in _imports(path):
            top = name.split(".")[0]
            if top in FORBIDDEN or any(name.startswith(f) for f in FORBIDDEN_LOCAL):
                offenders.append(f"{path.relative_to(PKG)} imports {name}")
    assert offenders == []


def test_layering_check_sees_the_pure_modules() -> None:
    files = {p.name for p in _modules(PURE)}
    assert {"spec.py", "status.py", "crds.py", "pos.py"} <= files
