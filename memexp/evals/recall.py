"""Long-context recall: the probability a model gives the stored value when asked at a gap.

`recall_at_gap` scores any `net(idx, state) -> (logits, state)` causal LM on sequences
from a `RecallDataModule` (or anything with its `batch(n, gap, generator)` method):

    recall_prob  mean softmax probability of the correct value at the answer positions
    accuracy     exact match of the arg-max at those positions
    chance       1 / n_values (a model that cannot see the key)

Models with a bounded context (a `max_len` attribute, e.g. the transformer) are given only
the last `max_len` tokens of each sequence: beyond that gap they cannot see the key and
score chance. That is the point of the study, and `context` in the result says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from memexp.data.spec import IGNORE_INDEX
from memexp.files import write_csv
from memexp.models.protocols import context_limit

if TYPE_CHECKING:
    from memexp.data.recall import RecallDataModule


@torch.no_grad()
def recall_at_gap(
    net: nn.Module,
    data: RecallDataModule,
    gap: int,
    n_samples: int = 256,
    batch_size: int = 64,
    seed: int = 1234,
    device: torch.device | str = "cpu",
) -> dict:
    """Recall of `net` at filler gap `gap` over `n_samples` fresh sequences (seeded)."""
    was_training = net.training
    net.eval()
    g = torch.Generator().manual_seed(seed + gap)
    max_len = context_limit(net)
    prob_sum, hits, count, seen_len, full_len = 0.0, 0, 0, None, None
    for start in range(0, n_samples, batch_size):
        b = data.batch(min(batch_size, n_samples - start), gap=gap, generator=g)
        x, y = b["input"], b["target"]
        full_len = x.shape[1]
        if max_len is not None and x.shape[1] > max_len:
            x, y = x[:, -max_len:], y[:, -max_len:]
        seen_len = x.shape[1]
        logits, _ = net(x.to(device), None)
        mask = y != IGNORE_INDEX
        logits, y = logits.float().cpu()[mask], y[mask]  # (N, V), (N,)
        prob_sum += logits.softmax(-1).gather(1, y[:, None]).sum().item()
        hits += (logits.argmax(-1) == y).sum().item()
        count += len(y)
    net.train(was_training)
    return {
        "gap": int(gap),
        "recall_prob": prob_sum / max(count, 1),
        "accuracy": hits / max(count, 1),
        "chance": getattr(data, "chance", float("nan")),
        "answers": count,
        "context": "full" if seen_len == full_len else f"last {seen_len} of {full_len} tokens (max_len)",
    }


def recall_curve(net: nn.Module, data: RecallDataModule, gaps: Sequence[int], **kwargs) -> list[dict]:
    return [recall_at_gap(net, data, int(g), **kwargs) for g in gaps]


FIELDS = ["model", "seed", "gap", "recall_prob", "accuracy", "chance", "answers", "context"]


def write_recall_csv(rows: list[dict], path: str | Path) -> Path:
    """rows of recall_at_gap results (plus model/seed) -> CSV (long format: one row per model, seed, gap)."""
    return write_csv(rows, path, FIELDS)
