"""Perplexity by context length.

Definition. The split is tiled into non-overlapping windows of L = max(lengths) tokens
(the same `TiledWindows` as the plain evaluation at data.seq_len = L; the padded tail of
the last window is ignored). Each window is run from an empty state, so the target at
0-based position p was predicted from p + 1 tokens of context. For the sorted lengths
l_1 < ... < l_n, bin i holds the positions p in [l_{i-1}, l_i) (l_0 = 0), and

    ppl[i]      = exp(mean NLL of the targets in bin i)
    ppl_upto[i] = exp(mean NLL of the targets at positions < l_i)

so ppl_upto of the last bin is exactly the plain evaluation's perplexity when its windows
are L tokens long (tested). Falling ppl over bins means the model uses longer context.

A model with a bounded context (`max_len` < L) is run on windows of max_len and the bins
beyond it are left empty (NaN, with a note).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from memexp.data.spec import IGNORE_INDEX
from memexp.data.text import TiledWindows
from memexp.files import write_csv
from memexp.models.protocols import context_limit


@torch.no_grad()
def binned_perplexity(
    net: nn.Module, tokens: torch.Tensor, lengths: Sequence[int], batch_size: int = 16, device: torch.device | str = "cpu"
) -> list[dict]:
    """tokens (N,) of one split -> one row per bin: {length, lo, hi, tokens, nll, ppl, ppl_upto, note}."""
    lengths = sorted(int(n) for n in lengths)
    L = lengths[-1]
    max_len = context_limit(net)
    window = min(L, max_len) if max_len else L
    was_training = net.training
    net.eval()
    nll_sum = torch.zeros(L, dtype=torch.float64)
    count = torch.zeros(L, dtype=torch.float64)
    for b in DataLoader(TiledWindows(tokens, window), batch_size=batch_size):
        x, y = b["input"].to(device), b["target"]
        logits, _ = net(x, None)
        nll = F.cross_entropy(logits.float().cpu().transpose(1, 2), y, ignore_index=IGNORE_INDEX, reduction="none")
        valid = (y != IGNORE_INDEX).double()
        nll_sum[:window] += (nll.double() * valid).sum(0)
        count[:window] += valid.sum(0)
    net.train(was_training)
    rows, lo = [], 0
    for hi in lengths:
        n, s = count[lo:hi].sum().item(), nll_sum[lo:hi].sum().item()
        n_up, s_up = count[:hi].sum().item(), nll_sum[:hi].sum().item()
        note = "" if hi <= window else f"beyond the model's context (max_len={max_len})"
        rows.append(
            {
                "length": hi,
                "lo": lo,
                "hi": hi,
                "tokens": int(n),
                "nll": s / n if n else float("nan"),
                "ppl": math.exp(s / n) if n else float("nan"),
                "ppl_upto": math.exp(s_up / n_up) if n_up and hi <= window else float("nan"),
                "note": note,
            }
        )
        lo = hi
    return rows


FIELDS = ["model", "seed", "split", "length", "lo", "hi", "tokens", "nll", "ppl", "ppl_upto", "note"]


def write_binned_csv(rows: list[dict], path: str | Path) -> Path:
    return write_csv(rows, path, FIELDS)
