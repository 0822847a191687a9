"""The hydra-zen store: every group a run composes, and the top-level app configs.

Groups: model, data, optim, trainer, logger, callbacks, paths, experiment (package
_global_), debug (package _global_). Every constructor argument of what a group builds
is a config field (`populate_full_signature=True`), so anything is overridable from the
command line: `python -m memexp.run model.depth=6 data.seq_len=128 trainer.max_steps=500`.

YAML presets in the repository's `conf/` folder (and in `./conf` of the working
directory) are on Hydra's search path: `conf/experiment/foo.yaml` is `experiment=foo`.
"""

from memexp.configs.groups import register_groups
from memexp.configs.apps import ChatConfig, EvaluateConfig, GenerateConfig, PrepareConfig, RunConfig, register_apps
from memexp.configs.studies import ReportConfig, register_studies

register_groups()
register_apps()
register_studies()

__all__ = ["RunConfig", "EvaluateConfig", "GenerateConfig", "PrepareConfig", "ChatConfig", "ReportConfig"]
