"""What every task writes into its Lightning checkpoints besides the weights: the `memexp` entry
that `memexp.runs.checkpoints.load_checkpoint` reads to rebuild the run (config, tokenizer, task kind)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import lightning as L


def run_record(task: L.LightningModule, task_kind: str) -> dict:
    """{"config": the run's resolved config, "tokenizer": its state, "task_kind": ...}.

    `task` is a memexp task: it has `run_config` and `spec` (`memexp.data.spec.DataSpec`).
    """
    return {"config": task.run_config, "tokenizer": task.spec.tokenizer.state_dict(), "task_kind": task_kind}
