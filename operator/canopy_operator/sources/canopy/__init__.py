"""The Canopy Generation 1 backend: its typed HTTP client and the vote-source adapter over it."""
