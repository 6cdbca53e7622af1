"""A real Arize Phoenix server on 127.0.0.1 for tests, and a seeder that traces and votes like the course app.

    with PhoenixServer() as server:           # ServerUnavailable if the env cannot be built or start fails
        seeded = server.seed([{"op": "vote", "label": "thumbs_up", "score": 1, "metadata": {"arm": "champion"},
                               "identifier": "vote-1"}])
        httpx.get(f"{server.url}/v1/projects/canopy/spans", params={"span_kind": "LLM"})

The server runs from the Phoenix env of ``hack/servers-assets.sh`` (``$CANOPY_PHOENIX_PYTHON`` when set),
with its SQLite store in a temporary working directory. Phoenix's HTTP server follows ``PHOENIX_HOST``; its
gRPC OTLP receiver has no address setting and binds every interface, so the server is started through
``phoenix_loopback.py``, which rewrites that bind address to 127.0.0.1 (the gRPC port is a free one too).
The in-app agent's server-side tools (bash, web, GitHub) and telemetry are switched off.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from canopy_devkit.servers.process import READY_TIMEOUT, LoopbackServer
from tests.support.server_process import (
    LOOPBACK,
    SUPPORT_DIR,
    ServerProcess,
    ServerUnavailable,
    child_env,
    free_port,
    run_script,
    server_python,
)

__all__ = ["PhoenixServer", "ServerUnavailable"]

PYTHON_ENV_VAR = "CANOPY_PHOENIX_PYTHON"
LAUNCHER = SUPPORT_DIR / "phoenix_loopback.py"
SEED_SCRIPT = SUPPORT_DIR / "gen2_seed_phoenix.py"
SEED_TIMEOUT = 120.0
SERVER_ENV = {
    "PHOENIX_TELEMETRY_ENABLED": "false",
    "PHOENIX_DISABLE_AGENT_ASSISTANT": "true",
    "PHOENIX_AGENTS_DISABLE_BASH": "true",
    "PHOENIX_AGENTS_DISABLE_WEB_ACCESS": "true",
    "PHOENIX_AGENTS_DISABLE_GITHUB": "true",
}


class PhoenixServer(LoopbackServer):
    """Phoenix on free 127.0.0.1 ports (HTTP and gRPC); ``url`` once entered; stopped (whole group) on exit."""

    def __init__(self, python: Path | None = None, *, ready_timeout: float = READY_TIMEOUT) -> None:
        super().__init__(python, ready_timeout=ready_timeout)
        self.grpc_port = 0

    def start(self) -> None:
        python = self.python = self.python or server_python("phoenix", PYTHON_ENV_VAR)
        tmp = self.tmp_dir = Path(tempfile.mkdtemp(prefix="canopy-phoenix-"))
        port, self.grpc_port = free_port(), free_port()
        while self.grpc_port == port:
            self.grpc_port = free_port()
        self.url = f"http://{LOOPBACK}:{port}"
        env = child_env(
            {
                **SERVER_ENV,
                "PHOENIX_WORKING_DIR": str(tmp),
                "PHOENIX_HOST": LOOPBACK,
                "PHOENIX_PORT": str(port),
                "PHOENIX_GRPC_PORT": str(self.grpc_port),
            }
        )
        # -I: isolated mode, so tests/support/ (the launcher's directory) does not shadow any module.
        args = [str(python), "-I", str(LAUNCHER)]
        self.process = ServerProcess("phoenix", args, env=env, cwd=tmp, log_path=tmp / "server.log")
        self.process.start()
        self.startup_seconds = self.process.wait_ready(f"{self.url}/healthz", self.ready_timeout)

    def seed(self, steps: list[dict[str, Any]], *, project: str = "canopy") -> dict[str, Any]:
        """Run ``gen2_seed_phoenix.py`` in the Phoenix env against this server; its JSON result.

        Returns ``{"project": ..., "steps": [...]}`` (see the script for the steps and results).
        """
        if self.python is None or self.tmp_dir is None:
            raise RuntimeError("the server is not running: seed() inside `with`")
        plan = {"url": self.url, "project": project, "steps": steps}
        result: dict[str, Any] = run_script(
            self.python, SEED_SCRIPT, plan, cwd=self.tmp_dir, env=child_env({}), timeout=SEED_TIMEOUT
        )
        return result
