"""The operator as a real child process (``python -m canopy_operator.cli run``), so a test can kill it.

    proc = OperatorProcess(kubeconfig, namespace, log_dir, failpoints="after-config-write:2")
    proc.start()
    assert await proc.wait_exit(60) == 137   # died at the failpoint
    proc = proc.again()                      # the same operator, without the failpoint
    proc.start(); ...; proc.stop()

Its output goes to a log file per start (named in assertion messages); :meth:`rss_bytes` reads its
resident memory from /proc for the memory-bound checks.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from canopy_operator.failpoints import DIR_ENV, ENV

STOP_TIMEOUT = 20.0


@dataclass
class OperatorProcess:
    """One start of the operator watching one namespace as the user of ``kubeconfig``."""

    kubeconfig: Path
    namespace: str
    log_dir: Path
    failpoints: str = ""
    env: dict[str, str] = field(default_factory=dict)
    more_namespaces: tuple[str, ...] = ()
    """Further namespaces it watches besides ``namespace``."""
    generation: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"operator-{self.generation}.log"

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if k not in (ENV, "KUBECONFIG")}
        env.update(
            KUBECONFIG=str(self.kubeconfig),
            PYTHONUNBUFFERED="1",
            CANOPY_LOG_LEVEL="INFO",
            **{DIR_ENV: str(self.log_dir)},
            # A killed operator cannot remove its temporary Git cache: keep it under the test's own directory.
            TMPDIR=str(self.log_dir / "tmp"),
            **self.env,
        )
        if self.failpoints:
            env[ENV] = self.failpoints
        (self.log_dir / "tmp").mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "canopy_operator.cli",
                    "run",
                    *(f"--namespace={ns}" for ns in (self.namespace, *self.more_namespaces)),
                ],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def again(self, failpoints: str = "") -> OperatorProcess:
        """The next start of the same operator (a new log file), by default without failpoints."""
        return replace(self, failpoints=failpoints, generation=self.generation + 1, process=None)

    @property
    def pid(self) -> int:
        assert self.process is not None, "not started"
        return self.process.pid

    def returncode(self) -> int | None:
        assert self.process is not None, "not started"
        return self.process.poll()

    async def wait_exit(self, timeout: float) -> int:  # noqa: ASYNC109 - a deadline named in the error
        """Wait for the process to end by itself; its exit status (AssertionError after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while (code := self.returncode()) is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"operator still running after {timeout:.0f}s; log:\n{self.tail()}")
            await asyncio.sleep(0.2)
        return code

    def stop(self) -> int:
        """SIGTERM (Kopf's graceful stop), SIGKILL after STOP_TIMEOUT; the exit status."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return int(self.process.returncode)

    def rss_bytes(self) -> int:
        """Resident set size now (VmRSS)."""
        for line in Path(f"/proc/{self.pid}/status").read_text(encoding="utf-8").splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS line")

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])
