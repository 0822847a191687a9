"""A JSONL file streamed as samples, split across DDP ranks and DataLoader workers.

Contract: over all ranks x workers, each record of [start, stop) (counted in non-blank lines)
is read once per epoch: record k goes to shard k mod (world * workers), shard = rank * workers +
worker. Every shard reads the file from the top and skips the lines of others without parsing
them, so memory stays flat whatever the file's size. Training shuffles within a buffer of
`shuffle_buffer` samples, seeded by (seed, epoch, shard): the same run sees the same order.

Under DDP the shards may differ by one record, so ranks can end an epoch one batch apart:
bound training by trainer.max_steps (or limit_train_batches) when running on several ranks.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import IterableDataset, get_worker_info

from memexp.data.explicit.records import numbered_lines, parse_record
from memexp.data.explicit.samples import pretrain_sample, sft_sample
from memexp.errors import DataError


def rank_and_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class JSONLStream(IterableDataset):
    """Samples (dict(input=(T,), target=(T,))) of records [start, stop) of a pretrain or SFT JSONL file.

    rank / world_size: None means torch.distributed's (0 and 1 when not initialised).
    """

    def __init__(
        self,
        path: str | Path,
        tokenizer: Any,
        fmt: str,
        seq_len: int,
        start: int = 0,
        stop: int | None = None,
        shuffle_buffer: int = 1,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
    ):
        self.path, self.tokenizer, self.fmt, self.seq_len = Path(path), tokenizer, fmt, seq_len
        self.start, self.stop = start, stop
        self.shuffle_buffer, self.seed = max(1, shuffle_buffer), seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _shard(self) -> tuple[int, int]:
        """(this shard's index, number of shards)."""
        rank, world = rank_and_world()
        rank = rank if self.rank is None else self.rank
        world = world if self.world_size is None else self.world_size
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        return rank * workers + worker, world * workers

    def _records(self, shard: int, shards: int) -> Iterator[tuple[int, Any]]:
        """(line number, parsed record) of this shard's records."""
        for k, (line_no, line) in enumerate(numbered_lines(self.path)):
            if self.stop is not None and k >= self.stop:
                return
            if k < self.start or (k - self.start) % shards != shard:
                continue
            yield line_no, parse_record(self.path, line_no, line, self.fmt)

    def _sample(self, line_no: int, record: Any) -> dict[str, torch.Tensor]:
        try:
            if self.fmt == "pretrain":
                return pretrain_sample(self.tokenizer, record, self.seq_len)
            return sft_sample(self.tokenizer, record, self.seq_len)
        except DataError as e:
            raise DataError(f"{self.path}, line {line_no}: {e}") from None

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        shard, shards = self._shard()
        epoch = self.epoch
        self.epoch += 1  # a persistent worker's copy counts its own epochs
        samples = (self._sample(line_no, rec) for line_no, rec in self._records(shard, shards))
        if self.shuffle_buffer <= 1:
            yield from samples
            return
        rng = random.Random(f"{self.seed}/{epoch}/{shard}")
        buffer: list[dict[str, torch.Tensor]] = []
        for sample in samples:
            if len(buffer) < self.shuffle_buffer:
                buffer.append(sample)
                continue
            i = rng.randrange(len(buffer))
            buffer[i], sample = sample, buffer[i]
            yield sample
        rng.shuffle(buffer)
        yield from buffer
