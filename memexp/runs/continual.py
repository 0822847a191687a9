"""Continual learning A -> B -> C: train on tasks in sequence, test on all of them after each stage.

One LightningModule is carried through the stages; each stage is a fresh `Trainer.fit` of
`trainer.max_steps` steps on that task's data. The optimiser restarts at every stage (new
AdamW moments and warmup/cosine schedule, as `configure_optimizers` builds them): a new task
arrives like a new training run on the same weights. HOPE's CMS gate keeps its pending sums.
The matrices and their metrics (forgetting, backward transfer) are `memexp.evals.continual`'s.

A finished study leaves `continual.json` in the run's checkpoint folder (the same folder for the same model, data,
optimiser, seed and steps per stage); the same command again reads it instead of training (`fresh=true` reruns),
so a sweep interrupted part-way redoes only what had not finished.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import lightning as L

from memexp.console import say
from memexp.evals.continual import continual_summary
from memexp.evals.plots import plot_continual_heatmap
from memexp.files import write_json
from memexp.runs.build import RunNames, build_task, check_pairing
from memexp.runs.loggers import finish_loggers, log_to_wandb, make_loggers
from memexp.runs.train import checkpoint_dir, preset_callbacks
from memexp.tasks.optim import OptimizerSettings


def run_continual(
    cfg: dict,
    names: RunNames,
    model: Callable,
    data: Callable,
    optim: OptimizerSettings,
    trainer: Callable,
    run_dir: str | Path,
    logger: Mapping[str, Callable | None] | None = None,
    tasks: Sequence[str] = ("A", "B", "C"),
    checkpoint_root: str | Path | None = None,
    fresh: bool = False,
    board: bool = False,
) -> dict:
    """Train one model on tasks in sequence (data partial called with task_id=i) and fill the matrices.

    With `checkpoint_root`, the result is kept in <checkpoint folder>/continual.json and a rerun returns it;
    `board` marks the result as a leaderboard column."""
    check_pairing(model, data, names)
    steps = getattr(trainer, "keywords", {}).get("max_steps")
    done = checkpoint_dir(cfg, names, checkpoint_root) / "continual.json" if checkpoint_root else None
    if done is not None and fresh:
        done.unlink(missing_ok=True)
    if done is not None and done.is_file():
        kept = json.loads(done.read_text())
        if kept["study"]["continual"].get("steps_per_stage") == steps:
            say(f"finished: the continual study of this model, data and seed is in {done} (fresh=true reruns it)")
            out = kept | {"run_dir": str(run_dir)}
            write_json(out, Path(run_dir) / "metrics.json")
            return out
    L.seed_everything(names.seed, workers=True, verbose=False)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    modules = [data(task_id=i) for i in range(len(tasks))]
    task = build_task(model, modules[0].spec, optim, carry_state=False)
    task.run_config = cfg | {"names": vars(names)}
    loggers = make_loggers(
        logger, run_dir, names, cfg | {"names": vars(names), "study": {"kind": "continual", "tasks": list(tasks)}}
    )
    callbacks = preset_callbacks(trainer)
    T = len(tasks)
    acc = [[0.0] * T for _ in range(T)]
    loss = [[0.0] * T for _ in range(T)]
    try:
        for i, dm in enumerate(modules):
            t = trainer(logger=loggers, callbacks=callbacks, default_root_dir=str(run_dir), enable_checkpointing=False)
            t.fit(task, datamodule=dm)
            for j, other in enumerate(modules):
                res = t.test(task, dataloaders=other.test_dataloader(), verbose=False)[0]
                acc[i][j], loss[i][j] = float(res["test/acc"]), float(res["test/loss"])
            say(
                f"after {tasks[i]}: " + "  ".join(f"{tasks[j]} acc {acc[i][j]:.3f} loss {loss[i][j]:.3f}" for j in range(T)),
            )
        summary = continual_summary(acc, loss)
        result = {
            "tasks": list(tasks),
            "accuracy": acc,
            "loss": loss,
            **summary,
            "steps_per_stage": int(t.max_steps),
            "optimizer": "restarted each stage",
        }
        png = plot_continual_heatmap({names.model: acc}, list(tasks), run_dir / "reports" / "continual_heatmap.png")
        rows = [
            {"after": tasks[i], "task": tasks[j], "accuracy": acc[i][j], "loss": loss[i][j]} for i in range(T) for j in range(T)
        ]
        log_to_wandb(
            loggers, {"continual/matrix": rows}, {"continual/heatmap": png}, {f"continual/{k}": v for k, v in summary.items()}
        )
    finally:
        finish_loggers(loggers)
    out = {
        "metrics": {f"continual/{k}": v for k, v in summary.items()},
        "run_dir": str(run_dir),
        "names": vars(names),
        "study": {"continual": result} | ({"board": True} if board else {}),
        "ckpt_dir": None,
        "result_file": str(done) if done is not None else None,
        "sample": None,
        "resumed_from_step": None,
    }
    write_json(out, run_dir / "metrics.json")
    if done is not None:
        done.parent.mkdir(parents=True, exist_ok=True)
        write_json(out, done)
    return out
