"""What one run does, and how a checkpoint becomes a usable model again.

`train_and_test` is the body of `python -m memexp.run`: build the data, check that the
model fits it, build the task, fit with a stable checkpoint folder (so the same command
resumes), test, sample, and return the metrics. `load_checkpoint` rebuilds the task and
data of a checkpoint for `memexp.evaluate` and `memexp.generate`.

No Hydra in here beyond reading the composed config it is given: tests call these directly.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import lightning as L
import torch
from hydra_zen import instantiate
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.loggers import CSVLogger, WandbLogger

from memexp.data.spec import KIND_DESCRIPTIONS, DataSpec
from memexp.errors import CheckpointError, ConfigError
from memexp.evals.files import write_json
from memexp.tasks import TASKS
from memexp.tasks.optim import OptimizerSettings

# Fields of the data config that do not change what is learned (left out of the run key).
_DATA_FIELDS_NOT_IN_KEY = {"data_dir", "num_workers", "pin_memory", "eval_batch_size", "cache_dir"}
# Fields of the task config that only change evaluation.
_TASK_FIELDS_NOT_IN_KEY = {"max_eval_generate_batches"}


@dataclass
class RunNames:
    """The names a run is filed under: experiment, model and data choices, seed."""

    experiment: str = "default"
    model: str = "model"
    data: str = "data"
    seed: int = 0

    @property
    def label(self) -> str:
        return f"{self.model}-{self.data}-seed{self.seed}"


def _task_kind_of(factory: Callable) -> str | None:
    target = getattr(factory, "func", factory)
    return getattr(target, "task_kind", None)


def check_pairing(model_factory: Callable, data_factory: Callable, names: RunNames) -> None:
    """Stop before any work when the model's task kind differs from the data's."""
    needs, provides = _task_kind_of(model_factory), _task_kind_of(data_factory)
    if needs is None or provides is None or needs == provides:
        return
    raise ConfigError(
        f"model={names.model} is a {needs} model and needs {KIND_DESCRIPTIONS.get(needs, needs)}, "
        f"but data={names.data} provides {KIND_DESCRIPTIONS.get(provides, provides)}; pick a data option of kind {needs}"
    )


def _takes(factory: Callable, name: str) -> bool:
    try:
        return name in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False


def build_task(
    model_factory: Callable,
    spec: DataSpec,
    optim: OptimizerSettings,
    carry_state: bool | str = "auto",
    max_eval_generate_batches: int | None = None,
):
    """The LightningModule for this model on this data.

    carry_state: causal LM only (see CausalLMTask). max_eval_generate_batches: dialogue only
    (see DialogueTask); None keeps the task's default.
    """
    model_kwargs: dict[str, Any] = {"vocab_size": spec.vocab_size}
    if spec.pad_id is not None and _takes(model_factory, "pad_id"):
        model_kwargs["pad_id"] = spec.pad_id
    net = model_factory(**model_kwargs)
    max_len = getattr(net, "max_len", None)
    if max_len is not None and spec.seq_len is not None and spec.seq_len > max_len:
        raise ConfigError(
            f"data.seq_len={spec.seq_len} is longer than model.max_len={max_len}; raise model.max_len or lower data.seq_len"
        )
    task_cls = TASKS[spec.task_kind]
    kwargs: dict[str, Any] = {}
    if spec.task_kind == "causal_lm":
        ordered = getattr(spec, "ordered_windows", False)
        if carry_state == "auto":
            carry_state = bool(getattr(net, "carries_state", False) and ordered)
        elif carry_state and not getattr(net, "carries_state", False):
            raise ConfigError(f"task.carry_state=true needs a model that carries state; {type(net).__name__} does not")
        elif carry_state and not ordered:
            raise ConfigError("task.carry_state=true needs in-order windows; set data.windows=stream")
        kwargs["carry_state"] = bool(carry_state)
    elif carry_state not in ("auto", False):
        raise ConfigError(f"task.carry_state={carry_state} applies to causal LM runs only; this is a {spec.task_kind} run")
    if spec.task_kind == "dialogue" and max_eval_generate_batches is not None:
        kwargs["max_eval_generate_batches"] = int(max_eval_generate_batches)
    return task_cls(net, spec, optim=optim, **kwargs)


def run_key(cfg: dict) -> str:
    """A short hash of what determines the learned weights: model, data, optimiser, task, seed."""
    data = {k: v for k, v in (cfg.get("data") or {}).items() if k not in _DATA_FIELDS_NOT_IN_KEY}
    task = {k: v for k, v in (cfg.get("task") or {}).items() if k not in _TASK_FIELDS_NOT_IN_KEY}
    payload = {k: cfg.get(k) for k in ("model", "optim", "seed")} | {"data": data, "task": task}
    if (cfg.get("meta") or {}).get("use"):  # the meta-learning outer loop changes the weights too
        payload["meta"] = cfg["meta"]
    return hashlib.sha1(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:8]


def checkpoint_dir(cfg: dict, names: RunNames, root: str | Path) -> Path:
    """outputs/checkpoints/<experiment>/<model>-<data>-seed<seed>-<key>: the same command, the same folder."""
    return Path(root) / names.experiment / f"{names.label}-{run_key(cfg)}"


def _loggers(logger_factories: dict | None, run_dir: Path, names: RunNames) -> list:
    loggers = []
    for name, factory in (logger_factories or {}).items():
        if factory is None:
            continue
        if name == "wandb":
            loggers.append(factory(save_dir=str(run_dir), group=names.experiment, name=names.label))
        else:
            loggers.append(factory(save_dir=str(run_dir)))
    if not any(isinstance(lg, CSVLogger) for lg in loggers):
        loggers.insert(0, CSVLogger(save_dir=str(run_dir), name="csv", version=""))
    return loggers


def _callbacks(callback_configs: dict | None, ckpt_dir: Path) -> list:
    callbacks = []
    for cb in (callback_configs or {}).values():
        if cb is None:
            continue
        if callable(cb) and not isinstance(cb, L.Callback):  # a partial: the checkpoint callback
            cb = cb(dirpath=str(ckpt_dir))
        callbacks.append(cb)
    return callbacks


def _finish_loggers(loggers: list) -> None:
    for lg in loggers:
        if isinstance(lg, WandbLogger):
            import wandb

            wandb.finish()


def _plain(metrics: dict) -> dict:
    return {k: float(v) for k, v in sorted(metrics.items()) if isinstance(v, (torch.Tensor, float, int))}


def train_and_test(
    cfg: dict,
    names: RunNames,
    model: Callable,
    data: Callable,
    optim: OptimizerSettings,
    trainer: Callable,
    run_dir: str | Path,
    checkpoint_root: str | Path,
    logger: dict | None = None,
    callbacks: dict | None = None,
    carry_state: bool | str = "auto",
    max_eval_generate_batches: int | None = None,
    fresh: bool = False,
    ckpt_dir: str | Path | None = None,
    sample_tokens: int = 0,
    sample_prompt: str = "\n",
    after_test: Callable | None = None,
    extra_callbacks: list | None = None,
) -> dict:
    """Fit, test, sample; returns {"metrics": {...}, "ckpt_dir": ..., "sample": ..., "resumed_from_step": ...}.

    after_test(task, datamodule, loggers, run_dir, names) -> dict runs after the test, while the
    loggers are still open (studies log their tables there); its result is stored as "study".
    extra_callbacks are added to the trainer (e.g. the meta-learning outer loop).
    """
    check_pairing(model, data, names)
    L.seed_everything(names.seed, workers=True, verbose=False)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_dir = Path(ckpt_dir) if ckpt_dir else checkpoint_dir(cfg, names, checkpoint_root)

    datamodule = data()
    datamodule.prepare_data()
    datamodule.setup("fit")
    task = build_task(model, datamodule.spec, optim, carry_state, max_eval_generate_batches)
    task.run_config = cfg | {"names": vars(names)}

    last = ckpt_dir / "last.ckpt"
    if fresh and ckpt_dir.exists():
        shutil.rmtree(ckpt_dir)
    resume_step = None
    if last.exists():
        resume_step = _checked_resume(last, cfg)
    ckpt_dir.mkdir(parents=True, exist_ok=True)

    loggers = _loggers(logger, run_dir, names)
    keywords = getattr(trainer, "keywords", {})
    preset_callbacks = list(keywords.get("callbacks") or [])  # the preset's progress bar
    if keywords.get("enable_progress_bar") is False:
        preset_callbacks = [cb for cb in preset_callbacks if not isinstance(cb, ProgressBar)]
    trainer_obj: L.Trainer = trainer(
        logger=loggers,
        callbacks=preset_callbacks + _callbacks(callbacks, ckpt_dir) + list(extra_callbacks or []),
        default_root_dir=str(run_dir),
    )
    try:
        trainer_obj.fit(task, datamodule=datamodule, ckpt_path=str(last) if last.exists() else None, weights_only=True)
        if trainer_obj.interrupted:
            raise KeyboardInterrupt
        trainer_obj.save_checkpoint(last)  # the final state whatever the cadence; collective (rank 0 writes)
        fit_metrics = _plain(trainer_obj.callback_metrics)
        trainer_obj.test(task, datamodule=datamodule, verbose=False, weights_only=True)
        metrics = fit_metrics | _plain(trainer_obj.callback_metrics)
        metrics["global_step"] = float(trainer_obj.global_step)
        study = after_test(task, datamodule, loggers, run_dir, names) if after_test and trainer_obj.is_global_zero else None
    finally:
        _finish_loggers(loggers)

    sample = None
    if sample_tokens and trainer_obj.is_global_zero:
        tok = datamodule.spec.tokenizer
        ids = task.generate(tok.encode(sample_prompt), max_new_tokens=sample_tokens, temperature=0.8, seed=names.seed)
        sample = sample_prompt + tok.decode(ids)
    result = {"metrics": metrics, "ckpt_dir": str(ckpt_dir), "sample": sample, "resumed_from_step": resume_step, "run_dir": str(run_dir),
              "names": vars(names)}
    if study is not None:
        result["study"] = study
    if trainer_obj.is_global_zero:
        write_json(result, run_dir / "metrics.json")
    return result


def _read_checkpoint(path: Path) -> dict:
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist; expected a .ckpt written by memexp.run (see outputs/checkpoints/)")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated file, not a torch file, pickled objects
        raise CheckpointError(f"checkpoint {path} could not be read ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    if not isinstance(ck, dict) or "memexp" not in ck or "state_dict" not in ck:
        raise CheckpointError(f"checkpoint {path} is not a memexp checkpoint (no 'memexp' entry); expected a .ckpt written by memexp.run")
    return ck


def _checked_resume(last: Path, cfg: dict) -> int:
    """The step to resume from, after checking that the checkpoint holds this run's model."""
    ck = _read_checkpoint(last)
    saved = (ck["memexp"].get("config") or {}).get("model")
    if saved is not None and saved != cfg.get("model"):
        raise CheckpointError(
            f"checkpoint {last} was trained with another model config than this run's; pass fresh=true to start over "
            f"or ckpt_dir=<another folder>"
        )
    return int(ck.get("global_step", 0))


