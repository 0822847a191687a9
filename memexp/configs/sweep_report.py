"""The report of a sweep, written when the sweep ends: a Hydra callback on `memexp.run -m`.

At the end of a multirun it aggregates the sweep's folder with the same code as `python -m memexp.report`
(`memexp.runs.report.write_reports`), logs it to W&B when the sweep's runs used W&B, and prints where the
report is. `memexp.report dir=<sweep folder>` re-runs it (e.g. after adding seeds).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from memexp.console import say


class SweepReport(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from memexp.runs.report import runs_used_wandb, write_reports

        root = Path(config.hydra.sweep.dir)
        if not any(root.glob("**/metrics.json")):
            print(f"sweep report: no finished run under {root}; nothing to aggregate", file=sys.stderr, flush=True)
            return
        used_wandb = runs_used_wandb(root)
        try:
            from memexp.configs.board import measure_board

            written = write_reports(root, wandb_log=used_wandb, measure_board=measure_board)
        except Exception as e:  # the sweep's runs are done and saved; a failed report must not hide that
            print(
                f"sweep report not written ({type(e).__name__}: {e}); retry: python -m memexp.report dir={root}", file=sys.stderr
            )
            return
        say(f"sweep report: {root / 'reports'} ({', '.join(written)})" + ("; logged to W&B" if used_wandb else ""))
