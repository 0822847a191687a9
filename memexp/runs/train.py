"""Train and test one run: the body of `python -m memexp.run`.

`train_and_test` (the train driver) builds the data, checks that the model fits it, builds the task, fits with a
stable checkpoint folder (so the same command resumes from `last.ckpt`), tests, samples, and returns a `RunResult`
(also written to `<run_dir>/metrics.json`). It takes a `RunSpec` (memexp.runs.spec) whose pieces are already-built
factories (partials from the config store), never a Hydra config: tests and scripts call it directly.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelSummary, ProgressBar
from lightning.pytorch.trainer.states import TrainerFn, TrainerStatus
from lightning.pytorch.utilities.exceptions import SIGTERMException

from memexp.console import say
from memexp.files import write_json
from memexp.models.sampling import Sampling
from memexp.runs import keys
from memexp.runs.build import RunNames, build_task, check_pairing
from memexp.runs.checkpoints import resume_point
from memexp.runs.loggers import finish_loggers, git_commit, log_to_wandb, make_loggers
from memexp.runs.precision import hold_frozen_in_bf16
from memexp.runs.signals import EXIT_SIGTERM, SaveOnStop, stopped_message
from memexp.runs.spec import RunResult, RunSpec


def limited_batches(cfg: Mapping[str, Any]) -> dict:
    """The trainer settings that cut batches (limit_*_batches other than all, overfit_batches), and the debug preset."""
    trainer = cfg.get("trainer") or {}
    limits = {}
    for k in ("limit_train_batches", "limit_val_batches", "limit_test_batches"):
        v = trainer.get(k)
        if v is not None and not (isinstance(v, float) and v == 1.0):  # 1.0 is all batches, the int 1 one batch
            limits[k] = v
    if trainer.get("overfit_batches") not in (None, 0, 0.0):
        limits["overfit_batches"] = trainer["overfit_batches"]
    debug = ((cfg.get("run") or {}).get("choices") or {}).get("debug")
    return limits | ({"debug": debug} if debug else {})


def run_key(cfg: Mapping[str, Any]) -> str:
    """The run key of `cfg` (memexp.runs.keys), batch limits and debug preset included."""
    return keys.run_key(cfg, limited_batches(cfg))


def checkpoint_dir(cfg: Mapping[str, Any], names: RunNames, root: str | Path) -> Path:
    """outputs/checkpoints/<experiment>/<model>-<data>-seed<seed>[-debug-<preset>]-<key>: the same command, the same
    folder; a debug preset's runs are named for it. A folder named by the previous key scheme is resumed there."""
    limits = limited_batches(cfg)
    debug = limits.get("debug")
    stem = Path(root) / names.experiment / f"{names.label}{f'-debug-{debug}' if debug else ''}"
    folder = stem.with_name(f"{stem.name}-{keys.run_key(cfg, limits)}")
    legacy = stem.with_name(f"{stem.name}-{keys.legacy_run_key(cfg, limits)}")
    return legacy if not folder.exists() and legacy.exists() else folder


def preset_callbacks(trainer: Callable) -> list[L.Callback]:
    """The callbacks a trainer preset carries (its progress bar and model summary), minus those turned off
    (trainer.enable_progress_bar=false, trainer.enable_model_summary=false)."""
    keywords = getattr(trainer, "keywords", {})
    callbacks = list(keywords.get("callbacks") or [])
    if keywords.get("enable_progress_bar") is False:
        callbacks = [cb for cb in callbacks if not isinstance(cb, ProgressBar)]
    if keywords.get("enable_model_summary") is False:
        callbacks = [cb for cb in callbacks if not isinstance(cb, ModelSummary)]
    return callbacks


def _rows(batch: Any) -> int:
    """Samples in a batch: the first dimension of its first tensor."""
    tensors = [v for v in (batch.values() if isinstance(batch, Mapping) else batch) if isinstance(v, torch.Tensor)]
    return int(tensors[0].shape[0]) if tensors and tensors[0].dim() else 1


def _tokens(batch: Any) -> int:
    """Tokens a batch trains on: the input ids of a language model's batch, else its samples."""
    if isinstance(batch, Mapping) and isinstance(batch.get("input"), torch.Tensor):
        return int(batch["input"].numel())
    return _rows(batch)