@dataclass
class LoadedRun:
    task: L.LightningModule
    datamodule: L.LightningDataModule
    config: dict
    checkpoint: dict


def load_checkpoint(
    path: str | Path,
    data_dir: str | None = None,
    expect_model: str | None = None,
    data_overrides: dict | None = None,
    data_path: str | None = None,
) -> LoadedRun:
    """Rebuild the task (with its weights) and the data module (with its tokenizer) of a checkpoint.

    data_path: other data to evaluate on, set as whichever of the data config's `path` (text)
    or `source` (dialogues) it has.
    """
    path = Path(path)
    ck = _read_checkpoint(path)
    meta = ck["memexp"]
    cfg = meta["config"]
    saved_model = cfg.get("names", {}).get("model")
    if expect_model is not None and saved_model is not None and expect_model != saved_model:
        raise CheckpointError(f"checkpoint {path} holds a model={saved_model} model, not model={expect_model}")
    data_cfg = dict(cfg["data"]) | (data_overrides or {})
    if data_dir is not None:
        data_cfg["data_dir"] = data_dir
    if data_path is not None:
        field = next((f for f in ("path", "source") if f in data_cfg), None)
        if field is None:
            raise ConfigError(f"data_path: the data of checkpoint {path} is not read from a file (its config has no path or source)")
        data_cfg[field] = data_path
    datamodule = instantiate(data_cfg)()
    datamodule.restore_tokenizer(meta["tokenizer"])
    optim = instantiate(cfg["optim"]) if cfg.get("optim") else OptimizerSettings()
    model_factory = instantiate(cfg["model"])
    task_cfg = cfg.get("task") or {}
    task = build_task(model_factory, datamodule.spec, optim, carry_state=False,
                      max_eval_generate_batches=task_cfg.get("max_eval_generate_batches"))
    try:
        task.load_state_dict(ck["state_dict"])
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {path} does not fit its own model config: {str(e).splitlines()[0]}") from None
    task.run_config = cfg
    return LoadedRun(task=task, datamodule=datamodule, config=cfg, checkpoint=ck)
