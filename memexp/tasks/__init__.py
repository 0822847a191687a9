"""LightningModules, one per task kind. A model declares `task_kind`; the data declares
the kind it provides; `TASKS` maps the kind to the module that trains the pair."""

from memexp.tasks.causal_lm import CausalLMTask
from memexp.tasks.classification import ClassificationTask
from memexp.tasks.dialogue import DialogueTask

TASKS = {"causal_lm": CausalLMTask, "dialogue": DialogueTask, "classification": ClassificationTask}
