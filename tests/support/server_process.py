"""The shared plumbing of the real MLflow and Phoenix test servers; it lives in ``canopy_devkit.servers.process``
(the local demo starts a real MLflow too). Re-exported here for the tests, with the tests' own paths."""

from pathlib import Path

from canopy_devkit.servers.process import (
    ASSETS_SCRIPT,
    ASSETS_TIMEOUT,
    KILL_TIMEOUT,
    LOOPBACK,
    REPO_ROOT,
    TERM_TIMEOUT,
    ProcessesSurvived,
    ScriptFailed,
    ServerProcess,
    ServerUnavailable,
    child_env,
    free_port,
    group_pids,
    is_loopback,
    listening_addresses,
    rss_bytes,
    run_script,
    server_python,
)

SUPPORT_DIR = Path(__file__).resolve().parent
"""tests/support/: the seeders and Phoenix's loopback launcher."""

__all__ = [
    "ASSETS_SCRIPT",
    "ASSETS_TIMEOUT",
    "KILL_TIMEOUT",
    "LOOPBACK",
    "REPO_ROOT",
    "SUPPORT_DIR",
    "TERM_TIMEOUT",
    "ProcessesSurvived",
    "ScriptFailed",
    "ServerProcess",
    "ServerUnavailable",
    "child_env",
    "free_port",
    "group_pids",
    "is_loopback",
    "listening_addresses",
    "rss_bytes",
    "run_script",
    "server_python",
]
