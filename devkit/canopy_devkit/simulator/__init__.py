"""A faithful simulator of the Generation 1 Canopy backend, for tests, benchmarks and the local demo.

- :mod:`.config`: how the backend turns its config file into feature flags (crashes included);
- :mod:`.http`: FastAPI's wire behaviour rebuilt on aiohttp;
- :mod:`.app`: one backend process's state and its endpoints;
- :mod:`.runner`: serving it on the event loop (:class:`RunningSimulator`), in a child process
  (:class:`SimulatorProcess`) or as ``canopy-devkit simulate``.
"""

from canopy_devkit.simulator.app import Faults, answer_chunks
from canopy_devkit.simulator.config import BackendStartupError
from canopy_devkit.simulator.runner import RunningSimulator, SimulatorProcess, free_port

__all__ = [
    "BackendStartupError",
    "Faults",
    "RunningSimulator",
    "SimulatorProcess",
    "answer_chunks",
    "free_port",
]
