"""The loggers of a run: built for its folder, finished at its end, and fed tables and plots.

`wandb_logger` is the W&B factory the `logger` config group builds (online when logged in,
offline otherwise); `make_loggers` instantiates a run's logger partials (CSV is always
there); `log_to_wandb` sends study tables and images to every W&B logger of a run.
"""

from __future__ import annotations

import csv
import netrc
import os
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger

from memexp.console import say
from memexp.files import write_csv
from memexp.runs.build import RunNames


def wandb_logged_in() -> bool:
    """True when W&B credentials exist (WANDB_API_KEY, or `wandb login`'s netrc entry)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    path = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return path.exists() and any("wandb" in host for host in netrc.netrc(path).hosts)
    except (netrc.NetrcParseError, OSError):
        return False


def wandb_mode(mode: str = "auto") -> str:
    """ "auto" -> $WANDB_MODE if set, else online when logged in and offline otherwise; other modes as given."""
    if mode != "auto":
        return mode
    return os.environ.get("WANDB_MODE") or ("online" if wandb_logged_in() else "offline")


def wandb_payload(tables: Mapping[str, list[dict]], images: Mapping[str, Path | str | None] | None = None) -> dict:
    """A `wandb.log` payload: each non-empty list of flat dicts as a wandb.Table, each existing file as a wandb.Image."""
    import wandb  # only when something is logged: importing wandb costs about a second

    payload = {}
    for name, rows in tables.items():
        if rows:
            cols = list(rows[0].keys())
            payload[name] = wandb.Table(columns=cols, data=[[r.get(c) for c in cols] for r in rows])
    for name, path in (images or {}).items():
        if path and Path(path).exists():
            payload[name] = wandb.Image(str(path))
    return payload


def wandb_logger(
    save_dir: str,
    project: str = "memexp",
    entity: str | None = None,
    group: str | None = None,
    name: str | None = None,
    tags: list[str] | None = None,
    mode: str = "auto",
    job_type: str | None = None,
) -> WandbLogger:
    """A W&B logger: online when logged in, offline otherwise (mode="auto"), or as `mode` says
    ("online", "offline", "disabled"). Offline runs are uploaded later with `wandb sync`."""
    import wandb

    mode = wandb_mode(mode)
    logger = WandbLogger(
        # W&B's own lines (its banner, the run history and summary at the end) stay out of the console: the run
        # prints one line of ours (`wandb_line`) and the summary is in the W&B run; W&B still records the console
        settings=wandb.Settings(silent=True),
        save_dir=save_dir,
        project=project,
        entity=entity,
        group=group,
        name=name,
        tags=tags,
        offline=mode == "offline",
        mode=mode,
        job_type=job_type,
    )
    # Lightning always passes `anonymous` to wandb.init, which wandb 0.31 answers with a deprecation warning
    logger._wandb_init.pop("anonymous", None)
    return logger


def sweep_group(experiment: str, sweep_dir: str | Path) -> str:
    """The W&B group of one multirun: `<experiment>-<date>-<time>` of its sweep folder (runs and their report)."""
    return "-".join([experiment, *Path(sweep_dir).parts[-2:]])


def git_commit(folder: str | Path = ".") -> str | None:
    """The commit checked out in `folder` (None outside a git work tree or without git)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def make_loggers(
    logger_factories: Mapping[str, Callable | None] | None,
    run_dir: Path,
    names: RunNames,
    hparams: Mapping[str, Any] | None = None,
    resume_step: int | None = None,
) -> list[Logger]:
    """The run's loggers, saving under `run_dir`, with `hparams` (the composed config) logged to each. CSV always.

    A run resumed at `resume_step` keeps the CSV rows of its steps before it (`keep_csv_history`).

    W&B runs are named `<experiment>/<model>-<data>-seed<seed>`, their job type is the model, their group
    is `logger.wandb.group` when set, else `hparams["run"]["group"]` (one per multirun), else the experiment,
    and their tags are `logger.wandb.tags` plus the top-level `tags`.
    """
    run = dict((hparams or {}).get("run") or {})
    loggers: list[Logger] = []
    for name, factory in (logger_factories or {}).items():
        if factory is None:
            continue
        if name == "wandb":
            set_by_user = getattr(factory, "keywords", {})
            tags = list(set_by_user.get("tags") or []) + [str(t) for t in run.get("tags") or []]
            loggers.append(
                factory(
                    save_dir=str(run_dir),
                    group=set_by_user.get("group") or run.get("group") or names.experiment,
                    name=f"{names.experiment}/{names.label}",
                    job_type=names.model,
                    tags=list(dict.fromkeys(tags)) or None,
                )
            )
        else:
            loggers.append(factory(save_dir=str(run_dir)))
    if not any(isinstance(lg, CSVLogger) for lg in loggers):
        loggers.insert(0, CSVLogger(save_dir=str(run_dir), name="csv", version=""))
    if resume_step is not None:
        for lg in loggers:
            if isinstance(lg, CSVLogger):
                keep_csv_history(lg, resume_step)
    if hparams:
        for lg in loggers:
            lg.log_hyperparams(dict(hparams))  # W&B: the config panel (filter and group by model.dim); CSV: hparams.yaml
    for lg in loggers:
        if isinstance(lg, WandbLogger) and (line := wandb_line(lg, run_dir)):
            say(line)
    return loggers


def keep_csv_history(logger: CSVLogger, resume_step: int) -> None:
    """Keep the rows of steps before `resume_step` in a resumed run's metrics.csv, and drop the later ones (the
    steps after the checkpoint are trained and logged again).

    Lightning's CSV writer deletes an existing metrics.csv when it starts, which would leave a resumed run with
    only the rows logged after its resumption; it offers no option to append, hence this.
    """
    path = Path(logger.log_dir) / "metrics.csv"
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            rows = [r for r in reader if r.get("step") and int(r["step"]) < resume_step]
            header = list(reader.fieldnames or [])
    except (FileNotFoundError, ValueError, csv.Error):  # no history, or one that is not a CSV of steps: start afresh
        return
    writer = logger.experiment  # Lightning deletes the old file here
    if not rows:
        return
    write_csv(rows, path, header)
    writer.metrics_keys = header  # the writer appends under this header and rewrites it when a new key arrives


def wandb_line(logger: WandbLogger, run_dir: Path) -> str | None:
    """The one console line about a run's W&B run: its page when online, where to sync it from when offline."""
    run = logger.experiment
    if getattr(run, "disabled", False) or run.settings.mode == "disabled":
        return None
    if run.settings.mode == "offline" or run.settings._offline:
        return f"W&B: offline run in {Path(run_dir) / 'wandb'} (upload: wandb sync {Path(run_dir) / 'wandb'})"
    return f"W&B: {run.url}"


def finish_loggers(loggers: list[Logger]) -> None:
    """Close the W&B run (if any) so the next run in this process starts its own."""
    for lg in loggers:
        if isinstance(lg, WandbLogger):
            import wandb

            wandb.finish()


def log_to_wandb(
    loggers: list[Logger],
    tables: Mapping[str, list[dict]],
    images: Mapping[str, Path | None] | None = None,
    summary: Mapping[str, Any] | None = None,
) -> None:
    """Tables (lists of flat dicts) and images to every W&B logger in `loggers`."""
    for lg in loggers:
        if not isinstance(lg, WandbLogger):
            continue
        payload = wandb_payload(tables, images)
        if payload:
            lg.experiment.log(payload)
        if summary:
            lg.experiment.summary.update(summary)
