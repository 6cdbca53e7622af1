"""Telemetry: Prometheus metrics and JSON logs, each an object made at start-up (no module state)."""
