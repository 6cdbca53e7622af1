"""The "read votes and feedback" port (``base``), its adapters (``canopy``: the Generation 1 HTTP API), and
the prompt-store port beside it (``prompts``)."""
