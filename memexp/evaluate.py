"""python -m memexp.evaluate ckpt=PATH [splits=[val,test]] [data_path=FILE] [out=FILE.json]

Validation/test metrics of a checkpoint (its task's: loss, perplexity, bits per token, accuracy,
top-5, top-10 for language models; loss, perplexity, BLEU-2/4, distinct-1/2, thinking steps for
dialogue models), printed and written as JSON (default: next to the checkpoint, <name>.eval.json).
data_path: other data of the same kind (a text file, or a dialogue source).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import lightning as L

from memexp.entry import chosen_model, launch
from memexp.errors import ConfigError
from memexp.experiment import load_checkpoint


def evaluate_checkpoint(
    ckpt: str,
    splits=("val", "test"),
    data_dir: str | None = None,
    model: str | None = None,
    data_path: str | None = None,
    batch_size: int | None = None,
    out: str | None = None,
    accelerator: str = "auto",
) -> dict:
    overrides = {}
    if batch_size is not None:
        overrides["eval_batch_size"] = batch_size
    loaded = load_checkpoint(ckpt, data_dir=data_dir, expect_model=model, data_overrides=overrides, data_path=data_path)
    dm = loaded.datamodule
    trainer = L.Trainer(accelerator=accelerator, devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    metrics: dict[str, float] = {}
    for split in splits:
        if split not in ("val", "test"):
            raise ConfigError(f"splits: {split!r} is not a split; expected 'val' and/or 'test'")
        run = trainer.validate if split == "val" else trainer.test
        results = run(loaded.task, dataloaders=dm.eval_dataloader(split), verbose=False)
        metrics.update({k: float(v) for k, v in results[0].items()})
    result = {"ckpt": str(ckpt), "global_step": int(loaded.checkpoint.get("global_step", 0)), "metrics": metrics}
    out_path = Path(out) if out else Path(ckpt).with_suffix(".eval.json")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    os.replace(tmp, out_path)
    result["out"] = str(out_path)
    return result


def evaluate(ckpt, model, splits, data_path, batch_size, out, accelerator, paths) -> dict:
    result = evaluate_checkpoint(ckpt, list(splits), paths.data_dir, chosen_model(), data_path, batch_size, out, accelerator)
    for k, v in result["metrics"].items():
        print(f"{k:12s} {v:.4f}")
    print(f"written to {result['out']}")
    return result


def main() -> None:
    launch(evaluate, "memexp_evaluate", "evaluate")


if __name__ == "__main__":
    main()
