"""The training samplers: the order of an epoch follows from (data seed, epoch) alone.

torch's RandomSampler draws its seed from the global RNG when iteration starts, after the model was
built from that RNG, so two models of different sizes at one seed saw different batches and a paired
comparison paired different data. These samplers own their generator: every model trained at one data
seed draws the same indices in the same order, whatever it consumed from the global RNG before.
Lightning calls `set_epoch` at the start of each epoch (also after a resume); iterating on its own
advances the epoch.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A generator for one epoch of one data seed (distinct streams for distinct pairs)."""
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))


class EpochSampler(Sampler[int]):
    """`num_samples` indices of range(n) per epoch: a permutation (replacement=False; num_samples
    defaults to n) or uniform draws with replacement (random windows of a text)."""

    def __init__(self, n: int, seed: int = 0, num_samples: int | None = None, replacement: bool = False):
        if n < 1:
            raise ValueError(f"EpochSampler needs at least one item, got n={n}")
        self.n, self.seed, self.replacement = int(n), int(seed), bool(replacement)
        self.num_samples = int(num_samples) if num_samples is not None else self.n
        if not self.replacement and self.num_samples > self.n:
            raise ValueError(f"num_samples={self.num_samples} > n={self.n} without replacement")
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_samples

    def indices(self, epoch: int) -> list[int]:
        g = epoch_generator(self.seed, epoch)
        if self.replacement:
            return torch.randint(0, self.n, (self.num_samples,), generator=g).tolist()
        return torch.randperm(self.n, generator=g)[: self.num_samples].tolist()

    def __iter__(self) -> Iterator[int]:
        epoch = self.epoch
        self.epoch += 1
        yield from self.indices(epoch)
