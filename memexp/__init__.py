"""memexp: an experiment suite for memory-augmented sequence models."""

__version__ = "0.1.0"
