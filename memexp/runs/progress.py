"""The training progress bars in optimiser steps: `step 340/2000`, one bar for the whole run
(`StepProgressBar`, rich, for terminals; `StepTQDMProgressBar`, plain, for cluster logs), and the model
summary printed when training starts (`RunSummary`).

Lightning's rich bar counts batches per epoch and titles it `Epoch 0/-2` when a run is bounded by
`max_steps` (max_epochs = -1), which is how every memexp run is bounded; with an iterable dataset it
may not know an epoch's length at all. This bar counts the trainer's global step against max_steps
(and falls back to Lightning's epoch bar when a run has no max_steps).
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import RichModelSummary, RichProgressBar, TQDMProgressBar


class _CountsSteps:
    """What both bars share: a run bounded by max_steps is counted in optimiser steps, to max_steps."""

    def _by_steps(self) -> bool:
        return self.trainer.max_steps is not None and self.trainer.max_steps > 0

    @property
    def total_train_batches(self) -> int | float:
        return self.trainer.max_steps if self._by_steps() else super().total_train_batches

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)  # the logger's version id (a W&B run id): not a number to watch
        return metrics


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


class RunSummary(RichModelSummary):
    """Lightning's model summary without its FLOPs column and `Total FLOPs: 0` line when nothing was counted.

    Lightning counts FLOPs only by running `example_input_array` through the model under torch's FLOP counter,
    which HOPE's test-time memory (autograd inside the forward) cannot run under, so no memexp task sets one and
    every count would read 0. The table is drawn here because Lightning's draws those columns unconditionally.
    """

    @staticmethod
    def summarize(
        summary_data: list[tuple[str, list[str]]],
        total_parameters: int,
        trainable_parameters: int,
        model_size: float,
        total_training_modes: dict[str, int],
        total_flops: int,
        **summarize_kwargs: Any,
    ) -> None:
        if total_flops:
            return RichModelSummary.summarize(
                summary_data,
                total_parameters,
                trainable_parameters,
                model_size,
                total_training_modes,
                total_flops,
                **summarize_kwargs,
            )
        from lightning.pytorch.utilities.model_summary.model_summary import get_formatted_model_size, get_human_readable_count
        from rich import get_console
        from rich.table import Table

        columns = [(name, values) for name, values in summary_data if name != "FLOPs"]
        table = Table(header_style=summarize_kwargs.get("header_style", "bold magenta"))
        for i, (name, _) in enumerate(columns):
            table.add_column(name, style="dim" if i == 0 else None, justify="right" if name == "Params" else "left")
        for row in zip(*(values for _, values in columns)):
            table.add_row(*row)
        console = get_console()
        console.print(table)
        frozen = total_parameters - trainable_parameters
        console.print(
            f"[bold]Params[/]: {get_human_readable_count(trainable_parameters)} trainable, "
            f"{get_human_readable_count(frozen)} frozen, {get_formatted_model_size(model_size)} MB\n"
            f"[bold]Modules[/]: {total_training_modes['train']} in train mode, {total_training_modes['eval']} in eval mode"
        )
