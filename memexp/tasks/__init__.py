"""LightningModules, one per task kind. A model declares `task_kind`; the data declares
the kind it provides; `TASKS` maps the kind to the module that trains the pair.

Each task owns its settings (`<Task>.Settings`, memexp.tasks.base); the run config's `task` section is their union.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from memexp.tasks.base import BaseTask, TaskSettings, settings_fields
from memexp.tasks.causal_lm import CausalLMTask
from memexp.tasks.classification import ClassificationTask
from memexp.tasks.dialogue import DialogueTask

TASKS: dict[str, type[BaseTask]] = {"causal_lm": CausalLMTask, "dialogue": DialogueTask, "classification": ClassificationTask}


def task_section_defaults() -> dict[str, Any]:
    """The run config's `task` section: every task's settings with their defaults (the shared ones last)."""
    shared = settings_fields(TaskSettings)
    out: dict[str, Any] = {}
    for cls in (t.Settings for t in TASKS.values()):
        out |= {name: f.default for name, f in settings_fields(cls).items() if name not in shared}
    return out | {name: f.default for name, f in shared.items()}


def task_fields_not_in_key() -> set[str]:
    """The `task` settings that do not change the weights (memexp.runs.keys leaves them out of the run key)."""
    return {
        f.name
        for cls in (TaskSettings, *(t.Settings for t in TASKS.values()))
        for f in dataclasses.fields(cls)
        if f.metadata.get("in_key") is False
    }


__all__ = ["TASKS", "BaseTask", "TaskSettings", "task_fields_not_in_key", "task_section_defaults"]
