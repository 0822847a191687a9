"""Text metrics torchmetrics does not have: distinct-n (Li et al. 2016), the diversity of generated replies."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchmetrics import Metric


class DistinctN(Metric):
    """Distinct n-grams over all n-grams of the generated sequences (corpus level).

    `update(preds)` takes token-id sequences (lists or 1-D tensors, special tokens already
    removed); sequences shorter than n add nothing. `compute()` is 0.0 before any n-gram.
    The n-grams themselves are the state (concatenated across DDP ranks), so the ratio is
    exact over the whole evaluation, not an average of per-batch ratios.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, n: int = 1, **kwargs):
        super().__init__(**kwargs)
        if n < 1:
            raise ValueError(f"DistinctN: n={n} must be >= 1")
        self.n = n
        self.add_state("ngrams", default=[], dist_reduce_fx="cat")

    def update(self, preds: Sequence[Sequence[int]]) -> None:
        for seq in preds:
            ids = torch.as_tensor(seq, dtype=torch.long, device=self.device).flatten()
            if ids.numel() >= self.n:
                self.ngrams.append(ids.unfold(0, self.n, 1))  # (len - n + 1, n)

    def compute(self) -> torch.Tensor:
        grams = self.ngrams
        if isinstance(grams, list):
            grams = torch.cat(grams) if grams else torch.empty(0, self.n, dtype=torch.long, device=self.device)
        if grams.numel() == 0:
            return torch.tensor(0.0, device=self.device)
        return torch.tensor(len(torch.unique(grams, dim=0)) / grams.shape[0], device=self.device)
