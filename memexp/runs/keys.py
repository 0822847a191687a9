"""The run key: what names a run's checkpoint folder, derived from what determines its weights.

The configs hold every constructor argument (hydra-zen's `populate_full_signature`), so hashing them whole made
each new defaulted argument of a model a new key: after an upgrade the same command started over in a new folder.
The key hashes each section without the arguments left at their constructor's default, so an argument added with a
default keeps existing runs' folders. A changed default does change a model without changing the key: the resumed
run says so in one line (`changed_defaults`). Folders named by the previous scheme (`legacy_run_key`: the whole
sections) are still found and resumed (memexp.runs.train.checkpoint_dir).
"""

from __future__ import annotations

import importlib
import inspect
import json
from collections.abc import Callable, Mapping
from typing import Any

from memexp.files import text_digest
from memexp.runs.precision import run_key_precision
from memexp.tasks.settings import task_fields_not_in_key, task_section_defaults

# Fields of the data config that do not change what is learned (left out of the run key).
DATA_FIELDS_NOT_IN_KEY = {"data_dir", "num_workers", "pin_memory", "eval_batch_size", "cache_dir"}
# Fields of the task config that only change evaluation or when a run ends (each task marks them: memexp.tasks.base).
TASK_FIELDS_NOT_IN_KEY = task_fields_not_in_key()
# The task settings keyed whatever their value: the ones the keys knew before task settings were pruned of their
# defaults (so existing folders keep their keys); a task setting added later is keyed only away from its default.
TASK_FIELDS_KEYED_WHOLE = {"carry_state"}
_HYDRA_FLAGS = {"_partial_", "_convert_", "_recursive_"}


def _target(section: Mapping[str, Any]) -> Callable | None:
    path = section.get("_target_") if isinstance(section, Mapping) else None
    if not isinstance(path, str) or "." not in path:
        return None
    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):  # a target that is gone: the section is keyed whole
        return None


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def defaults_of(section: Mapping[str, Any]) -> dict[str, Any]:
    """The constructor defaults of a config section's `_target_` ({} without one)."""
    fn = _target(section)
    if fn is None:
        return {}
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return {}
    return {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}


def _at_default(value: Any, default: Any) -> bool:
    return _canonical(list(default) if isinstance(default, tuple) else default) == _canonical(value)


def weights_section(section: Mapping[str, Any] | None) -> Any:
    """A config section without Hydra's flags and the arguments left at their constructor's default."""
    if not isinstance(section, Mapping):
        return section
    defaults = defaults_of(section)
    return {k: v for k, v in section.items() if k not in _HYDRA_FLAGS and not (k in defaults and _at_default(v, defaults[k]))}


def _task_payload(task: Mapping[str, Any], legacy: bool) -> dict:
    defaults = task_section_defaults()
    kept = {k: v for k, v in task.items() if k not in TASK_FIELDS_NOT_IN_KEY}
    if legacy:  # the previous scheme knew no other task setting
        return {k: v for k, v in kept.items() if k in TASK_FIELDS_KEYED_WHOLE}
    return {k: v for k, v in kept.items() if k in TASK_FIELDS_KEYED_WHOLE or not (k in defaults and _at_default(v, defaults[k]))}


def _payload(cfg: Mapping[str, Any], section: Callable[[Any], Any], limits: dict, legacy: bool = False) -> dict:
    data = {k: v for k, v in (cfg.get("data") or {}).items() if k not in DATA_FIELDS_NOT_IN_KEY}
    task = _task_payload(cfg.get("task") or {}, legacy)
    payload = {"model": section(cfg.get("model")), "optim": section(cfg.get("optim")), "seed": cfg.get("seed")}
    payload |= {"data": section(data), "task": task}
    if (cfg.get("meta") or {}).get("use"):  # the meta-learning outer loop changes the weights too
        payload["meta"] = cfg["meta"]
    if precision := run_key_precision((cfg.get("trainer") or {}).get("precision")):  # float32 keys as before
        payload["precision"] = precision
    if limits:
        payload["limits"] = limits
    return payload


def run_key(cfg: Mapping[str, Any], limits: dict | None = None) -> str:
    """A short hash of what determines the learned weights: model, data, optimiser and task settings away from
    their defaults, the seed, a precision other than float32, and any batch limits or debug preset (`limits`), so
    that a smoke run (debug=fast) never resumes or rewrites a real run's checkpoints."""
    return text_digest(_canonical(_payload(cfg, weights_section, limits or {})), "sha1", length=8)


def legacy_run_key(cfg: Mapping[str, Any], limits: dict | None = None) -> str:
    """The key of the previous scheme (whole sections), to find the folders it named."""
    return text_digest(_canonical(_payload(cfg, lambda s: s, limits or {}, legacy=True)), "sha1", length=8)


def changed_defaults(saved: Mapping[str, Any], current: Mapping[str, Any]) -> tuple[dict, dict]:
    """Between the model config a checkpoint was saved with and this run's: ({key: (saved, now)} of the values that
    differ where this run leaves the argument at its default (a changed default), {key: (saved, now)} of those that
    differ where this run sets it (another model))."""
    defaults = defaults_of(current)
    changed, other = {}, {}
    for k in sorted(saved.keys() & current.keys()):
        if k in _HYDRA_FLAGS or _canonical(saved[k]) == _canonical(current[k]):
            continue
        (changed if k in defaults and _at_default(current[k], defaults[k]) else other)[k] = (saved[k], current[k])
    if saved.get("_target_") != current.get("_target_"):
        other["_target_"] = (saved.get("_target_"), current.get("_target_"))
    return changed, other