def throughput_monitor() -> L.Callback:
    """Lightning's ThroughputMonitor: train/device/batches_per_sec, samples_per_sec and items_per_sec (tokens) over the
    last 20 training steps, validation time left out, at each log step (CSV, W&B); also the time validation and
    the test took (validate/time, test/time)."""
    from lightning.pytorch.callbacks import ThroughputMonitor

    return ThroughputMonitor(batch_size_fn=_rows, length_fn=_tokens, window_size=20)


def _callbacks(callback_configs: Mapping[str, Any] | None, ckpt_dir: Path, selection: dict | None = None) -> list[L.Callback]:
    """The configured callbacks; the checkpoint partial gets the run's folder and, for a task that
    selects its model on a validation metric (`task.selection`), that metric, saved at each validation."""
    callbacks = []
    for cb in (callback_configs or {}).values():
        if cb is None:
            continue
        if callable(cb) and not isinstance(cb, L.Callback):  # a partial: the checkpoint callback
            cb = cb(dirpath=str(ckpt_dir), **(selection or {}))
        callbacks.append(cb)
    return callbacks


def _best_checkpoint(trainer: L.Trainer) -> str | None:
    """The best checkpoint of the monitored metric, when one was saved."""
    cb = trainer.checkpoint_callback
    if cb is None or getattr(cb, "monitor", None) is None:
        return None
    path = getattr(cb, "best_model_path", None)
    return path if path and Path(path).is_file() else None


def tested_checkpoint(trainer: L.Trainer, test_ckpt: str) -> tuple[str | None, int]:
    """(the checkpoint to test, its step): with "best" the best by the monitored metric (when a monitor is
    set and a validation saved one), else the final weights (None: what the trainer holds)."""
    best = _best_checkpoint(trainer) if test_ckpt == "best" else None
    if best is None:
        return None, trainer.global_step
    return best, int(torch.load(best, map_location="cpu", weights_only=True, mmap=True)["global_step"])


def plain_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Lightning's callback metrics as sorted plain floats."""
    return {k: float(v) for k, v in sorted(metrics.items()) if isinstance(v, (torch.Tensor, float, int))}


def parameter_counts(net: torch.nn.Module) -> dict[str, float]:
    """Trained and frozen parameter counts (ExplicitLM trains its memory only; the backbone is frozen)."""
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in net.parameters() if not p.requires_grad)
    return {"params/trainable": float(trainable), "params/frozen": float(frozen)}


def frozen_summary(net: torch.nn.Module) -> str | None:
    """One line about the parts of a network that stay frozen in eval mode while the rest trains (ExplicitLM's
    backbone), or None when every module trains."""
    frozen = {name: m for name, m in net.named_children() if not m.training}
    if not frozen:
        return None
    modules = sum(1 for m in net.modules() if not m.training)
    params = sum(p.numel() for m in frozen.values() for p in m.parameters())
    return f"frozen: {', '.join(frozen)} ({params:,} parameters, {modules} modules) stay in eval mode and are not trained"


class FinalStateAsLastBatch(L.Callback):
    """A state saved after a fit (last.ckpt) resumes like one saved at the end of its last step.

    A fit ends after Lightning's bookkeeping of its last batch and, when max_steps or the data ended an epoch, of
    that epoch. Lightning resumes a state in which every batch completed by replaying part of that bookkeeping: the
    steps after it were logged one higher, and at an epoch's end without a validation on its last batch the resumed
    run trained one batch of the next epoch and then started the one after it, so its batches were not an
    uninterrupted run's. Lightning resumes cleanly from the state saved at the end of a training batch (what
    SaveOnStop saves), so the final state is written as that state: the last batch not yet counted completed, its
    logging step not yet counted, and its epoch, when counted finished, not yet. Weights, optimiser, global step and
    the data position are not touched.
    """

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        after_fit = trainer.state.fn == TrainerFn.FITTING and trainer.state.status == TrainerStatus.FINISHED
        loop = checkpoint.get("loops", {}).get("fit_loop")
        if not after_fit or not loop:
            return  # saved during the fit (a validation's, SaveOnStop's): Lightning resumes those as they are
        batches, epochs = loop["epoch_loop.batch_progress"], loop["epoch_progress"]
        done = batches["total"]
        if not done["ready"] or len({done[k] for k in ("ready", "started", "processed", "completed")}) > 1:
            return  # nothing trained, or a batch still open: Lightning resumes it as it is
        for part in ("total", "current"):
            batches[part]["completed"] -= 1
        loop["epoch_loop.state_dict"]["_batches_that_stepped"] -= 1
        if epochs["current"]["processed"] >= epochs["current"]["started"] > 0:  # the epoch was counted finished
            for part in ("total", "current"):
                epochs[part]["processed"] -= 1
                epochs[part]["completed"] -= 1


