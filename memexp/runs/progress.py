"""The training progress bars in optimiser steps: `step 340/2000`, one bar for the whole run
(`StepProgressBar`, rich, for terminals; `StepTQDMProgressBar`, plain, for cluster logs), and the model
summary printed when training starts (`RunSummary`).

Lightning's rich bar counts batches per epoch and titles it `Epoch 0/-2` when a run is bounded by
`max_steps` (max_epochs = -1), which is how every memexp run is bounded; with an iterable dataset it
may not know an epoch's length at all. This bar counts the trainer's global step against max_steps
(and falls back to Lightning's epoch bar when a run has no max_steps), and its rate is in optimiser
steps per second, with tokens per second where a batch has token ids (`StepRate`: the last 20 steps,
validation time left out, as the ThroughputMonitor's `train/batches_per_sec` in the CSV and W&B).
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import RichModelSummary, RichProgressBar, TQDMProgressBar
from rich.progress import ProgressColumn
from rich.text import Text

BAR_METRICS = ("train/loss", "val/loss", "val/acc", "val/macro_f1", "val/bleu4")


class StepRate:
    """Optimiser steps (and tokens) per second over the last `window` steps, the time validation took left out."""

    def __init__(self, window: int = 20):
        self.samples: deque[tuple[float, int, int]] = deque(maxlen=window + 1)  # (clock, step, tokens so far)
        self.tokens, self.paused_at, self.known_tokens = 0, None, True

    def batch(self, step: int, tokens: int | None) -> None:
        if tokens is None:
            self.known_tokens = False
        self.tokens += tokens or 0
        if self.samples and self.samples[-1][1] == step:  # gradient accumulation: one step, several batches
            self.samples[-1] = (time.perf_counter(), step, self.tokens)
        else:
            self.samples.append((time.perf_counter(), step, self.tokens))

    def pause(self) -> None:
        self.paused_at = time.perf_counter()

    def resume(self) -> None:
        if self.paused_at is not None:
            gap = time.perf_counter() - self.paused_at
            self.samples = deque(((t + gap, s, n) for t, s, n in self.samples), maxlen=self.samples.maxlen)
            self.paused_at = None

    def rates(self) -> tuple[float | None, float | None]:
        """(steps/s, tokens/s); None until two steps were seen (tokens/s: None when batches carry no token ids)."""
        if len(self.samples) < 2:
            return None, None
        (t0, s0, n0), (t1, s1, n1) = self.samples[0], self.samples[-1]
        if t1 <= t0 or s1 <= s0:
            return None, None
        return (s1 - s0) / (t1 - t0), ((n1 - n0) / (t1 - t0) if self.known_tokens else None)

    def text(self) -> str:
        steps, tokens = self.rates()
        if steps is None:
            return ""
        return f"{steps:.2f} steps/s" + (f" • {tokens:,.0f} tok/s" if tokens is not None else "")


def _batch_tokens(batch: Any) -> int | None:
    """Token ids a training batch holds (a language model's or a dialogue's `input`); None for other batches."""
    import torch

    if isinstance(batch, dict) and isinstance(batch.get("input"), torch.Tensor) and not batch["input"].is_floating_point():
        return int(batch["input"].numel())
    return None


class _RateColumn(ProgressColumn):
    """The training bar's StepRate (steps/s, tok/s); batches/s for the validation and test bars."""

    def __init__(self, style: Any):
        self.style = style
        super().__init__()

    def render(self, task: Any) -> Text:
        if "rate" in task.fields:
            return Text(task.fields["rate"], style=self.style)
        return Text(f"{task.speed:.2f} batches/s" if task.speed is not None else "", style=self.style)


