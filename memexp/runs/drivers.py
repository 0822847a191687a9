"""The registry of run drivers: each takes a `RunSpec` and returns a `RunResult` (memexp.runs.spec).

A run's study picks its driver (`<study type>.driver`): none or evaluations after the test -> "train", a continual
study -> "continual", the knowledge study -> "knowledge". A new kind of run registers its driver here.
"""

from __future__ import annotations

from collections.abc import Callable

from memexp.runs.continual import run_continual
from memexp.runs.knowledge import run_knowledge_study
from memexp.runs.spec import RunResult, RunSpec
from memexp.runs.studies import StudyEvaluations, StudySettings
from memexp.runs.train import train_and_test


def train_with_evaluations(spec: RunSpec) -> RunResult:
    """The train driver; a study of evaluations runs them after the test (memexp.runs.studies)."""
    if isinstance(spec.study, StudySettings) and spec.after_test is None:
        spec = spec.replace(after_test=StudyEvaluations(spec.study))
    return train_and_test(spec)


DRIVERS: dict[str, Callable[[RunSpec], RunResult]] = {
    "train": train_with_evaluations,
    "continual": run_continual,
    "knowledge": run_knowledge_study,
}


def drive(spec: RunSpec) -> RunResult:
    """Run `spec` with the driver its study names."""
    return DRIVERS[spec.study.driver if spec.study is not None else "train"](spec)
