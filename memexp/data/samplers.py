"""The training samplers and loader: the order of an epoch follows from (data seed, epoch) alone, and a run
resumed from a checkpoint continues at the batch it stopped at.

torch's RandomSampler draws its seed from the global RNG when iteration starts, after the model was
built from that RNG, so two models of different sizes at one seed saw different batches and a paired
comparison paired different data. These samplers own their generator: every model trained at one data
seed draws the same indices in the same order, whatever it consumed from the global RNG before.
Lightning calls `set_epoch` at the start of each epoch (also after a resume); iterating on its own
advances the epoch.

`ResumableLoader` is the training DataLoader of every data module: Lightning saves its `state_dict` (the
epoch and the batches of it already drawn) in each checkpoint and hands it back on resume, and the loader
then draws the rest of that epoch, so a resumed run sees exactly the batches an uninterrupted run would have.
(torchdata's StatefulDataLoader snapshots worker and prefetch state instead; these loaders' order is a pure
function of the seed, the epoch and the position, so the position is all there is to save.)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Sampler


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
        self.skip = 0  # indices of the next epoch to skip (set by ResumableLoader on resume; used once)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_samples

    def _take_start(self) -> int:
        start, self.skip = self.skip, 0
        return start

    def indices(self, epoch: int) -> list[int]:
        g = epoch_generator(self.seed, epoch)
        if self.replacement:
            return torch.randint(0, self.n, (self.num_samples,), generator=g).tolist()
        return torch.randperm(self.n, generator=g)[: self.num_samples].tolist()

    def __iter__(self) -> Iterator[int]:
        epoch, start = self.epoch, self._take_start()
        self.epoch += 1
        yield from self.indices(epoch)[start:]


class EpochPosition:
    """Where a training loader is: the epoch it draws and how many batches of it were drawn (Lightning saves
    this with each checkpoint through the loader's `state_dict`).

    The loader numbers the epochs itself: Lightning counts an epoch cut short by max_steps as finished, so after a
    resume its epoch number runs one ahead of the data's. Only the first iteration of a loader that was not
    resumed takes Lightning's number (`current`), so checkpoints without a position resume as before.
    """

    def __init__(self) -> None:
        self.epoch, self.drawn, self.started = 0, 0, False
        self.ended = False  # the epoch's batches ran out
        self.resume: tuple[int, int] | None = None

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "batches": self.drawn, "ended": self.ended}

    def load_state_dict(self, state: dict, batches_per_epoch: int | None) -> None:
        """batches_per_epoch: None for a stream of unknown length (its end is known from `ended`)."""
        epoch, batches = int(state["epoch"]), int(state["batches"])
        if batches_per_epoch is not None and batches >= batches_per_epoch:  # saved at an epoch's end: the next one
            epoch, batches = epoch + 1, 0
        elif state.get("ended"):
            # A stream of unknown length saved after its last batch: Lightning marked that batch the epoch's last and,
            # resumed, iterates once more to finish that epoch before starting the next. That iteration is empty.
            batches = -1
        self.resume = (epoch, batches)

    def begin(self, current: int) -> tuple[int, int]:
        """(epoch, batches to skip) of an iteration that starts now; -1 batches: the epoch is over (nothing to draw)."""
        if self.resume is not None:
            (epoch, skip), self.resume = self.resume, None
        else:
            epoch, skip = (self.epoch + 1 if self.started else current), 0
        self.epoch, self.drawn, self.started, self.ended = epoch, skip, True, False
        return epoch, skip


PREFETCHED_UNSIZED = 1  # batches Lightning's _PrefetchDataFetcher holds ahead for a loader without a length


class ResumableLoader(DataLoader):
    """A DataLoader whose position (EpochPosition) Lightning saves with each checkpoint and restores on resume.

    The epoch's order is drawn by the sampler (EpochSampler) or, for an iterable dataset, by the dataset (with
    `epoch`, `set_epoch` and `skip`, counted in batches). On resume the sampler skips the indices of the batches
    already drawn; a dataset without `skip` has those batches drawn and dropped.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.position = EpochPosition()

    def _order(self) -> Any:
        """The object that owns the epoch's order: the sampler, or the iterable dataset; None when Lightning put a
        plain sampler in (overfit_batches: a SequentialSampler, the same order every epoch)."""
        for owner in (self.sampler, getattr(self.batch_sampler, "sampler", None), self.dataset):
            if hasattr(owner, "set_epoch") and hasattr(owner, "epoch"):
                return owner
        return None

    def _length(self) -> int | None:
        try:
            return len(self)
        except TypeError:  # a stream without a length (ExplicitLM's JSONL)
            return None

    def state_dict(self) -> dict:
        state = self.position.state_dict()
        if self._length() is None and not self.position.ended:
            # Lightning's fetcher draws one batch ahead of the training step from a loader without a length (to see
            # the epoch's end coming): that batch was drawn but not trained on, so the resumed run draws it again
            state["batches"] = max(0, state["batches"] - PREFETCHED_UNSIZED)
        return state

    def load_state_dict(self, state: dict) -> None:
        self.position.load_state_dict(state, self._length())

    def __iter__(self) -> Iterator:
        order = self._order()
        epoch, skip = self.position.begin(order.epoch if order is not None else 0)
        drop = 0
        if skip < 0:
            self.position.drawn, self.position.ended = 0, True
            return
        if order is not None:
            order.set_epoch(epoch)
        if skip and order is self.dataset and hasattr(order, "skip"):  # an iterable dataset yielding whole batches
            order.skip = skip
        elif skip and order is not None and hasattr(order, "skip") and self.batch_size is not None:
            order.skip = skip * self.batch_size
        else:
            drop = skip
        for batch in super().__iter__():
            if drop:
                drop -= 1
                continue
            self.position.drawn += 1
            yield batch
        self.position.ended = True


class SplitLoaders:
    """The train, validation and test loaders of a synthetic data module that builds each with
    `self._loader(split, batch_size, shuffle)` (training shuffled, resumable; evaluation in order), at its
    `batch_size` and `eval_batch_size`. Put it before LightningDataModule among the bases."""

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.batch_size, shuffle=True)

    def eval_dataloader(self, split: str) -> DataLoader:
        return self._loader(split, self.eval_batch_size)

    def val_dataloader(self) -> DataLoader:
        return self.eval_dataloader("val")

    def test_dataloader(self) -> DataLoader:
        return self.eval_dataloader("test")
