"""What every task writes into its Lightning checkpoints besides the weights: the `memexp` entry
that `memexp.runs.checkpoints.load_checkpoint` reads to rebuild the run (config, tokenizer, task kind)."""

from __future__ import annotations


def run_record(task, task_kind: str) -> dict:
    """{"config": the run's resolved config, "tokenizer": its state, "task_kind": ...}."""
    return {"config": task.run_config, "tokenizer": task.spec.tokenizer.state_dict(), "task_kind": task_kind}
