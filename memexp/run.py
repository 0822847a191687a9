"""python -m memexp.run [model=...] [data=...] [experiment=...] [debug=...] [key=value ...]

Trains a model on data, tests it, prints the metrics and a generated sample, and leaves a
checkpoint (outputs/checkpoints/...), CSV metrics and a W&B run (outputs/runs/...).
Running the same command again resumes from the checkpoint's last.ckpt; fresh=true starts over.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from memexp.console import say, to_log
from memexp.entry import launch

# Lightning and the models are imported inside the functions, so `--help` answers at once (memexp.help).
if TYPE_CHECKING:
    from memexp.runs.build import RunNames
    from memexp.runs.spec import RunResult, RunSpec


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


def _extra_callbacks(follow_machine: bool, meta: DictConfig | None) -> list:
    from memexp.runs.threads import ThreadGovernor

    extra: list = [ThreadGovernor()] if follow_machine else []
    if meta is not None and meta.use:  # first-order Reptile outer loop (memexp.tasks.meta)
        from memexp.tasks.meta import ReptileOuterLoop

        extra.append(ReptileOuterLoop(meta.inner_steps, meta.outer_steps, meta.outer_frequency, meta.inner_lr, meta.outer_lr))
    return extra


def run_spec(zen_cfg: DictConfig, pieces: Mapping[str, Any]) -> RunSpec:
    """The run's `RunSpec` from its config (`zen_cfg`) and its fields as hydra-zen instantiated them (`pieces`).
    A precision that cannot run, an unknown study setting or an `optimized_metric` the run will not log stop here,
    before anything trains."""
    from memexp.runs.build import check_metric_name
    from memexp.runs.precision import with_precision
    from memexp.runs.spec import RunSpec, SampleSettings, study_from_section
    from memexp.runs.threads import apply_threads
    from memexp.tasks.settings import check_task_section

    task = OmegaConf.to_container(zen_cfg.task, resolve=True)
    check_task_section(task)  # the settings and the study are checked before the run says anything
    study = study_from_section(OmegaConf.to_container(zen_cfg.study, resolve=True) if zen_cfg.study else None)
    trainer, precision_line = with_precision(pieces["trainer"])
    follow_machine = apply_threads(zen_cfg.trainer.get("threads", "auto"), _parallel_launcher(), beside=precision_line)
    cfg = OmegaConf.to_container(zen_cfg, resolve=True)
    cfg["trainer"]["precision"] = trainer.keywords["precision"]  # `auto` as resolved: the run key holds what ran
    names = _names(zen_cfg.seed, zen_cfg.experiment_name)
    cfg["run"] = _run_info(pieces.get("tags"), names.experiment)
    if zen_cfg.optimized_metric is not None:
        kind = (cfg.get("study") or {}).get("kind")
        check_metric_name(zen_cfg.optimized_metric, pieces["data"], names.data, kind)
    paths = pieces["paths"]
    return RunSpec(
        cfg=cfg,
        names=names,
        model=pieces["model"],
        data=pieces["data"],
        optim=pieces["optim"],
        trainer=trainer,
        run_dir=_run_dir(paths),
        checkpoint_root=paths.checkpoint_root,
        logger=pieces.get("logger"),
        callbacks=pieces.get("callbacks"),
        task=task,
        study=study,
        fresh=bool(zen_cfg.fresh),
        ckpt_dir=zen_cfg.ckpt_dir,
        sample=SampleSettings(int(zen_cfg.sample_tokens), str(zen_cfg.sample_prompt)),
        extra_callbacks=_extra_callbacks(follow_machine, pieces.get("meta")),
    )


def run(zen_cfg: DictConfig, **pieces: Any) -> dict | float:
    """The Hydra task of `python -m memexp.run` (its config: `RunConfig`; hydra-zen's `zen` passes each field,
    those with a `_target_` instantiated: `model`, `data` and `trainer` are partials the run completes, `logger` and
    `callbacks` map names to partials or callbacks).

    Builds the `RunSpec`, hands it to the driver its study names (memexp.runs.drivers), prints the result, and
    returns it as a dict, or with `optimized_metric` that metric as a float (what a sweeper optimises).
    """
    from memexp.runs.drivers import drive

    spec = run_spec(zen_cfg, pieces)
    result = drive(spec)
    _report(result)
    return _returned(result, zen_cfg.optimized_metric)


def run_composed(cfg: DictConfig) -> dict | float:
    """`run` on a config composed elsewhere (scripts, tests): every field passed as `python -m memexp.run` passes it."""
    from hydra_zen import zen

    return zen(run, unpack_kwargs=True)(cfg)


def _returned(result: RunResult, optimized_metric: str | None) -> dict | float:
    if optimized_metric is None:
        return result.as_dict()
    metrics = result.metrics
    if optimized_metric not in metrics:
        from memexp.errors import ConfigError

        raise ConfigError(
            f"optimized_metric={optimized_metric}: the run logged no such metric; it has {', '.join(sorted(metrics))}"
        )
    say(f"optimized_metric {optimized_metric} = {metrics[optimized_metric]:.6g}")
    return float(metrics[optimized_metric])


def _report(result: RunResult) -> None:
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    if rank_zero_only.rank != 0:
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title="validation and test metrics")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in result.metrics.items():
        if k.startswith(
            ("val/", "test/", "continual/")
        ):  # the rest (train/*, lr, step, parameter counts) is in metrics.json, CSV, W&B
            table.add_row(k, f"{v:.4f}")
    console.print(table)
    to_log("\n" + "\n".join(f"{k} {v:.6g}" for k, v in result.metrics.items() if k.startswith(("val/", "test/", "continual/"))))
    # Paths are printed whole (no wrapping), so they can be copied or parsed.
    if result.retested:
        say(f"tested again at step {result.resumed_from_step}: the run had finished, nothing was trained")
    elif result.resumed_from_step is not None:
        say(f"resumed from step {result.resumed_from_step}")
    if result.ckpt_dir:
        say(f"checkpoint: {result.ckpt_dir}/last.ckpt")
    if result.result_file:
        say(f"result: {result.result_file}")
    say(f"run folder: {result.run_dir} (metrics.json, csv/metrics.csv)")
    if result.sample is not None:
        console.rule("sample")
        console.print(result.sample, markup=False, highlight=False)
        to_log("sample:\n" + result.sample)


def main() -> None:
    launch(run, "memexp_run", "runs")


if __name__ == "__main__":
    main()
