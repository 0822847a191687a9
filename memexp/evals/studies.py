"""The evaluations a study runs on a trained model, from a checkpoint or at the end of a run.

`recall_of_checkpoint` / `binned_ppl_of_checkpoint` back `memexp.evaluate eval=recall|binned_ppl`.
`StudyEvaluations` runs after `Trainer.test` inside `train_and_test` (a run whose config has a
`study` section): it scores recall by gap (data=recall) or binned perplexity (text data),
writes `study.json` into the run folder for `memexp.report` to aggregate, and logs the
tables and a plot to every W&B logger of the run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from memexp.errors import ConfigError
from memexp.evals.binned_ppl import binned_perplexity, write_binned_csv
from memexp.evals.recall import recall_at_gap, write_recall_csv


def _is_recall_data(dm) -> bool:
    return hasattr(dm, "batch") and hasattr(dm, "chance")


def _model_name(loaded) -> str:
    return (loaded.config.get("names") or {}).get("model") or "model"


def recall_of_checkpoint(ckpt, gap=None, gaps=None, n_samples=256, data_dir=None, model=None, reports_dir="reports") -> dict:
    from memexp.experiment import load_checkpoint

    loaded = load_checkpoint(ckpt, data_dir=data_dir, expect_model=model)
    if not _is_recall_data(loaded.datamodule):
        raise ConfigError(f"eval=recall needs a checkpoint trained on data=recall (its vocabulary holds the keys and "
                          f"values); {ckpt} was trained on other data")
    net, dm = loaded.task.net, loaded.datamodule
    names = loaded.config.get("names") or {}
    rows = []
    for g in ([int(gap)] if gap is not None else []) + [int(x) for x in (gaps or []) if gap is None or int(x) != int(gap)]:
        r = recall_at_gap(net, dm, g, n_samples=n_samples) | {"model": _model_name(loaded), "seed": names.get("seed", 0)}
        rows.append(r)
        print(f"gap {g:6d}  recall_prob {r['recall_prob']:.4f}  accuracy {r['accuracy']:.4f}  "
              f"(chance {r['chance']:.3f}; context: {r['context']})", flush=True)
    result = {"ckpt": str(ckpt), "recall": rows}
    if gaps:
        result["out"] = str(write_recall_csv(rows, Path(reports_dir) / "long_context.csv"))
        print(f"written to {result['out']}")
    return result


def binned_ppl_of_checkpoint(ckpt, lengths=(64, 128, 256, 512), split="test", data_path=None, data_dir=None, model=None,
                             reports_dir="reports") -> dict:
    from memexp.experiment import load_checkpoint

    overrides = {"path": data_path} if data_path else {}
    loaded = load_checkpoint(ckpt, data_dir=data_dir, expect_model=model, data_overrides=overrides)
    if not hasattr(loaded.datamodule, "tokens"):
        raise ConfigError(f"eval=binned_ppl needs a checkpoint trained on text data (data=shakespeare|text|jsonl); "
                          f"{ckpt} was trained on synthetic data")
    names = loaded.config.get("names") or {}
    rows = binned_perplexity(loaded.task.net, loaded.datamodule.tokens(split), lengths)
    for r in rows:
        r |= {"model": _model_name(loaded), "seed": names.get("seed", 0), "split": split}
        print(f"positions [{r['lo']:5d}, {r['hi']:5d})  tokens {r['tokens']:7d}  ppl {r['ppl']:.4f}  "
              f"ppl(<{r['hi']}) {r['ppl_upto']:.4f} {r['note']}", flush=True)
    out = write_binned_csv(rows, Path(reports_dir) / "binned_ppl.csv")
    print(f"written to {out}")
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


def log_to_wandb(loggers: list, tables: dict[str, list[dict]], images: dict[str, Path] | None = None,
                 summary: dict | None = None) -> None:
    """Tables (lists of flat dicts) and images to every W&B logger in `loggers`."""
    from lightning.pytorch.loggers import WandbLogger

    for lg in loggers:
        if not isinstance(lg, WandbLogger):
            continue
        import wandb

        payload = {}
        for name, rows in tables.items():
            if rows:
                cols = list(rows[0].keys())
                payload[name] = wandb.Table(columns=cols, data=[[r.get(c) for c in cols] for r in rows])
        for name, path in (images or {}).items():
            if path and Path(path).exists():
                payload[name] = wandb.Image(str(path))
        if payload:
            lg.experiment.log(payload)
        if summary:
            lg.experiment.summary.update(summary)



class StudyEvaluations:
    """Called by `train_and_test` after the test: (task, datamodule, loggers, run_dir, names) -> extra results."""

    def __init__(self, settings: StudySettings):
        self.settings = settings

    def __call__(self, task, datamodule, loggers, run_dir: Path, names) -> dict:
        from memexp.evals.plots import plot_binned_ppl, plot_recall_curve

        s, net = self.settings, task.net
        label = {"model": names.model, "seed": names.seed}
        out: dict = {}
        images = {}
        if _is_recall_data(datamodule):
            out["recall"] = [recall_at_gap(net, datamodule, int(g), n_samples=s.n_samples, device=task.device) | label
                             for g in s.gaps]
            write_recall_csv(out["recall"], Path(run_dir) / "reports" / "long_context.csv")
            images["study/recall_curve"] = plot_recall_curve(out["recall"], Path(run_dir) / "reports" / "recall_curve.png")
        elif hasattr(datamodule, "tokens"):
            out["binned_ppl"] = [r | label | {"split": s.split} for r in
                                 binned_perplexity(net, datamodule.tokens(s.split), s.lengths, device=task.device)]
            write_binned_csv(out["binned_ppl"], Path(run_dir) / "reports" / "binned_ppl.csv")
            images["study/binned_ppl"] = plot_binned_ppl(out["binned_ppl"], Path(run_dir) / "reports" / "binned_ppl.png")
        summary = {f"study/recall_prob@{r['gap']}": r["recall_prob"] for r in out.get("recall", [])}
        log_to_wandb(loggers, {"study/recall": out.get("recall", []), "study/binned_ppl": out.get("binned_ppl", [])},
                     images, summary)
        return out
