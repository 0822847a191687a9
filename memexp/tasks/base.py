"""What every task shares, and the settings a task owns.

`BaseTask` holds the network, the data's `DataSpec`, the optimiser settings and the task's settings; it forwards
validation and test batches to `_eval_step` / `_eval_epoch_end`, builds the optimiser and schedule
(`memexp.tasks.optim`) and writes the run record into each checkpoint (`memexp.tasks.record`), its settings whole.

Each task declares its settings as one frozen dataclass (`Settings`, in memexp.tasks.settings, which imports no
torch), and `settings_from` picks a task's own fields from the run config's `task` section.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import lightning as L
import torch
from torch import nn

from memexp.data.spec import DataSpec
from memexp.errors import ConfigError
from memexp.tasks.optim import OptimizerSettings, clip_gradients, configure_optimizers
from memexp.tasks.record import run_record
from memexp.tasks.settings import SETTINGS, TaskSettings, settings_fields


class BaseTask(L.LightningModule):
    """The LightningModule of one task kind. Subclasses set `task_kind` and `Settings` and implement the steps,
    `_eval_step(batch, batch_idx, stage)`, `_eval_epoch_end(stage)` and `metric_names()`."""

    task_kind: ClassVar[str] = ""
    Settings: ClassVar[type[TaskSettings]] = TaskSettings

    def __init__(self, net: nn.Module, spec: DataSpec, optim: OptimizerSettings | None = None, settings: Any = None):
        super().__init__()
        self.net = net
        self.spec = spec
        self.optim = optim or OptimizerSettings()
        self.settings = settings if settings is not None else self.Settings()
        if not isinstance(self.settings, self.Settings):
            raise TypeError(f"{type(self).__name__} takes {self.Settings.__name__}, not {type(self.settings).__name__}")
        self.run_config: dict | None = None  # the composed run config, saved with every checkpoint

    # -- settings ---------------------------------------------------------------------------
    @classmethod
    def settings_from(cls, section: Mapping[str, Any] | None, strict: bool = True) -> TaskSettings:
        """This task's settings from a run config's `task` section. Strict (a run about to train): a setting of
        another task kind set away from its default is an error (it would do nothing here), and so is an unknown
        name; not strict (a saved run's config): the task's own fields are read, the rest left."""
        section = dict(section or {})
        own = settings_fields(cls.Settings)
        for name, value in section.items():
            if name in own or not strict:
                continue
            owners = {kind: s for kind, s in SETTINGS.items() if name in settings_fields(s)}
            if not owners:
                raise ConfigError(f"task.{name}: no task has such a setting")
            if value != next(iter(owners.values())).__dataclass_fields__[name].default:
                raise ConfigError(
                    f"task.{name}={value} applies to {' or '.join(owners)} runs only; this is a {cls.task_kind} run"
                )
        return cls.Settings(**{k: v for k, v in section.items() if k in own})

    @classmethod
    def create(cls, net: nn.Module, spec: DataSpec, optim: OptimizerSettings, settings: TaskSettings) -> BaseTask:
        """The task for `net` on `spec` (a task whose settings depend on the network resolves them here)."""
        return cls(net, spec, optim=optim, settings=settings)

    @staticmethod
    def metric_names() -> list[str]:
        """Every metric name a run logs at the end of training and testing (what `optimized_metric` may name)."""
        raise NotImplementedError

    # -- evaluation -------------------------------------------------------------------------
    def _eval_step(self, batch: Any, batch_idx: int, stage: str) -> None:
        raise NotImplementedError

    def _eval_epoch_end(self, stage: str) -> None:
        raise NotImplementedError

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "val")

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "test")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    # -- optimisation -----------------------------------------------------------------------
    def configure_optimizers(self) -> dict:
        return configure_optimizers(self)

    def configure_gradient_clipping(
        self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None, gradient_clip_algorithm: str | None = None
    ) -> None:
        clip_gradients(self, optimizer, gradient_clip_val, gradient_clip_algorithm)

    # -- checkpoints ------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["memexp"] = run_record(self, self.task_kind) | {"task_settings": self.settings.as_dict()}
