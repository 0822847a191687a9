"""python -m memexp.run [model=...] [data=...] [experiment=...] [debug=...] [key=value ...]

Trains a model on data, tests it, prints the metrics and a generated sample, and leaves a
checkpoint (outputs/checkpoints/...), CSV metrics and a W&B run (outputs/runs/...).
Running the same command again resumes from the checkpoint's last.ckpt; fresh=true starts over.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from memexp.console import say, to_log
from memexp.entry import launch

# Lightning and the models are imported inside the functions, so `--help` answers at once (memexp.help).
if TYPE_CHECKING:
    import lightning as L
    from lightning.pytorch.loggers import Logger
    from torch import nn

    from memexp.runs.build import RunNames
    from memexp.tasks.optim import OptimizerSettings


def _names(seed: int, experiment_name: str | None) -> RunNames:
    from hydra.core.hydra_config import HydraConfig

    from memexp.runs.build import RunNames

    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    return RunNames(
        experiment=experiment_name or choices.get("experiment") or "default",
        model=choices.get("model") or "model",
        data=choices.get("data") or "data",
        seed=seed,
    )


def _run_info(tags: list | None, experiment: str) -> dict:
    """What the loggers get besides the config: Hydra's group choices and the command line's overrides, the
    top-level `tags`, and the W&B group of a multirun (one per sweep: `<experiment>-<sweep date>-<time>`)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    info = {"tags": list(tags or [])}
    if HydraConfig.initialized():
        hc = HydraConfig.get()
        info["choices"] = {k: v for k, v in hc.runtime.choices.items() if not k.startswith("hydra/")}
        info["overrides"] = list(hc.overrides.task)
        if hc.mode == RunMode.MULTIRUN:
            from memexp.runs.loggers import sweep_group

            info["group"] = sweep_group(experiment, hc.sweep.dir)
    return info


