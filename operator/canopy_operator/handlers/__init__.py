"""Kopf handlers (importing this package registers them with Kopf's default registry)."""

from canopy_operator.handlers import experiment as experiment
