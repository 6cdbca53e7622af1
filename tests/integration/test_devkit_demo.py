"""The README's first command: the demo reaches the promotion, shows and saves ``kubectl pexp get`` and ``plot``,
and leaves nothing running, Ctrl-C included."""

from __future__ import annotations

import os
import re
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from canopy_devkit.controlplane import AssetPaths

pytestmark = pytest.mark.integration

DEMO = [sys.executable, "-m", "canopy_devkit", "demo", "--max-votes", "400", "--seed", "3", "--timeout", "240"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def demo_args(output_dir: Path) -> list[str]:
    return [*DEMO, "--output-dir", str(output_dir)]


def demo_env(assets: AssetPaths) -> dict[str, str]:
    env = dict(os.environ)
    env.update(TEST_ASSET_KUBE_APISERVER=str(assets.kube_apiserver), TEST_ASSET_ETCD=str(assets.etcd))
    env.pop("KUBECONFIG", None)
    env["PYTHONIOENCODING"] = "utf-8"  # the plot's block characters, whatever the locale
    return env


def pids_in(output: str) -> dict[str, int]:
    match = re.search(r"^pids: (.+)$", output, re.MULTILINE)
    assert match, output
    return {name: int(pid) for name, pid in (item.split("=") for item in match.group(1).split())}


def running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split()[2] == "Z")


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from the IHDR chunk, which must come first, right after the signature."""
    assert data[:8] == PNG_SIGNATURE
    length, kind = struct.unpack(">I4s", data[8:16])
    assert (length, kind) == (13, b"IHDR")
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_demo_shows_the_challenger_promoted_and_stops_everything(envtest_assets: AssetPaths, tmp_path: Path) -> None:
    output_dir = tmp_path / "out"  # created by the demo
    result = subprocess.run(
        demo_args(output_dir),
        env=demo_env(envtest_assets),
        capture_output=True,
        encoding="utf-8",
        timeout=300,
        check=False,
    )
    out = result.stdout

    assert result.returncode == 0, out + result.stderr
    table = out.split("\n$ kubectl pexp ", 1)[0]  # the watch's lines; kubectl pexp get's tree follows
    lines = [line.split() for line in table.splitlines() if line.startswith("concise-summaries")]
    phases = [cells[1] for cells in lines]
    assert phases.index("Running") < phases.index("Concluded")
    final = lines[-1]
    assert final[1] == "Concluded"
    assert final[5] == "challenger"
    assert int(final[2]) > int(final[3])  # the users preferred the challenger
    assert float(final[6]) < 0.05
    assert "promoted: the challenger is now summarize.prompt" in out
    pids = pids_in(out)
    assert set(pids) == {"canopy-operator", "etcd", "kube-apiserver"}
    assert [name for name, pid in pids.items() if running(pid)] == []
    log = re.search(r"logs: (\S+)", out)
    assert log, out
    assert not Path(log.group(1)).parent.exists()  # the demo's work dir is removed

    # kubectl pexp, run by the demo once the experiment concluded: printed and saved in the output folder.
    get = (output_dir / "pexp-get.txt").read_text(encoding="utf-8")
    assert get.startswith("$ kubectl pexp get concise-summaries -n canopy-demo\n"), get
    assert re.search(r"^Name: +concise-summaries$", get, re.MULTILINE), get
    assert re.search(r"^Phase: +Concluded$", get, re.MULTILINE), get
    assert re.search(r"^Winner: +challenger$", get, re.MULTILINE), get
    assert get.rstrip("\n") in out
    png = output_dir / "pexp-plot.png"
    plot = (output_dir / "pexp-plot.txt").read_text(encoding="utf-8")
    assert plot.startswith(f"$ kubectl pexp plot concise-summaries -n canopy-demo -o {png} --terminal\n"), plot
    assert f"wrote {png} (640x360 PNG," in plot
    assert "decisive votes" in plot  # the terminal rendering's x axis
    assert plot.rstrip("\n") in out
    assert png_size(png.read_bytes()) == (640, 360)
    assert f"kubectl pexp output saved: {output_dir / 'pexp-get.txt'}, {output_dir / 'pexp-plot.txt'}, {png}" in out


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_demo_interrupted_with_ctrl_c_leaves_no_process(envtest_assets: AssetPaths, tmp_path: Path) -> None:
    proc = subprocess.Popen(
        demo_args(tmp_path / "out"),
        env=demo_env(envtest_assets),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        encoding="utf-8",
        # A shell without job control starts background jobs with SIGINT ignored, and children inherit that:
        # the demo must get Ctrl-C as a person's terminal sends it, whoever started this test.
        preexec_fn=_default_sigint,
    )
    assert proc.stdout is not None
    seen: list[str] = []
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            if line.startswith("applied "):
                break
        assert any(line.startswith("applied ") for line in seen), "".join(seen)
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = "".join(seen) + rest
    assert proc.returncode == 1, out
    assert "stopping the operator, the simulator and the control plane" in out
    pids = pids_in(out)
    assert [name for name, pid in pids.items() if running(pid)] == []
    assert not (tmp_path / "out").exists()  # interrupted before the experiment concluded: no kubectl pexp
