"""The training progress bars in optimiser steps: `step 340/2000`, one bar for the whole run
(`StepProgressBar`, rich, for terminals; `StepTQDMProgressBar`, plain, for cluster logs).

Lightning's rich bar counts batches per epoch and titles it `Epoch 0/-2` when a run is bounded by
`max_steps` (max_epochs = -1), which is how every memexp run is bounded; with an iterable dataset it
may not know an epoch's length at all. This bar counts the trainer's global step against max_steps
(and falls back to Lightning's epoch bar when a run has no max_steps).
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar


class _CountsSteps:
    """What both bars share: a run bounded by max_steps is counted in optimiser steps, to max_steps."""

    def _by_steps(self) -> bool:
        return self.trainer.max_steps is not None and self.trainer.max_steps > 0

    @property
    def total_train_batches(self) -> int | float:
        return self.trainer.max_steps if self._by_steps() else super().total_train_batches


class StepProgressBar(_CountsSteps, RichProgressBar):
    def _get_train_description(self, current_epoch: int) -> str:
        if not self._by_steps():
            return super()._get_train_description(current_epoch)
        return f"{'step':{len(self.validation_description)}}"

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._by_steps() and self.train_progress_bar_id is not None:
            return  # one bar for the whole run: a new epoch is not a new bar
        super().on_train_epoch_start(trainer, pl_module)
        if self._by_steps():
            self._update(self.train_progress_bar_id, trainer.global_step)  # resumed runs start where they stopped

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if self._by_steps():
            self._update(self.train_progress_bar_id, trainer.global_step)


class StepTQDMProgressBar(_CountsSteps, TQDMProgressBar):
    """The plain bar (trainer=cluster) in optimiser steps: `step: 340/2000`, refreshed every `refresh_rate` steps."""

    def on_train_epoch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if self._by_steps() and trainer.current_epoch > 0 and self.train_progress_bar is not None:
            return  # one bar for the whole run
        super().on_train_epoch_start(trainer, *args)
        if self._by_steps():
            self.train_progress_bar.set_description("step")
            self.train_progress_bar.n = trainer.global_step  # resumed runs start where they stopped

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not self._by_steps():
            return super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        step, bar = trainer.global_step, self.train_progress_bar
        if bar is not None and not bar.disable and self._should_update(step, bar.total):
            bar.n = step
            bar.set_postfix(self.get_metrics(trainer, pl_module))
            bar.refresh()
