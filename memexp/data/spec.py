"""What a DataModule tells the rest of a run about its data."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Targets at this value are not predicted (padding, prompt positions): the default of
# torch.nn.functional.cross_entropy and of torchmetrics' ignore_index, used by every data module and task.
IGNORE_INDEX = -100

# What each task kind consumes, in words used by the model/data mismatch error.
KIND_DESCRIPTIONS = {
    "causal_lm": "token sequences for next-token prediction (text, JSONL, synthetic recall)",
    "dialogue": "(dialogue history -> reply) pairs (LCCC-format dialogues)",
    "classification": "labelled documents (ENDEF-schema JSON)",
}


@dataclass
class DataSpec:
    """Task kind, vocabulary and shapes of a prepared dataset.

    task_kind: "causal_lm", "dialogue" or "classification".
    vocab_size: number of token ids the model must embed.
    pad_id: id used for padding (None when batches are never padded).
    tokenizer: object with encode(str) -> list[int] and decode(list[int]) -> str.
    seq_len: tokens per training window (causal LM), None when variable.
    num_classes: label count for classification, else None.
    ordered_windows: training batches continue each other row by row (state may be carried).
    memory: the explicit memory bank the data provides (a `memexp.data.explicit.bank_cache.BankCache`), None when it has none.
    answer_positions: the targets label a few answer positions per sequence (data=mqar): the causal-LM task reads out
        and scores only there, and its `acc` is the per-sequence answer accuracy averaged over sequences.
    """

    task_kind: str
    vocab_size: int
    tokenizer: Any
    pad_id: int | None = None
    seq_len: int | None = None
    num_classes: int | None = None
    ordered_windows: bool = False
    memory: Any = None
    answer_positions: bool = False
