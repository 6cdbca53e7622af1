"""``python -m canopy_devkit``: the same as the ``canopy-devkit`` command."""

import contextlib
import sys

from canopy_devkit.cli import main

with contextlib.suppress(KeyboardInterrupt):
    sys.exit(main())