@dataclass
class _Prepared:
    """A run ready to fit: its data, task, checkpoint folder, where it resumes from, and whether it already finished."""

    datamodule: L.LightningDataModule
    task: L.LightningModule
    ckpt_dir: Path
    resume_from: Path | None
    resume_step: int | None
    finished: bool


def _prepare(spec: RunSpec) -> _Prepared:
    """Seed, build the data and the task (precision and compile as the run says), and find the checkpoint to resume."""
    cfg, names = spec.cfg, spec.names
    check_pairing(spec.model, spec.data, names)
    L.seed_everything(names.seed, workers=True, verbose=False)
    spec.run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_dir = spec.ckpt_dir or checkpoint_dir(cfg, names, spec.checkpoint_root)
    datamodule = spec.data()
    datamodule.prepare_data()
    datamodule.setup("fit")
    task = build_task(spec.model, datamodule.spec, spec.optim, spec.task)
    precision = getattr(spec.trainer, "keywords", {}).get("precision")
    if str(precision) == "bf16-mixed" and (held := hold_frozen_in_bf16(task.net)):
        say(f"frozen in bf16 (bf16-mixed; not trained): {', '.join(held)}")
    if frozen := frozen_summary(task.net):
        say(frozen)
    if task.settings.compile:
        task.net.compile()
    task.run_config = cfg | {"names": vars(names)}
    if spec.fresh and ckpt_dir.exists():
        shutil.rmtree(ckpt_dir)
    resume_from, resume_step, stopped = resume_point(ckpt_dir, cfg) if ckpt_dir.exists() else (None, None, False)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    max_steps = getattr(spec.trainer, "keywords", {}).get("max_steps", -1)
    finished = resume_step is not None and max_steps is not None and 0 < max_steps <= resume_step
    if finished:
        say(
            f"this run finished at step {resume_step} (trainer.max_steps={max_steps}): testing {ckpt_dir} again without "
            f"training; raise trainer.max_steps to continue it, or pass fresh=true to start over",
        )
    elif stopped:
        finished = True
        say(
            f"this run stopped early at step {resume_step} (task.stop_at_acc={spec.task.get('stop_at_acc')}): testing "
            f"{ckpt_dir} again without training; pass fresh=true to start over",
        )
    return _Prepared(datamodule, task, ckpt_dir, resume_from, resume_step, finished)


def _fit_and_test(spec: RunSpec, run: _Prepared, trainer_obj: L.Trainer, loggers: list) -> tuple[dict, dict | None]:
    """Fit (or resume), save last.ckpt, test the chosen checkpoint; (metrics, the study's result or None)."""
    task, datamodule = run.task, run.datamodule
    resume = str(run.resume_from) if run.resume_from else None
    if run.finished:  # restore it whole (weights, callbacks' best checkpoint) and train no step past where it ended
        trainer_obj.fit_loop.epoch_loop.max_steps = run.resume_step
    trainer_obj.fit(task, datamodule=datamodule, ckpt_path=resume, weights_only=True)
    if trainer_obj.interrupted:
        raise KeyboardInterrupt
    # the final state (optimizer too, to resume) whatever the cadence; collective (rank 0 writes)
    trainer_obj.save_checkpoint(run.ckpt_dir / "last.ckpt", weights_only=False)  # as FinalStateAsLastBatch writes it
    fit_metrics = plain_metrics(trainer_obj.callback_metrics)
    if run.finished and not any(k.startswith("val/") for k in fit_metrics):
        # a finished run trains nothing, so no validation ran: validate the final weights, as the last check did
        trainer_obj.validate(task, datamodule=datamodule, verbose=False)
        fit_metrics |= plain_metrics(trainer_obj.callback_metrics)
    tested, tested_step = tested_checkpoint(trainer_obj, task.settings.test_ckpt)
    trainer_obj.test(task, datamodule=datamodule, ckpt_path=tested, verbose=False, weights_only=True)
    metrics = fit_metrics | plain_metrics(trainer_obj.callback_metrics)
    metrics["global_step"] = float(trainer_obj.global_step)
    metrics["tested_step"] = float(tested_step)
    counts = parameter_counts(task.net)
    metrics |= counts
    log_to_wandb(loggers, {}, summary=counts)
    study = None
    if spec.after_test and trainer_obj.is_global_zero:
        with trainer_obj.precision_plugin.forward_context():  # the study evaluates in the run's precision
            study = spec.after_test(task, datamodule, loggers, spec.run_dir, spec.names)
    return metrics, study


