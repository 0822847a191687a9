"""The hydra-zen store: every group a run composes, and the top-level app configs.

Groups: model, data, optim, trainer, logger, callbacks, paths, experiment (package
_global_), debug (package _global_). Every constructor argument of what a group builds
is a config field (`populate_full_signature=True`), so anything is overridable from the
command line: `python -m memexp.run model.depth=6 data.seq_len=128 trainer.max_steps=500`.

YAML presets are found in `./conf/local/`, `./conf/` of the working directory and the
package's own `memexp/conf/` (first match wins; `memexp.configs.search`):
`conf/experiment/foo.yaml` is `experiment=foo`. `load_checkpoint` rebuilds a checkpoint's
task and data from the config it saved (`memexp.configs.rebuild`).

Importing this package is light (memexp.help reads `catalog` and `search` without torch);
`register_all()` fills the store, which imports every model and data module.
"""

from __future__ import annotations

import importlib

_registered = False

# name -> the submodule that defines it (imported on first use)
_EXPORTS = {
    "load_checkpoint": "rebuild",
    "RunConfig": "apps",
    "EvaluateConfig": "apps",
    "GenerateConfig": "apps",
    "PrepareConfig": "apps",
    "ChatConfig": "apps",
    "ReportConfig": "apps",
}


def register_all() -> None:
    """Fill hydra-zen's store with every group and app config (once per process)."""
    global _registered
    if _registered:
        return
    from memexp.configs.apps import register_apps
    from memexp.configs.classification import register_classification
    from memexp.configs.groups import register_groups
    from memexp.configs.mqar import register_mqar
    from memexp.configs.studies import register_studies

    register_groups()
    register_apps()
    register_studies()
    register_mqar()
    register_classification()
    _registered = True


def __getattr__(name: str) -> object:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"memexp.configs.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'memexp.configs' has no attribute {name!r}")


__all__ = ["register_all", *_EXPORTS]
