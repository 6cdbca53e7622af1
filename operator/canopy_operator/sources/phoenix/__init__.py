"""Arize Phoenix: votes and thumbs as span annotations (:mod:`.source`, over :mod:`.client`)."""
