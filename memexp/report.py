"""python -m memexp.report [dir=outputs/multirun/<date>/<time>] [reports_dir=...] [hf_model=PATH] [wandb=true]

Sweeps of memexp.run write this report themselves when they end; this command re-runs it. It logs to W&B
when the runs it aggregates used W&B, or with wandb=true.

Aggregates the runs of a study (every job's metrics.json under `dir`; default: the newest
multirun folder under paths.output_dir) into reports/: experiment_report.md, metrics.json
(mean and spread over seeds), long_context.csv, binned_ppl.csv, continual_metrics.json,
continual_report.md and the plots recall_curve.png, binned_ppl.png, compare_metrics.png,
continual_heatmap.png. See memexp.runs.report and memexp.evals.aggregate.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from memexp.entry import launch
from memexp.errors import ConfigError

if TYPE_CHECKING:
    from omegaconf import DictConfig


def newest_multirun(output_dir: str | Path) -> Path:
    root = Path(output_dir) / "multirun"
    folders = sorted(p for p in root.glob("*/*") if p.is_dir()) if root.exists() else []
    if not folders:
        raise ConfigError(f"no multirun folder under {root}; pass dir=<folder of a memexp.run -m sweep>")
    return folders[-1]


def report(
    dir: str | None, reports_dir: str | None, hf_model: str | None, hf_text: str | None, wandb: bool, paths: DictConfig
) -> dict:
    """The Hydra task of `python -m memexp.report` (arguments: `ReportConfig`)."""
    from memexp.evals.hf_compare import hf_bits_per_char
    from memexp.runs.report import runs_used_wandb, write_reports

    root = Path(dir) if dir else newest_multirun(paths.output_dir)
    text = None
    if hf_model:
        if hf_text:
            text = Path(hf_text).read_text(encoding="utf-8")
        else:
            src = Path(paths.data_dir) / "tinyshakespeare" / "input.txt"
            full = src.read_text(encoding="utf-8") if src.exists() else ""
            text = full[int(len(full) * 0.95) :]
    _, note = hf_bits_per_char(hf_model, text or "") if hf_model else (None, None)
    used = runs_used_wandb(root)
    from memexp.configs.board import measure_board

    written = write_reports(
        root,
        reports_dir,
        hf_note=note or "Skipped: no hf_model=PATH given.",
        wandb_log=wandb or used,
        measure_board=measure_board,
    )
    print(f"aggregated runs under {root}")
    print(
        "logged to W&B (the report run joins the sweep's group)"
        if wandb or used
        else "not logged to W&B: the runs did not use it (wandb=true logs the report anyway)"
    )
    for name, path in written.items():
        print(f"  {name:24s} {path}")
    return written


def main() -> None:
    launch(report, "memexp_report", "report")


if __name__ == "__main__":
    main()
