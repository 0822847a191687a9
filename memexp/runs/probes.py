"""A bare model on needle recall in a plain PyTorch loop: the quickest check that a memory spans a gap.

No Lightning, no data module: the model gets `steps` AdamW steps on the loss of the last
position only (the query), and is scored on 512 held-out sequences. Used by the HOPE model
test and `experiments/hope_recall_demo.py`; the full study is `experiment=hope_vs_baseline`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def needle_batch(
    n: int, length: int, n_filler: int, n_keys: int, n_values: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, length) tokens with the key and its value at positions 1-2 and the key again last; (n,) values.

    Vocabulary: filler | keys | values, as `memexp.data.recall`'s needle task at gap length - 4;
    drawn in fewer steps (one key per sequence needs no distinct-key draw), which is the stream
    the probe's measured numbers (docs/hope.md) were drawn from.
    """
    x = torch.randint(0, n_filler, (n, length), generator=generator)
    k = n_filler + torch.randint(0, n_keys, (n,), generator=generator)
    v = n_filler + n_keys + torch.randint(0, n_values, (n,), generator=generator)
    x[:, 1], x[:, 2], x[:, -1] = k, v, k
    return x, v


def recall_probe(
    model: nn.Module,
    *,
    steps: int,
    batch: int,
    length: int,
    window: int,
    vocab_parts: tuple[int, int, int],
    lr: float,
    seed: int,
    log_every: int = 0,
) -> float:
    """Train `model` on the final position's loss; return its accuracy on 512 held-out sequences.

    window: how many of the last tokens the model is given (its whole context for a bounded model).
    vocab_parts: (filler, keys, values) token counts; chance is 1 / values.
    """
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    for step in range(steps):
        x, y = needle_batch(batch, length, *vocab_parts, gen)
        logits, _ = model(x[:, -window:])
        loss = F.cross_entropy(logits[:, -1], y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if log_every and step % log_every == 0:
            print(f"  step {step:4d} loss {loss.item():.3f}", flush=True)
    model.eval()
    gen = torch.Generator().manual_seed(seed + 1)
    x, y = needle_batch(512, length, *vocab_parts, gen)
    with torch.no_grad():
        logits, _ = model(x[:, -window:])
    return (logits[:, -1].argmax(-1) == y).float().mean().item()
