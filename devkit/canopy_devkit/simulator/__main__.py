"""``python -m canopy_devkit.simulator``: the simulated backend as a program (what ``SimulatorProcess`` spawns)."""

import contextlib
import sys

from canopy_devkit.simulator.runner import main

with contextlib.suppress(KeyboardInterrupt):
    sys.exit(main())
