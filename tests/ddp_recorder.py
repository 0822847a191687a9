"""A callback the DDP dialogue test injects into `memexp.run` (+callbacks.recorder=...): each rank appends the
sample indices of every training and validation batch it sees to <out>/rank<r>.jsonl."""

import json
from pathlib import Path

import lightning as L


class IndexRecorder(L.Callback):
    def __init__(self, out: str):
        self.out = Path(out)

    def _write(self, trainer: L.Trainer, stage: str, batch: dict) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        row = {"stage": stage, "epoch": trainer.current_epoch, "step": trainer.global_step, "index": batch["index"].tolist()}
        with open(self.out / f"rank{trainer.global_rank}.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._write(trainer, "train", batch)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if not trainer.sanity_checking:
            self._write(trainer, "val", batch)
