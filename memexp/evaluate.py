"""python -m memexp.evaluate ckpt=PATH [eval=metrics|recall|binned_ppl] [...]

eval=metrics (default): validation/test metrics of a checkpoint (its task's: loss, perplexity,
bits per token, accuracy, top-5, top-10 for language models; loss, perplexity, BLEU-2/4,
distinct-1/2, thinking steps for dialogue models), printed and written as JSON (default: next
to the checkpoint, <name>.eval.json). Options: splits=[val,test] out=FILE.json, and
data_path=FILE for other data of the same kind (a text file, or a dialogue source); splits=[all] evaluates the
whole file (all/*); unknown=skip drops characters outside a char vocabulary (the default, error, names the first).

eval=recall: long-context recall of a model trained on data=recall: `gap=2048` prints
recall_prob and exact-match accuracy at one gap; `gaps=[256,512,1024,2048]` also writes
<reports_dir>/long_context.csv. n_samples=256 sequences per gap.

eval=binned_ppl: perplexity by context-length bin, `lengths=[64,128,256,512]`, on a text
split (split=test) -> <reports_dir>/binned_ppl.csv (see memexp.evals.binned_ppl).

reports_dir defaults to `reports/` inside this command's run folder (outputs/evaluate/...).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from memexp.console import say
from memexp.entry import chosen_model, launch
from memexp.errors import ConfigError
from memexp.files import write_json

# Lightning and the checkpoint loader are imported inside the functions, so `--help` answers at once.
if TYPE_CHECKING:
    from omegaconf import DictConfig


def evaluate_checkpoint(
    ckpt: str,
    splits: Sequence[str] = ("val", "test"),
    data_dir: str | None = None,
    model: str | None = None,
    data_path: str | None = None,
    batch_size: int | None = None,
    out: str | None = None,
    accelerator: str = "auto",
    unknown: str | None = None,
    precision: str | None = None,
) -> dict:
    """Loss and the task's metrics of `ckpt` on its own splits, or on `data_path` (another file of its kind).

    precision: trainer.precision's values; None evaluates in the precision the checkpoint trained in, so the numbers
    are the run's own (a bf16-mixed run's test metrics again).

    splits: any of "val", "test" (the checkpoint's fractions of the file) and "all" (the whole file, reported as
    all/*). unknown: text only, characters outside the checkpoint's char vocabulary: "error" or "skip".
    """
    import lightning as L

    from memexp.configs.rebuild import load_checkpoint
    from memexp.runs.checkpoints import read_checkpoint

    _check_splits(splits)
    overrides: dict = {}
    if batch_size is not None:
        overrides["eval_batch_size"] = batch_size
    if unknown is not None:
        overrides["unknown"] = unknown
    checkpoint = read_checkpoint(Path(ckpt))  # read once: its data config decides what "all" is
    dialogue = "source" in (checkpoint["memexp"].get("config") or {}).get("data", {})
    if "all" in splits and not dialogue:
        overrides["splits"] = (0.0, 0.0, 1.0)  # the whole file is the test split
    loaded = load_checkpoint(
        ckpt, data_dir=data_dir, expect_model=model, data_overrides=overrides, data_path=data_path, checkpoint=checkpoint
    )
    dm = loaded.datamodule
    trained_in = ((checkpoint["memexp"].get("config") or {}).get("trainer") or {}).get("precision")
    trainer = L.Trainer(
        accelerator=accelerator,
        precision=_precision(precision, trained_in, accelerator),
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    metrics: dict[str, float] = {}
    for split in splits:
        run = trainer.validate if split == "val" else trainer.test
        # "all": a text's whole file is its test split; a single dialogue file is prepared as one "train" split
        source_split = ("train" if dialogue else "test") if split == "all" else split
        results = run(loaded.task, dataloaders=dm.eval_dataloader(source_split), verbose=False)
        metrics.update({(f"all/{k[5:]}" if split == "all" else k): float(v) for k, v in results[0].items()})
    result = {"ckpt": str(ckpt), "global_step": int(loaded.checkpoint.get("global_step", 0)), "metrics": metrics}
    if data_path is not None:
        result["data_path"] = str(data_path)
    result |= _unknown_counts(dm, dialogue and data_path is not None)
    out_path = write_json(result, Path(out) if out else Path(ckpt).with_suffix(".eval.json"))
    result["out"] = str(out_path)
    return result


def _check_splits(splits: Sequence[str]) -> None:
    for split in splits:
        if split not in ("val", "test", "all"):
            raise ConfigError(f"splits: {split!r} is not a split; expected 'val', 'test' and/or 'all' (the whole file)")
    if "all" in splits and len(splits) > 1:
        raise ConfigError(f"splits={list(splits)}: 'all' (the whole file) goes alone")


def _precision(precision: str | None, trained_in: str | None, accelerator: str) -> str:
    """The precision to evaluate in: the one asked for, else the run's own where it runs here (a GPU's 16-mixed
    does not on a CPU), else 32-true."""
    from memexp.runs.precision import plan_precision

    if precision is not None:
        return plan_precision(precision, accelerator)[0]
    try:
        return plan_precision(trained_in or "32-true", accelerator)[0]
    except ConfigError:
        return "32-true"


def _unknown_counts(dm: object, other_dialogue_file: bool) -> dict:
    """What the checkpoint's vocabulary lacks: characters skipped (text), or <unk> words of another dialogue file."""
    counts: dict = {}
    if getattr(dm, "skipped_chars", None):
        counts["skipped_chars"] = dict(dm.skipped_chars)
    if other_dialogue_file:  # words of the other file the checkpoint's vocabulary lacks
        from memexp.data.dialogue.stream import load_manifest

        totals = load_manifest(dm.cache_dir)["totals"]
        counts["unk_tokens"], counts["tokens"] = int(totals.get("unk_tokens", 0)), int(totals["tokens"])
    return counts


def _reports_dir(reports_dir: str | None) -> Path:
    if reports_dir:
        return Path(reports_dir)
    from hydra.core.hydra_config import HydraConfig

    base = Path(HydraConfig.get().runtime.output_dir) if HydraConfig.initialized() else Path("outputs/evaluate/manual")
    return base / "reports"


def evaluate(
    ckpt: str,
    model: str | None,
    splits: Sequence[str],
    data_path: str | None,
    batch_size: int | None,
    out: str | None,
    accelerator: str,
    paths: DictConfig,
    eval: str = "metrics",
    gap: int | None = None,
    gaps: Sequence[int] | None = None,
    lengths: Sequence[int] = (64, 128, 256, 512),
    split: str = "test",
    n_samples: int = 256,
    reports_dir: str | None = None,
    unknown: str | None = None,
    precision: str | None = None,
) -> dict:
    """The Hydra task of `python -m memexp.evaluate` (arguments: `EvaluateConfig`; `model` is read back by `chosen_model`)."""
    if eval == "metrics":
        result = evaluate_checkpoint(
            ckpt, list(splits), paths.data_dir, chosen_model(), data_path, batch_size, out, accelerator, unknown, precision
        )
        for k, v in result["metrics"].items():
            say(f"{k:12s} {v:.4f}")
        for split, n in (result.get("skipped_chars") or {}).items():
            if n:
                say(f"skipped {n} characters outside the checkpoint's vocabulary ({split} part, unknown=skip)")
        if "unk_tokens" in result:
            say(f"{result['unk_tokens']:,} of {result['tokens']:,} tokens are outside the checkpoint's vocabulary (<unk>)")
        say(f"written to {result['out']}")
        return result
    from memexp.configs.rebuild import load_checkpoint
    from memexp.runs.studies import binned_ppl_report, recall_report

    if eval == "recall":
        if gap is None and not gaps:
            raise ConfigError("eval=recall needs gap=N (one gap) or gaps=[...] (a curve written to long_context.csv)")
        loaded = load_checkpoint(ckpt, data_dir=paths.data_dir, expect_model=chosen_model())
        return recall_report(loaded, ckpt, gap=gap, gaps=gaps, n_samples=n_samples, reports_dir=_reports_dir(reports_dir))
    if eval == "binned_ppl":
        overrides = {"path": data_path} if data_path else {}
        loaded = load_checkpoint(ckpt, data_dir=paths.data_dir, expect_model=chosen_model(), data_overrides=overrides)
        return binned_ppl_report(loaded, ckpt, lengths=list(lengths), split=split, reports_dir=_reports_dir(reports_dir))
    raise ConfigError(f"eval={eval!r} is not an evaluation; expected 'metrics', 'recall' or 'binned_ppl'")


def main() -> None:
    launch(evaluate, "memexp_evaluate", "evaluate")


if __name__ == "__main__":
    main()
