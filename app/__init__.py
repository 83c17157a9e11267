"""BlindPair: blind pairwise evaluation of text-to-video models."""
