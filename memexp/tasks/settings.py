"""The settings each task owns, one frozen dataclass per task, checked in `__post_init__`.

They live apart from the tasks (which import Lightning) so that the config store and `--help` read them without
importing torch. The run config's `task` section is their union (`task_section_defaults`), the run key leaves out the
fields declared `evaluation_only` (memexp.runs.keys), and `BaseTask.settings_from` picks a task's own fields. A new
task setting is one field here (and the code of its task that reads it).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from memexp.errors import ConfigError


def evaluation_only(default: Any) -> Any:
    """A settings field that does not change the weights (left out of the run key)."""
    return field(default=default, metadata={"in_key": False})


@dataclass(frozen=True)
class TaskSettings:
    """The settings every task has.

    test_ckpt: "best" tests the best checkpoint by the monitored metric (the final weights when none is monitored),
        "last" the final weights.
    compile: torch.compile the network (not the LightningModule); the first steps pay the compile.
    """

    test_ckpt: str = evaluation_only("best")
    compile: bool = evaluation_only(False)

    def __post_init__(self) -> None:
        if self.test_ckpt not in ("best", "last"):
            raise ConfigError(f"task.test_ckpt={self.test_ckpt!r}: expected 'best' or 'last'")
        if not isinstance(self.compile, bool):
            raise ConfigError(f"task.compile={self.compile!r}: expected true or false")

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def settings_fields(cls: type[TaskSettings]) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


@dataclass(frozen=True)
class CausalLMSettings(TaskSettings):
    """carry_state: carry the model's state from one training batch to the next (truncated BPTT); needs a model
    with `carries_state` and data with in-order stream windows. "auto": when both hold."""

    carry_state: bool | str = "auto"
    label_smoothing: float = 0.0  # of the training loss (torch's cross_entropy); evaluation scores the plain loss
    # the LM head only at labelled positions (the same loss, without the (B, T, V) logits of the rest): "auto" when
    # the data labels a few answer positions (data=mqar); false reads out every position and masks after
    answer_readout: bool | str = evaluation_only("auto")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.carry_state not in ("auto", True, False):
            raise ConfigError(f"task.carry_state={self.carry_state!r}: expected auto, true or false")
        if self.answer_readout not in ("auto", True, False):
            raise ConfigError(f"task.answer_readout={self.answer_readout!r}: expected auto, true or false")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"task.label_smoothing={self.label_smoothing}: expected 0 <= label_smoothing < 1")


@dataclass(frozen=True)
class DialogueSettings(TaskSettings):
    """max_eval_generate_batches: evaluation batches (per validation/test run) whose replies are decoded greedily
    for BLEU and distinct-n; decoding is the slow part, 0 turns it off."""

    max_eval_generate_batches: int = evaluation_only(4)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.max_eval_generate_batches, int) or self.max_eval_generate_batches < 0:
            raise ConfigError(f"task.max_eval_generate_batches={self.max_eval_generate_batches} must be >= 0")


@dataclass(frozen=True)
class ClassificationSettings(TaskSettings):
    """early_stop: validations without a new best macro F1 before training stops (0: never)."""

    early_stop: int = evaluation_only(5)  # like trainer.max_steps, it only decides when a run ends

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.early_stop, int) or self.early_stop < 0:
            raise ConfigError(f"task.early_stop={self.early_stop} must be >= 0 (0 turns early stopping off)")


SETTINGS: dict[str, type[TaskSettings]] = {
    "causal_lm": CausalLMSettings,
    "dialogue": DialogueSettings,
    "classification": ClassificationSettings,
}


def task_section_defaults() -> dict[str, Any]:
    """The run config's `task` section: every task's settings with their defaults (the shared ones last)."""
    shared = settings_fields(TaskSettings)
    out: dict[str, Any] = {}
    for cls in SETTINGS.values():
        out |= {name: f.default for name, f in settings_fields(cls).items() if name not in shared}
    return out | {name: f.default for name, f in shared.items()}


def task_fields_not_in_key() -> set[str]:
    """The `task` settings that do not change the weights (memexp.runs.keys leaves them out of the run key)."""
    return {
        f.name for cls in (TaskSettings, *SETTINGS.values()) for f in dataclasses.fields(cls) if f.metadata.get("in_key") is False
    }


def check_task_section(section: dict[str, Any]) -> None:
    """Check every value of a run config's `task` section before any work (each task's settings check their own
    fields); which fields apply to this run is checked when its task is built (`BaseTask.settings_from`)."""
    known = set(task_section_defaults())
    if unknown := sorted(set(section) - known):
        raise ConfigError(f"task.{unknown[0]}: no task has such a setting")
    for cls in SETTINGS.values():
        cls(**{k: v for k, v in section.items() if k in settings_fields(cls)})
