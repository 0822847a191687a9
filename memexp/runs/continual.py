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
from collections.abc import Sequence
from pathlib import Path

import lightning as L

from memexp.console import say
from memexp.evals.continual import continual_summary
from memexp.evals.plots import plot_continual_heatmap
from memexp.files import write_json
from memexp.runs.build import build_task, check_pairing
from memexp.runs.loggers import finish_loggers, log_to_wandb, make_loggers
from memexp.runs.spec import ContinualStudy, RunResult, RunSpec
from memexp.runs.train import checkpoint_dir, preset_callbacks


def _finished(spec: RunSpec, done: Path | None, steps: int | None) -> RunResult | None:
    """The kept result of this study when it finished before at the same steps per stage (fresh=true drops it)."""
    if done is not None and spec.fresh:
        done.unlink(missing_ok=True)
    if done is None or not done.is_file():
        return None
    kept = json.loads(done.read_text())
    if kept["study"]["continual"].get("steps_per_stage") != steps:
        return None
    say(f"finished: the continual study of this model, data and seed is in {done} (fresh=true reruns it)")
    result = RunResult.from_dict(kept | {"run_dir": str(spec.run_dir)})
    write_json(result.as_dict(), spec.run_dir / "metrics.json")
    return result


def _stages(spec: RunSpec, task: L.LightningModule, modules: list, tasks: Sequence[str], loggers: list) -> tuple[list, list, int]:
    """Fit each stage in turn and test on every task after it: (accuracy matrix, loss matrix, steps per stage)."""
    callbacks = preset_callbacks(spec.trainer)
    T = len(tasks)
    acc = [[0.0] * T for _ in range(T)]
    loss = [[0.0] * T for _ in range(T)]
    steps = 0
    for i, dm in enumerate(modules):
        t = spec.trainer(logger=loggers, callbacks=callbacks, default_root_dir=str(spec.run_dir), enable_checkpointing=False)
        t.fit(task, datamodule=dm)
        steps = int(t.max_steps)
        for j, other in enumerate(modules):
            res = t.test(task, dataloaders=other.test_dataloader(), verbose=False)[0]
            acc[i][j], loss[i][j] = float(res["test/acc"]), float(res["test/loss"])
        say(f"after {tasks[i]}: " + "  ".join(f"{tasks[j]} acc {acc[i][j]:.3f} loss {loss[i][j]:.3f}" for j in range(T)))
    return acc, loss, steps


def run_continual(spec: RunSpec) -> RunResult:
    """The continual driver: train one model on tasks in sequence (the data partial called with task_id=i) and fill
    the matrices. With a checkpoint root the result is kept in <checkpoint folder>/continual.json and a rerun
    returns it; the study's `board` marks the result as a leaderboard column."""
    study = spec.study if isinstance(spec.study, ContinualStudy) else ContinualStudy()
    tasks, names = list(study.tasks), spec.names
    check_pairing(spec.model, spec.data, names)
    steps = getattr(spec.trainer, "keywords", {}).get("max_steps")
    done = checkpoint_dir(spec.cfg, names, spec.checkpoint_root) / "continual.json" if spec.checkpoint_root else None
    if (kept := _finished(spec, done, steps)) is not None:
        return kept
    L.seed_everything(names.seed, workers=True, verbose=False)
    spec.run_dir.mkdir(parents=True, exist_ok=True)
    modules = [spec.data(task_id=i) for i in range(len(tasks))]
    task = build_task(spec.model, modules[0].spec, spec.optim, {"carry_state": False})
    task.run_config = spec.cfg | {"names": vars(names)}
    hparams = spec.cfg | {"names": vars(names), "study": {"kind": "continual", "tasks": tasks}}
    loggers = make_loggers(spec.logger, spec.run_dir, names, hparams)
    try:
        acc, loss, steps_per_stage = _stages(spec, task, modules, tasks, loggers)
        summary = continual_summary(acc, loss)
        png = plot_continual_heatmap({names.model: acc}, tasks, spec.run_dir / "reports" / "continual_heatmap.png")
        T = len(tasks)
        rows = [
            {"after": tasks[i], "task": tasks[j], "accuracy": acc[i][j], "loss": loss[i][j]} for i in range(T) for j in range(T)
        ]
        log_to_wandb(
            loggers, {"continual/matrix": rows}, {"continual/heatmap": png}, {f"continual/{k}": v for k, v in summary.items()}
        )
    finally:
        finish_loggers(loggers)
    matrices = {"tasks": tasks, "accuracy": acc, "loss": loss, **summary}
    matrices |= {"steps_per_stage": steps_per_stage, "optimizer": "restarted each stage"}
    result = RunResult(
        metrics={f"continual/{k}": v for k, v in summary.items()},
        run_dir=str(spec.run_dir),
        names=vars(names),
        study={"continual": matrices} | ({"board": True} if study.board else {}),
        result_file=str(done) if done is not None else None,
    )
    write_json(result.as_dict(), spec.run_dir / "metrics.json")
    if done is not None:
        done.parent.mkdir(parents=True, exist_ok=True)
        write_json(result.as_dict(), done)
    return result
