"""``python -m canopy_devkit.gen2``: the Generation 2 stand-in as a program."""

import sys

from canopy_devkit.gen2.runner import main

sys.exit(main())
