"""Kopf handlers: importing this package registers them (kopf run -m canopy_operator.handlers)."""

from canopy_operator.handlers import experiment as experiment
