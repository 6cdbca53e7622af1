"""Where the control plane's binaries are looked up (envtest conventions, then our cache)."""

from __future__ import annotations

from pathlib import Path

import pytest

from canopy_devkit.controlplane import AssetsMissing, cache_dir, find_assets


def _binaries(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("kube-apiserver", "etcd"):
        path = folder / name
        path.write_text("#!/bin/sh\n", encoding="ascii")
        path.chmod(0o755)
    return folder


def test_find_assets_prefers_test_asset_variables(tmp_path: Path) -> None:
    explicit = _binaries(tmp_path / "explicit")
    env = {
        "HOME": str(tmp_path / "home"),
        "TEST_ASSET_KUBE_APISERVER": str(explicit / "kube-apiserver"),
        "TEST_ASSET_ETCD": str(explicit / "etcd"),
        "KUBEBUILDER_ASSETS": str(_binaries(tmp_path / "kb")),
    }
    assets = find_assets(env)
    assert assets.kube_apiserver == explicit / "kube-apiserver"
    assert assets.etcd == explicit / "etcd"


def test_find_assets_uses_kubebuilder_assets_before_the_cache(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path / "home"), "KUBEBUILDER_ASSETS": str(_binaries(tmp_path / "kb"))}
    _binaries(cache_dir(env))
    assert find_assets(env).etcd == tmp_path / "kb" / "etcd"


def test_find_assets_falls_back_to_the_build_cache(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path / "home"), "CANOPY_ENVTEST_CACHE": str(tmp_path / "cache")}
    folder = _binaries(tmp_path / "cache" / "k8s-1.34.4-etcd-3.6.4")
    assert find_assets(env).kube_apiserver == folder / "kube-apiserver"


def test_cache_dir_matches_the_build_script_defaults(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert cache_dir({"HOME": str(home)}) == home / ".cache/canopy-operator/envtest/k8s-1.34.4-etcd-3.6.4"
    xdg = {"HOME": str(home), "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    assert cache_dir(xdg) == tmp_path / "xdg/canopy-operator/envtest/k8s-1.34.4-etcd-3.6.4"


def test_find_assets_missing_says_how_to_get_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("canopy_devkit.controlplane.assets.KUBEBUILDER_DEFAULT_DIR", tmp_path / "none")
    with pytest.raises(AssetsMissing, match="make envtest-assets"):
        find_assets({"HOME": str(tmp_path / "home")})


def test_find_assets_rejects_a_test_asset_that_is_not_executable(tmp_path: Path) -> None:
    env = {
        "HOME": str(tmp_path),
        "TEST_ASSET_ETCD": str(tmp_path / "nope"),
        "KUBEBUILDER_ASSETS": str(_binaries(tmp_path / "kb")),
    }
    with pytest.raises(AssetsMissing, match="TEST_ASSET_ETCD"):
        find_assets(env)