def _sample(spec: RunSpec, run: _Prepared, trainer_obj: L.Trainer) -> str | None:
    """The text sample at the end of a run (a task that generates, on rank 0), in the run's precision."""
    if not spec.sample.tokens or not trainer_obj.is_global_zero or not hasattr(run.task, "generate"):
        return None
    tok, prompt = run.datamodule.spec.tokenizer, spec.sample.prompt
    with trainer_obj.precision_plugin.forward_context():
        sampling = Sampling(temperature=0.8, seed=spec.names.seed)
        ids = run.task.generate(tok.encode(prompt), max_new_tokens=spec.sample.tokens, sampling=sampling)
    return prompt + tok.decode(ids)


def train_and_test(spec: RunSpec) -> RunResult:
    """The train driver: fit, test, sample; the result is also written to `<run_dir>/metrics.json`.

    `spec.after_test(task, datamodule, loggers, run_dir, names) -> dict` runs after the test, while the loggers are
    still open (studies log their tables there); its result is stored as `study`. The task's `test_ckpt` picks the
    tested checkpoint: "best" by the monitored metric (a classification task's selection metric, else the checkpoint
    callback's monitor; the final weights when none is set), "last" the final weights. The tested step is in the
    metrics as `tested_step`; evaluations after the test see those weights.
    """
    run = _prepare(spec)
    last = run.ckpt_dir / "last.ckpt"
    hparams = spec.cfg | {"names": vars(spec.names), "ckpt_dir": str(run.ckpt_dir)}
    hparams["run"] = dict(spec.cfg.get("run") or {}) | {"git_commit": git_commit(Path(__file__).parent)}
    loggers = make_loggers(spec.logger, spec.run_dir, spec.names, hparams, resume_step=run.resume_step)
    stop = SaveOnStop(last)  # SIGTERM / Ctrl-C: last.ckpt at the next step boundary, then exit 143
    selection = getattr(run.task, "selection", None)  # classification: the best validation macro F1 is tested
    trainer_obj: L.Trainer = spec.trainer(
        logger=loggers,
        callbacks=preset_callbacks(spec.trainer)
        + _callbacks(spec.callbacks, run.ckpt_dir, selection)
        + list(spec.extra_callbacks)
        + [throughput_monitor(), stop, FinalStateAsLastBatch()],
        default_root_dir=str(spec.run_dir),
    )
    try:
        metrics, study = _fit_and_test(spec, run, trainer_obj, loggers)
    except SIGTERMException:  # Lightning stopped the fit (or the test) at a step boundary; SaveOnStop saved last.ckpt
        if trainer_obj.is_global_zero and stop.saved_step is not None:
            print(stopped_message(last, stop.saved_step), file=sys.stderr, flush=True)
        stop.hand_over()  # preempted on SLURM: submitit requeues the job now that last.ckpt is saved (it exits; `finally` still runs)
        raise SystemExit(EXIT_SIGTERM) from None
    finally:
        finish_loggers(loggers)
    result = RunResult(
        metrics=metrics,
        run_dir=str(spec.run_dir),
        names=vars(spec.names),
        ckpt_dir=str(run.ckpt_dir),
        sample=_sample(spec, run, trainer_obj),
        resumed_from_step=run.resume_step,
        retested=run.finished or None,
        threads=torch.get_num_threads(),  # at the end (trainer.threads=auto may have followed the machine)
        study=study,
    )
    if trainer_obj.is_global_zero:
        write_json(result.as_dict(), spec.run_dir / "metrics.json")
    return result
