"""``python -m canopy_devkit.node up|down|status`` (the ``canopy-node`` command)."""

from canopy_devkit.node.cli import main

raise SystemExit(main())
