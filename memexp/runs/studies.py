"""What a study run evaluates after its test, and the study evaluations of a saved checkpoint.

`StudyEvaluations` runs inside `train_and_test` after `Trainer.test` (a run whose config has a
`study` section): it scores recall by gap (data=recall) or binned perplexity (text data),
writes the CSV and plot into `<run_dir>/reports/`, and logs the tables and the plot to every
W&B logger of the run; its result lands in `metrics.json` under "study" for `memexp.report`.
`recall_report` / `binned_ppl_report` back `memexp.evaluate eval=recall|binned_ppl`.
The numbers themselves come from `memexp.evals` (recall_at_gap, binned_perplexity).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import lightning as L

from memexp.console import say
from memexp.errors import ConfigError
from memexp.evals.binned_ppl import binned_perplexity, write_binned_csv
from memexp.evals.plots import plot_binned_ppl, plot_recall_curve
from memexp.evals.recall import recall_at_gap, write_recall_csv
from memexp.runs.build import RunNames
from memexp.runs.checkpoints import LoadedRun
from memexp.runs.loggers import log_to_wandb


def is_recall_data(dm: L.LightningDataModule) -> bool:
    """Synthetic recall data (it can draw batches at a chosen gap)."""
    return hasattr(dm, "batch") and hasattr(dm, "chance")


def recall_report(
    loaded: LoadedRun,
    ckpt: str | Path,
    gap: int | None = None,
    gaps: Sequence[int] | None = None,
    n_samples: int = 256,
    reports_dir: str | Path = "reports",
) -> dict:
    """recall_prob and accuracy of a recall-trained checkpoint at `gap` and/or `gaps` (then also long_context.csv)."""
    if not is_recall_data(loaded.datamodule):
        raise ConfigError(
            f"eval=recall needs a checkpoint trained on data=recall (its vocabulary holds the keys and "
            f"values); {ckpt} was trained on other data"
        )
    net, dm = loaded.task.net, loaded.datamodule
    rows = []
    for g in ([int(gap)] if gap is not None else []) + [int(x) for x in (gaps or []) if gap is None or int(x) != int(gap)]:
        r = recall_at_gap(net, dm, g, n_samples=n_samples) | {"model": loaded.model_name, "seed": loaded.seed}
        rows.append(r)
        say(
            f"gap {g:6d}  recall_prob {r['recall_prob']:.4f}  accuracy {r['accuracy']:.4f}  "
            f"(chance {r['chance']:.3f}; context: {r['context']})",
        )
    result = {"ckpt": str(ckpt), "recall": rows}
    if gaps:
        result["out"] = str(write_recall_csv(rows, Path(reports_dir) / "long_context.csv"))
        say(f"written to {result['out']}")
    return result


def binned_ppl_report(
    loaded: LoadedRun,
    ckpt: str | Path,
    lengths: Sequence[int] = (64, 128, 256, 512),
    split: str = "test",
    reports_dir: str | Path = "reports",
) -> dict:
    """Perplexity by context-length bin of a text-trained checkpoint on `split` -> binned_ppl.csv."""
    if not hasattr(loaded.datamodule, "tokens"):
        raise ConfigError(
            f"eval=binned_ppl needs a checkpoint trained on text data (data=shakespeare|text|jsonl); "
            f"{ckpt} was trained on synthetic data"
        )
    rows = binned_perplexity(loaded.task.net, loaded.datamodule.tokens(split), lengths)
    for r in rows:
        r |= {"model": loaded.model_name, "seed": loaded.seed, "split": split}
        say(
            f"positions [{r['lo']:5d}, {r['hi']:5d})  tokens {r['tokens']:7d}  ppl {r['ppl']:.4f}  "
            f"ppl(<{r['hi']}) {r['ppl_upto']:.4f} {r['note']}",
        )
    out = write_binned_csv(rows, Path(reports_dir) / "binned_ppl.csv")
    say(f"written to {out}")
    return {"ckpt": str(ckpt), "binned_ppl": rows, "out": str(out)}


@dataclass
class StudySettings:
    """What a run evaluates after its test (the `study` section of a run config).

    gaps: recall gaps (data=recall).  lengths: binned-perplexity bins (text data).
    n_samples: recall sequences per gap.  split: text split of the binned perplexity.
    """

    gaps: Sequence[int] = (16, 32, 64)
    lengths: Sequence[int] = (16, 32, 64)
    n_samples: int = 256
    split: str = "test"
    extra: dict = field(default_factory=dict)
    board: bool = False  # a leaderboard job (memexp.evals.leaderboard): marks its results for the board's report
    extra_texts: Sequence[str] = ()  # text files of other domains: bits per character on each (text data)
    speed: dict = field(default_factory=dict)  # the report's side-by-side timing: rounds, train_steps, gen_tokens
    span: int | None = None  # the context the recall gaps are multiples of (the leaderboard's columns)
    driver: ClassVar[str] = "train"  # evaluations after the test of one training run (memexp.runs.drivers)


class StudyEvaluations:
    """Called by `train_and_test` after the test: (task, datamodule, loggers, run_dir, names) -> extra results."""

    def __init__(self, settings: StudySettings):
        self.settings = settings

    def __call__(
        self, task: L.LightningModule, datamodule: L.LightningDataModule, loggers: list, run_dir: Path, names: RunNames
    ) -> dict:
        s, net = self.settings, task.net
        label = {"model": names.model, "seed": names.seed}
        reports = Path(run_dir) / "reports"
        out: dict = {}
        images = {}
        if is_recall_data(datamodule):
            out["recall"] = [
                recall_at_gap(net, datamodule, int(g), n_samples=s.n_samples, device=task.device) | label for g in s.gaps
            ]
            write_recall_csv(out["recall"], reports / "long_context.csv")
            images["study/recall_curve"] = plot_recall_curve(out["recall"], reports / "recall_curve.png")
        elif hasattr(datamodule, "tokens"):
            out["binned_ppl"] = [
                r | label | {"split": s.split}
                for r in binned_perplexity(net, datamodule.tokens(s.split), s.lengths, device=task.device)
            ]
            write_binned_csv(out["binned_ppl"], reports / "binned_ppl.csv")
            images["study/binned_ppl"] = plot_binned_ppl(out["binned_ppl"], reports / "binned_ppl.png")
        if s.extra_texts and hasattr(datamodule, "tokens"):
            from memexp.evals.leaderboard import extra_text_bpc

            window = max(s.lengths) if s.lengths else 64
            out["extra_texts"] = [
                extra_text_bpc(net, datamodule.spec.tokenizer, p, window, device=task.device) for p in s.extra_texts
            ]
        if s.board:
            out |= {"board": True, "speed": dict(s.speed)} | ({"span": int(s.span)} if s.span else {})
        summary = {f"study/recall_prob@{r['gap']}": r["recall_prob"] for r in out.get("recall", [])}
        summary |= {f"study/bpc/{Path(e['path']).name}": e["bpc"] for e in out.get("extra_texts", [])}
        log_to_wandb(
            loggers, {"study/recall": out.get("recall", []), "study/binned_ppl": out.get("binned_ppl", [])}, images, summary
        )
        return out