class _CountsSteps:
    """What both bars share: a run bounded by max_steps is counted in optimiser steps, to max_steps, at a StepRate."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.rate = StepRate()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.rate = StepRate()  # a study's stages share the preset's bar: each fit counts its own steps
        super().on_train_start(trainer, pl_module)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.rate.pause()
        super().on_validation_start(trainer, pl_module)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        self.rate.resume()

    def _by_steps(self) -> bool:
        return self.trainer.max_steps is not None and self.trainer.max_steps > 0

    @property
    def total_train_batches(self) -> int | float:
        return self.trainer.max_steps if self._by_steps() else super().total_train_batches

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict:
        metrics = super().get_metrics(trainer, pl_module)
        # the numbers to watch while a run trains; the rest is in the CSV, W&B and the final table
        return {k: v for k, v in metrics.items() if k in BAR_METRICS}


class StepProgressBar(_CountsSteps, RichProgressBar):
    def configure_columns(self, trainer: L.Trainer) -> list:
        columns = super().configure_columns(trainer)
        return [*columns[:-1], _RateColumn(style=self.theme.processing_speed)]  # Lightning's last column: it/s

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
        if not self._by_steps():
            return super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        # not Lightning's update to the batch index within the epoch: the bar holds the step (and its rate the steps)
        if not self.is_disabled and self.train_progress_bar_id is None:
            self._initialize_train_progress_bar_id()
        self.rate.batch(trainer.global_step, _batch_tokens(batch))
        if self.progress is not None and self.is_enabled and self.train_progress_bar_id is not None:
            self.progress.update(self.train_progress_bar_id, completed=trainer.global_step, rate=self.rate.text())
        self._update_metrics(trainer, pl_module)
        self.refresh()


class StepTQDMProgressBar(_CountsSteps, TQDMProgressBar):
    """The plain bar (trainer=cluster) in optimiser steps: `step: 340/2000`, refreshed every `refresh_rate` steps,
    its rate in steps/s (tqdm's own, over the steps since the bar started) and tok/s in the postfix."""

    def on_train_epoch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if self._by_steps() and trainer.current_epoch > 0 and self.train_progress_bar is not None:
            return  # one bar for the whole run
        super().on_train_epoch_start(trainer, *args)
        if self._by_steps():
            bar = self.train_progress_bar
            bar.set_description("step")
            bar.unit = "step"
            bar.n = bar.initial = bar.last_print_n = trainer.global_step  # resumed runs start where they stopped

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not self._by_steps():
            return super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        step, bar = trainer.global_step, self.train_progress_bar
        self.rate.batch(step, _batch_tokens(batch))
        if bar is not None and not bar.disable and self._should_update(step, bar.total):
            bar.update(step - bar.n)  # tqdm's rate counts what update() adds: steps
            _, tokens = self.rate.rates()
            bar.set_postfix(self.get_metrics(trainer, pl_module) | ({"tok/s": f"{tokens:,.0f}"} if tokens else {}))


class RunSummary(RichModelSummary):
    """Lightning's model summary as one console line (the model's class, trainable and frozen parameters, modules
    in train and eval mode); the table of the task's modules goes to the run's log file.

    Lightning's table lists the task's metric objects beside the network and, with no FLOPs counted, a FLOPs column
    of zeros: Lightning counts FLOPs only by running `example_input_array` through the model under torch's FLOP
    counter, which HOPE's test-time memory (autograd inside the forward) cannot run under, so no memexp task sets one.
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
        from lightning.pytorch.utilities.model_summary.model_summary import get_formatted_model_size, get_human_readable_count

        from memexp.console import say, to_log

        columns = dict(summary_data)
        types = dict(zip(columns.get("Name", []), columns.get("Type", [])))
        frozen = total_parameters - trainable_parameters
        to_log(
            "model summary\n"
            + "\n".join(
                "  ".join(f"{values[i]:>12}" for _, values in summary_data if values)
                for i in range(len(summary_data[0][1]) if summary_data else 0)
            )
        )
        say(
            f"model: {types.get('net') or next(iter(types.values()), '?')}, {get_human_readable_count(trainable_parameters).strip()} trainable and "
            f"{get_human_readable_count(frozen).strip()} frozen parameters ({get_formatted_model_size(model_size)} MB), "
            f"{total_training_modes['train']} modules in train mode, {total_training_modes['eval']} in eval mode"
        )
