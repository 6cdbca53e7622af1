"""A real MLflow tracking server on 127.0.0.1, for the tests and the local demo.

    with MlflowServer() as server:            # ServerUnavailable if the env cannot be built or start fails
        httpx.post(f"{server.url}/api/3.0/mlflow/traces/search", json={...})

The server runs from the MLflow env of ``hack/servers-assets.sh`` (``$CANOPY_MLFLOW_PYTHON`` when set):
``mlflow server`` with one uvicorn worker, a SQLite store and proxied artifacts in a temporary directory,
job execution and telemetry off, listening on loopback only. The tests' ``tests/support/mlflow_server.py``
adds a seeder that writes like the Generation 2 backend.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from canopy_devkit.servers.process import (
    LOOPBACK,
    LoopbackServer,
    ServerProcess,
    ServerUnavailable,
    child_env,
    free_port,
    server_python,
)

__all__ = ["PYTHON_ENV_VAR", "MlflowServer", "ServerUnavailable"]

PYTHON_ENV_VAR = "CANOPY_MLFLOW_PYTHON"
#: Server-side settings: no background job runner (a second process tree), no usage telemetry.
SERVER_ENV = {
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
}


class MlflowServer(LoopbackServer):
    """``mlflow server`` on a free 127.0.0.1 port; ``url`` once entered; stopped (whole group) on exit."""

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
