"""The training bars count optimiser steps against max_steps, across epochs, in one bar."""

from __future__ import annotations

import lightning as L
import pytest
from lightning.pytorch.demos.boring_classes import BoringModel

from memexp.runs.progress import StepProgressBar, StepTQDMProgressBar


@pytest.mark.parametrize("bar_class", [StepTQDMProgressBar, StepProgressBar])
def test_the_bar_counts_steps_across_epochs(bar_class, tmp_path):
    bar = bar_class(refresh_rate=1) if bar_class is StepTQDMProgressBar else bar_class(leave=True)
    # BoringModel's epoch has 64 batches: 100 steps cross an epoch boundary
    trainer = L.Trainer(
        max_steps=100,
        callbacks=[bar],
        logger=False,
        enable_checkpointing=False,
        limit_val_batches=0,
        default_root_dir=tmp_path,
        enable_model_summary=False,
    )
    trainer.fit(BoringModel())
    assert trainer.current_epoch >= 1
    if bar_class is StepTQDMProgressBar:
        assert (bar.train_progress_bar.n, bar.train_progress_bar.total) == (100, 100)
        assert bar.train_progress_bar.desc.startswith("step")
    else:
        (task,) = [t for t in bar.progress.tasks if t.id == bar.train_progress_bar_id]
        assert (task.completed, task.total) == (100, 100) and task.description.strip().endswith("step")
        assert len([t for t in bar.progress.tasks if "step" in t.description]) == 1  # one bar, not one per epoch