def _parallel_launcher() -> bool:
    """True inside a multirun whose launcher runs its jobs side by side on this machine (submitit's local launcher,
    joblib); SLURM jobs get their own cores and the basic launcher runs one job at a time."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return False
    target = str(HydraConfig.get().launcher.get("_target_", ""))
    return target.endswith(("LocalLauncher", "JoblibLauncher"))


def _run_dir(paths: DictConfig) -> Path:
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path(paths.output_dir) / "runs" / "manual"


def run(
    zen_cfg: DictConfig,
    model: Callable[..., nn.Module],
    data: Callable[..., L.LightningDataModule],
    optim: OptimizerSettings,
    trainer: Callable[..., L.Trainer],
    logger: Mapping[str, Callable[..., Logger] | None] | None,
    callbacks: Mapping[str, Any] | None,
    paths: DictConfig,
    task: DictConfig,
    seed: int,
    fresh: bool,
    ckpt_dir: str | None,
    experiment_name: str | None,
    sample_tokens: int,
    sample_prompt: str,
    study: DictConfig | None = None,
    meta: DictConfig | None = None,
    tags: list | None = None,
    optimized_metric: str | None = None,
) -> dict | float:
    """The Hydra task of `python -m memexp.run` (arguments: `RunConfig`, built by hydra-zen's `zen`).

    Returns the run's result, or with `optimized_metric` that metric as a float (what a sweeper optimises).

    `model`, `data` and `trainer` are partials the run completes (vocab_size, data_dir, callbacks);
    `logger` and `callbacks` map names to partials or callbacks; `paths`, `task`, `study` and `meta`
    are config sections, read by attribute.
    """
    from memexp.runs.precision import with_precision
    from memexp.runs.threads import ThreadGovernor, apply_threads

    trainer, precision_line = with_precision(trainer)  # before any work: a precision that cannot run is one line
    follow_machine = apply_threads(zen_cfg.trainer.get("threads", "auto"), _parallel_launcher(), beside=precision_line)
    cfg = OmegaConf.to_container(zen_cfg, resolve=True)
    cfg["trainer"]["precision"] = trainer.keywords["precision"]  # `auto` as resolved: the run key holds what ran
    names = _names(seed, experiment_name)
    cfg["run"] = _run_info(tags, names.experiment)
    study = dict(study or {})
    if optimized_metric is not None:  # a sweep's metric is checked before any run trains
        from memexp.runs.build import check_metric_name

        check_metric_name(optimized_metric, data, names.data, study.get("kind"))
    if study.get("kind") == "continual":
        from memexp.runs.continual import run_continual

        result = run_continual(
            cfg,
            names,
            model=model,
            data=data,
            optim=optim,
            trainer=trainer,
            run_dir=_run_dir(paths),
            logger=logger,
            tasks=study.get("tasks", ("A", "B", "C")),
            checkpoint_root=paths.checkpoint_root,
            fresh=fresh,
            board=bool(study.get("board")),
        )
        _report(result)
        return _returned(result, optimized_metric)
    if study.get("kind") == "knowledge":
        from memexp.runs.knowledge import run_knowledge_study

        result = run_knowledge_study(
            cfg,
            names,
            model=model,
            data=data,
            optim=optim,
            trainer=trainer,
            run_dir=_run_dir(paths),
            checkpoint_root=paths.checkpoint_root,
            logger=logger,
            callbacks=callbacks,
            settings=study,
            fresh=fresh,
        )
        _report(result)
        return _returned(result, optimized_metric)
    after_test = None
    if study:
        from memexp.runs.studies import StudyEvaluations, StudySettings

        known = {
            k: study[k] for k in ("gaps", "lengths", "n_samples", "split", "board", "extra_texts", "speed", "span") if k in study
        }
        after_test = StudyEvaluations(StudySettings(**known))
    from memexp.runs.train import train_and_test

    extra_callbacks: list = [ThreadGovernor()] if follow_machine else []
    if meta is not None and meta.use:
        from memexp.tasks.meta import ReptileOuterLoop

        extra_callbacks.append(
            ReptileOuterLoop(meta.inner_steps, meta.outer_steps, meta.outer_frequency, meta.inner_lr, meta.outer_lr)
        )
    result = train_and_test(
        cfg,
        names,
        model=model,
        data=data,
        optim=optim,
        trainer=trainer,
        run_dir=_run_dir(paths),
        checkpoint_root=paths.checkpoint_root,
        logger=logger,
        callbacks=callbacks,
        carry_state=task.carry_state,
        max_eval_generate_batches=task.max_eval_generate_batches,
        early_stop=getattr(task, "early_stop", None),
        test_ckpt=getattr(task, "test_ckpt", "best"),
        compile_net=bool(getattr(task, "compile", False)),
        fresh=fresh,
        ckpt_dir=ckpt_dir,
        sample_tokens=sample_tokens,
        sample_prompt=sample_prompt,
        after_test=after_test,
        extra_callbacks=extra_callbacks,
    )
    _report(result)
    return _returned(result, optimized_metric)


def _returned(result: dict, optimized_metric: str | None) -> dict | float:
    if optimized_metric is None:
        return result
    metrics = result["metrics"]
    if optimized_metric not in metrics:
        from memexp.errors import ConfigError

        raise ConfigError(
            f"optimized_metric={optimized_metric}: the run logged no such metric; it has {', '.join(sorted(metrics))}"
        )
    say(f"optimized_metric {optimized_metric} = {metrics[optimized_metric]:.6g}")
    return float(metrics[optimized_metric])


def _report(result: dict) -> None:
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    if rank_zero_only.rank != 0:
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title="validation and test metrics")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in result["metrics"].items():
        if k.startswith(
            ("val/", "test/", "continual/")
        ):  # the rest (train/*, lr, step, parameter counts) is in metrics.json, CSV, W&B
            table.add_row(k, f"{v:.4f}")
    console.print(table)
    to_log(
        "\n" + "\n".join(f"{k} {v:.6g}" for k, v in result["metrics"].items() if k.startswith(("val/", "test/", "continual/")))
    )
    # Paths are printed whole (no wrapping), so they can be copied or parsed.
    if result["resumed_from_step"] is not None:
        say(f"resumed from step {result['resumed_from_step']}")
    if result["ckpt_dir"]:
        say(f"checkpoint: {result['ckpt_dir']}/last.ckpt")
    if result.get("result_file"):
        say(f"result: {result['result_file']}")
    say(f"run folder: {result['run_dir']} (metrics.json, csv/metrics.csv)")
    if result["sample"] is not None:
        console.rule("sample")
        console.print(result["sample"], markup=False, highlight=False)
        to_log("sample:\n" + result["sample"])


def main() -> None:
    launch(run, "memexp_run", "runs")


if __name__ == "__main__":
    main()
