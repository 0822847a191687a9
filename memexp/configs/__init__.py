"""The hydra-zen store: every group a run composes, and the top-level app configs.

Groups: model, data, optim, trainer, logger, callbacks, paths, experiment (package
_global_), debug (package _global_). Every constructor argument of what a group builds
is a config field (`populate_full_signature=True`), so anything is overridable from the
command line: `python -m memexp.run model.depth=6 data.seq_len=128 trainer.max_steps=500`.

YAML presets are found in `./conf/local/`, `./conf/` of the working directory and the
package's own `memexp/conf/` (first match wins; `memexp.configs.search`):
`conf/experiment/foo.yaml` is `experiment=foo`. `load_checkpoint` rebuilds a checkpoint's
task and data from the config it saved (`memexp.configs.rebuild`).
"""

from memexp.configs.apps import ChatConfig, EvaluateConfig, GenerateConfig, PrepareConfig, RunConfig, register_apps
from memexp.configs.classification import register_classification
from memexp.configs.groups import register_groups
from memexp.configs.rebuild import load_checkpoint
from memexp.configs.studies import ReportConfig, register_studies

register_groups()
register_apps()
register_studies()
register_classification()

__all__ = ["load_checkpoint", "RunConfig", "EvaluateConfig", "GenerateConfig", "PrepareConfig", "ChatConfig", "ReportConfig"]
