"""Real servers the Generation 2 backend writes to, started on 127.0.0.1 from cached virtualenvs.

- :mod:`.process`: the shared plumbing (the env from ``hack/servers-assets.sh``, one process group per server,
  bounded waits, loopback checks);
- :mod:`.mlflow`: :class:`MlflowServer`, a real ``mlflow server`` (the tests and ``canopy-devkit demo
  --generation 2``).

The Phoenix server stays with the tests (``tests/support/phoenix_server.py``): its loopback launcher and seeder
are test scripts, and nothing outside the tests runs it.
"""

from canopy_devkit.servers.mlflow import MlflowServer
from canopy_devkit.servers.process import ServerProcess, ServerUnavailable

__all__ = ["MlflowServer", "ServerProcess", "ServerUnavailable"]
