"""What a run does, between the config store and the pieces it trains.

    build.py        RunNames, the model/data pairing check, the task from model + DataSpec
    spec.py         RunSpec (what a driver is given), RunResult (what it returns), the study types
    drivers.py      the registry of drivers (train, continual, knowledge) and `drive(spec)`
    train.py        train_and_test, the train driver: checkpoint folder (run key), loggers, callbacks, fit, test, sample
    checkpoints.py  read a checkpoint, check a resume, load a checkpoint back into task + data
    loggers.py      W&B / CSV loggers of a run, tables and plots to W&B
    studies.py      evaluations after a study run's test; recall / binned-perplexity reports of a checkpoint
    continual.py    the continual A -> B -> C driver (one model, several fits)
    knowledge.py    the ExplicitLM knowledge study's driver (a backbone run, a memory run, the measurements)
    report.py       aggregation of a sweep's runs into reports/ (and W&B)

Imports go down only: runs uses tasks, data, evals, models and the ground floor, never
`memexp.configs` or an entry point, and never Hydra (checkpoint loading takes the config
builder as an argument). Everything here takes already-built factories, so tests and
scripts call it directly.
"""

from memexp.runs.build import RunNames, build_task, check_pairing
from memexp.runs.checkpoints import LoadedRun, load_checkpoint, read_checkpoint
from memexp.runs.spec import RunResult, RunSpec
from memexp.runs.train import checkpoint_dir, run_key, train_and_test

__all__ = [
    "RunNames",
    "build_task",
    "check_pairing",
    "LoadedRun",
    "load_checkpoint",
    "read_checkpoint",
    "RunResult",
    "RunSpec",
    "checkpoint_dir",
    "run_key",
    "train_and_test",
]
