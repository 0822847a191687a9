"""Continual learning A -> B -> C: train on three tasks in sequence, test on all after each stage.

One LightningModule is carried through the stages; each stage is a fresh `Trainer.fit` of
`trainer.max_steps` steps on that task's data. The optimiser restarts at every stage (new
AdamW moments and warmup/cosine schedule, as `configure_optimizers` builds them): a new task
arrives like a new training run on the same weights. HOPE's CMS gate keeps its pending sums.

Matrices R[i][j] = metric on task j's test split after training stage i (i, j in A, B, C).
With T tasks and the accuracy matrix:

    average forgetting  = mean_{j < T-1} ( max_{l in [j, T-2]} R[l][j] - R[T-1][j] )   (Chaudhry et al. 2018)
    backward transfer   = mean_{j < T-1} ( R[T-1][j] - R[j][j] )                        (Lopez-Paz & Ranzato 2017)
    average accuracy    = mean_j R[T-1][j]

(For the loss matrix, forgetting is the rise of the loss: R[T-1][j] - min_{l in [j, T-2]} R[l][j].)
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import lightning as L
from lightning.pytorch.callbacks import ProgressBar

from memexp.errors import ConfigError


def continual_summary(acc: Sequence[Sequence[float]], loss: Sequence[Sequence[float]] | None = None) -> dict:
    """Average forgetting, backward transfer and final average accuracy of an accuracy matrix."""
    T = len(acc)
    if T < 2 or any(len(r) != T for r in acc):
        raise ConfigError(f"a continual matrix must be T x T with T >= 2; got {[len(r) for r in acc]}")
    earlier = range(T - 1)
    forgetting = sum(max(acc[l][j] for l in range(j, T - 1)) - acc[T - 1][j] for j in earlier) / (T - 1)
    bwt = sum(acc[T - 1][j] - acc[j][j] for j in earlier) / (T - 1)
    out = {"avg_forgetting": forgetting, "backward_transfer": bwt, "avg_final_accuracy": sum(acc[T - 1]) / T}
    if loss is not None:
        out["avg_loss_forgetting"] = sum(loss[T - 1][j] - min(loss[l][j] for l in range(j, T - 1)) for j in earlier) / (T - 1)
        out["avg_final_loss"] = sum(loss[T - 1]) / T
    return out


def run_continual(cfg: dict, names, model: Callable, data: Callable, optim, trainer: Callable, run_dir: str | Path,
                  logger: dict | None = None, tasks: Sequence[str] = ("A", "B", "C"), carry_state: bool | str = False) -> dict:
    """Train one model on tasks in sequence (data partial called with task_id=i) and fill the matrices."""
    from memexp.evals.plots import plot_continual_heatmap
    from memexp.evals.files import write_json
    from memexp.evals.studies import log_to_wandb
    from memexp.experiment import _finish_loggers, _loggers, build_task, check_pairing

    check_pairing(model, data, names)
    L.seed_everything(names.seed, workers=True, verbose=False)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    modules = [data(task_id=i) for i in range(len(tasks))]
    task = build_task(model, modules[0].spec, optim, carry_state=False)
    task.run_config = cfg | {"names": vars(names)}
    loggers = _loggers(logger, run_dir, names)
    keywords = getattr(trainer, "keywords", {})
    preset_callbacks = list(keywords.get("callbacks") or [])
    if keywords.get("enable_progress_bar") is False:
        preset_callbacks = [cb for cb in preset_callbacks if not isinstance(cb, ProgressBar)]
    T = len(tasks)
    acc = [[0.0] * T for _ in range(T)]
    loss = [[0.0] * T for _ in range(T)]
    try:
        for i, dm in enumerate(modules):
            t = trainer(logger=loggers, callbacks=preset_callbacks, default_root_dir=str(run_dir), enable_checkpointing=False)
            t.fit(task, datamodule=dm)
            for j, other in enumerate(modules):
                res = t.test(task, dataloaders=other.test_dataloader(), verbose=False)[0]
                acc[i][j], loss[i][j] = float(res["test/acc"]), float(res["test/loss"])
            print(f"after {tasks[i]}: " + "  ".join(f"{tasks[j]} acc {acc[i][j]:.3f} loss {loss[i][j]:.3f}" for j in range(T)),
                  flush=True)
        summary = continual_summary(acc, loss)
        result = {"tasks": list(tasks), "accuracy": acc, "loss": loss, **summary,
                  "steps_per_stage": int(t.max_steps), "optimizer": "restarted each stage"}
        png = plot_continual_heatmap({names.model: acc}, list(tasks), run_dir / "reports" / "continual_heatmap.png")
        rows = [{"after": tasks[i], "task": tasks[j], "accuracy": acc[i][j], "loss": loss[i][j]} for i in range(T) for j in range(T)]
        log_to_wandb(loggers, {"continual/matrix": rows}, {"continual/heatmap": png}, {f"continual/{k}": v for k, v in summary.items()})
    finally:
        _finish_loggers(loggers)
    out = {"metrics": {f"continual/{k}": v for k, v in summary.items()}, "run_dir": str(run_dir), "names": vars(names),
           "study": {"continual": result}, "ckpt_dir": None, "sample": None, "resumed_from_step": None}
    write_json(out, run_dir / "metrics.json")
    return out
