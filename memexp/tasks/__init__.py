"""LightningModules, one per task kind. A model declares `task_kind`; the data declares
the kind it provides; `TASKS` maps the kind to the module that trains the pair.

Each task owns its settings (`<Task>.Settings`, declared in memexp.tasks.settings); the run config's `task` section is
their union. The tasks import Lightning, so this package loads them on first use (`memexp.tasks.settings` alone stays
light for the config store and `--help`).
"""

from __future__ import annotations

from typing import Any

from memexp.tasks.settings import TaskSettings, task_fields_not_in_key, task_section_defaults


def __getattr__(name: str) -> Any:
    if name in ("TASKS", "BaseTask"):
        from memexp.tasks.base import BaseTask
        from memexp.tasks.causal_lm import CausalLMTask
        from memexp.tasks.classification import ClassificationTask
        from memexp.tasks.dialogue import DialogueTask

        tasks = {"causal_lm": CausalLMTask, "dialogue": DialogueTask, "classification": ClassificationTask}
        globals().update(TASKS=tasks, BaseTask=BaseTask)
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["TASKS", "BaseTask", "TaskSettings", "task_fields_not_in_key", "task_section_defaults"]
