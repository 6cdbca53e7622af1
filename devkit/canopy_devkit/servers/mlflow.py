"""A real MLflow tracking server on 127.0.0.1, for the tests and the local demo.

    with MlflowServer() as server:            # ServerUnavailable if the env cannot be built or start fails
        httpx.post(f"{server.url}/api/3.0/mlflow/traces/search", json={...})

The server runs from the MLflow env of ``hack/servers-assets.sh`` (``$CANOPY_MLFLOW_PYTHON`` when set):
``mlflow server`` with one uvicorn worker, a SQLite store and proxied artifacts in a temporary directory,
job execution and telemetry off, listening on loopback only. The tests' ``tests/support/mlflow_server.py``
adds a seeder that writes like the Generation 2 backend.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Self

from canopy_devkit.servers.process import (
    LOOPBACK,
    ServerProcess,
    ServerUnavailable,
    child_env,
    free_port,
    listening_addresses,
    rss_bytes,
    server_python,
)

__all__ = ["PYTHON_ENV_VAR", "MlflowServer", "ServerUnavailable"]

PYTHON_ENV_VAR = "CANOPY_MLFLOW_PYTHON"
READY_TIMEOUT = 90.0
#: Server-side settings: no background job runner (a second process tree), no usage telemetry.
SERVER_ENV = {
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
}


class MlflowServer:
    """``mlflow server`` on a free 127.0.0.1 port; ``url`` once entered; stopped (whole group) on exit."""

    def __init__(self, python: Path | None = None, *, ready_timeout: float = READY_TIMEOUT) -> None:
        self.python = python
        self.ready_timeout = ready_timeout
        self.url = ""
        self.startup_seconds = 0.0
        self.tmp_dir: Path | None = None
        self.process: ServerProcess | None = None

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def pid(self) -> int | None:
        """The server's first process (its process group's id), while it runs."""
        return None if self.process is None else self.process.pgid

    def start(self) -> None:
        """Start the server and wait until ``/health`` answers (ServerUnavailable otherwise)."""
        python = self.python = self.python or server_python("mlflow", PYTHON_ENV_VAR)
        tmp = self.tmp_dir = Path(tempfile.mkdtemp(prefix="canopy-mlflow-"))
        port = free_port()
        self.url = f"http://{LOOPBACK}:{port}"
        args = [
            str(python),
            "-m",
            "mlflow",
            "server",
            "--host",
            LOOPBACK,
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{tmp}/mlflow.db",
            "--artifacts-destination",
            str(tmp / "artifacts"),
        ]
        self.process = ServerProcess(
            "mlflow server", args, env=child_env(SERVER_ENV), cwd=tmp, log_path=tmp / "server.log"
        )
        self.process.start()
        self.startup_seconds = self.process.wait_ready(f"{self.url}/health", self.ready_timeout)

    def close(self) -> None:
        """Stop the server (no process left behind) and remove its temporary directory. Idempotent."""
        if self.process is not None:
            self.process.stop()
            self.process = None
        if self.tmp_dir is not None:
            shutil.rmtree(self.tmp_dir, ignore_errors=True)
            self.tmp_dir = None

    def log_tail(self, lines: int = 40) -> str:
        return "" if self.process is None else self.process.tail(lines)

    def rss_bytes(self) -> int:
        """Resident memory of the whole server (the CLI process and its uvicorn worker)."""
        return 0 if self.process is None else rss_bytes(self.process.pids())

    def listening(self) -> list[tuple[str, int]]:
        """(address, port) of every listening TCP socket of the server's processes."""
        return [] if self.process is None else listening_addresses(self.process.pids())
