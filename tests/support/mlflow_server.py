"""A real MLflow tracking server on 127.0.0.1 for tests, and a seeder that writes like the Gen 2 backend.

    with MlflowServer() as server:            # ServerUnavailable if the env cannot be built or start fails
        seeded = server.seed([{"op": "ab_vote", "preference": "a",
                               "prompt_mapping": {"a": "champion", "b": "challenger"}}])
        httpx.post(f"{server.url}/api/3.0/mlflow/traces/search", json={...})

The server itself is the dev kit's (``canopy_devkit.servers.mlflow``: the local demo starts one too); this adds
the seeder (``gen2_seed_mlflow.py``, run in the server's env), whose docstring documents the steps it takes.
"""

from __future__ import annotations

from typing import Any

from canopy_devkit.servers.mlflow import MlflowServer as _MlflowServer
from tests.support.server_process import SUPPORT_DIR, ServerUnavailable, child_env, run_script

__all__ = ["MlflowServer", "ServerUnavailable"]

SEED_SCRIPT = SUPPORT_DIR / "gen2_seed_mlflow.py"
SEED_TIMEOUT = 180.0


class MlflowServer(_MlflowServer):
    """``mlflow server`` on a free 127.0.0.1 port (see the dev kit's class), with :meth:`seed`."""

    def seed(self, steps: list[dict[str, Any]], *, experiment: str = "canopy-backend") -> dict[str, Any]:
        """Run ``gen2_seed_mlflow.py`` in the MLflow env against this server; its JSON result.

        Returns ``{"experiment_id": ..., "steps": [...]}`` (see the script for the steps and results).
        """
        if self.python is None or self.tmp_dir is None:
            raise RuntimeError("the server is not running: seed() inside `with`")
        plan = {"tracking_uri": self.url, "experiment": experiment, "steps": steps}
        result: dict[str, Any] = run_script(
            self.python, SEED_SCRIPT, plan, cwd=self.tmp_dir, env=child_env({}), timeout=SEED_TIMEOUT
        )
        return result
