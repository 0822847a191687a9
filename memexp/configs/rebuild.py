"""Saved configs back into objects: the Hydra half of loading a checkpoint.

A checkpoint stores its run's resolved config; `load_checkpoint` here hands hydra-zen's
`instantiate` to `memexp.runs.checkpoints.load_checkpoint`, which does the rest (weights,
tokenizer, checks). Entry points, tests and notebooks call this one.
"""

from __future__ import annotations

from pathlib import Path

from hydra_zen import instantiate

from memexp.runs.checkpoints import LoadedRun
from memexp.runs.checkpoints import load_checkpoint as _load_with


def load_checkpoint(
    path: str | Path,
    data_dir: str | None = None,
    expect_model: str | None = None,
    data_overrides: dict | None = None,
    data_path: str | None = None,
) -> LoadedRun:
    """The task (weights loaded) and data module (tokenizer restored) of a memexp checkpoint."""
    return _load_with(
        path, instantiate, data_dir=data_dir, expect_model=expect_model, data_overrides=data_overrides, data_path=data_path
    )
