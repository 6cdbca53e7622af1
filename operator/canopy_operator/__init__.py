"""canopy-operator: A/B prompt experiments for the Canopy LLM backend, run by Kubernetes."""

__version__ = "0.1.0"
