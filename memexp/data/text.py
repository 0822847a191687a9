"""Text for causal language modelling: plain UTF-8 files, JSONL `{"text": ...}`, tiny-shakespeare.

Contract of the batches: dict(input=(B, T) long, target=(B, T) long), target = input
shifted by one, -100 where there is nothing to predict (the padded tail of the last
evaluation window).

Splits are contiguous by position (train | val | test), so no window of one split
overlaps another. Training draws windows at random offsets (`windows="random"`) or
reads `batch_size` parallel streams in order (`windows="stream"`, for models that
carry their state across windows: truncated BPTT). Evaluation windows tile the whole
split without overlap, so every token of it is scored exactly once.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from memexp.data.samplers import EpochSampler, ResumableLoader
from memexp.data.sources import TINY_SHAKESPEARE, default_data_dir, fetch
from memexp.data.spec import IGNORE_INDEX, DataSpec
from memexp.data.tokenizers import Tokenizer, build_tokenizer, tokenizer_from_state
from memexp.errors import ConfigError, DataError


def read_utf8(path: Path) -> str:
    """The whole file as text; names the byte and line of the first invalid UTF-8 sequence."""
    if not path.exists():
        raise DataError(f"data file {path} does not exist; expected a UTF-8 text file")
    if path.is_dir():
        raise DataError(f"data file {path} is a folder; expected a UTF-8 text file")
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError(f"data file {path} is empty; expected UTF-8 text")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(
            f"data file {path} is not valid UTF-8: byte {e.start} (line {line}) is {raw[e.start : e.start + 1]!r}"
        ) from None


def drop_unknown_chars(tokenizer: object, text: str) -> tuple[str, int]:
    """`text` without the characters outside a char tokenizer's vocabulary, and how many were dropped (a tokenizer
    without a char vocabulary takes any text: unchanged, 0)."""
    known = getattr(tokenizer, "stoi", None)
    if known is None:
        return text, 0
    kept = "".join(c for c in text if c in known)
    return kept, len(text) - len(kept)


def read_jsonl_text(path: Path, field: str = "text", separator: str = "\n\n") -> str:
    """Concatenate the `field` of every JSONL record; names the line of any malformed record."""
    texts = []
    for lineno, line in enumerate(read_utf8(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(
                f'{path}, line {lineno}: not valid JSON ({e.msg}); expected one {{"{field}": ...}} object per line'
            ) from None
        if not isinstance(record, dict) or not isinstance(record.get(field), str):
            raise DataError(f"{path}, line {lineno}: expected an object with a string field {field!r}")
        texts.append(record[field])
    if not texts:
        raise DataError(f'{path} holds no records; expected one {{"{field}": ...}} object per line')
    return separator.join(texts)


class RandomWindows(Dataset):
    """Item i is the window starting at token offset i (a sampler picks offsets at random)."""

    def __init__(self, tokens: torch.Tensor, seq_len: int):
        if len(tokens) <= seq_len:
            raise DataError(f"the training split has {len(tokens)} tokens, fewer than one window of data.seq_len={seq_len} + 1")
        self.tokens, self.seq_len = tokens, seq_len

    def __len__(self) -> int:
        return len(self.tokens) - self.seq_len

    def __getitem__(self, i: int) -> dict:
        chunk = self.tokens[i : i + self.seq_len + 1]
        return {"input": chunk[:-1], "target": chunk[1:]}


class TiledWindows(Dataset):
    """Non-overlapping windows covering every target token of a split once."""

    def __init__(self, tokens: torch.Tensor, seq_len: int):
        if len(tokens) < 2:
            raise DataError("an evaluation split needs at least 2 tokens")
        self.tokens, self.seq_len = tokens, seq_len
        self.n_targets = len(tokens) - 1

    def __len__(self) -> int:
        return -(-self.n_targets // self.seq_len)

    def __getitem__(self, i: int) -> dict:
        start = i * self.seq_len
        chunk = self.tokens[start : start + self.seq_len + 1]
        x, y = chunk[:-1], chunk[1:]
        pad = self.seq_len - len(x)
        if pad:
            x = torch.cat([x, x.new_zeros(pad)])
            y = torch.cat([y, y.new_full((pad,), IGNORE_INDEX)])
        return {"input": x, "target": y}


class StreamWindows(IterableDataset):
    """`batch_size` parallel streams read in order: row b of batch k+1 continues row b of batch k.

    Under DDP each rank reads its own streams. Yields whole batches (use batch_size=None).
    """

    def __init__(self, tokens: torch.Tensor, seq_len: int, batch_size: int, seed: int = 0):
        self.tokens, self.seq_len, self.batch_size, self.seed = tokens, seq_len, batch_size, seed
        self.epoch = 0
        self.skip = 0  # batches of the next epoch to skip (a resumed run; used once)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _rank(self) -> tuple[int, int]:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def _layout(self) -> tuple[int, int]:
        rank, world = self._rank()
        n_streams = self.batch_size * world
        stream_len = (len(self.tokens) - 1) // n_streams
        if stream_len < self.seq_len:
            raise DataError(f"the training split is too short for {n_streams} streams of data.seq_len={self.seq_len}")
        return rank, stream_len

    def __len__(self) -> int:
        return self._layout()[1] // self.seq_len

    def __iter__(self):
        rank, stream_len = self._layout()
        # A per-epoch shift of the window grid, so windows do not always cut at the same places.
        shift = int(torch.randint(0, self.seq_len, (1,), generator=torch.Generator().manual_seed(self.seed + self.epoch)))
        self.epoch += 1
        start, self.skip = self.skip, 0
        starts = torch.arange(rank * self.batch_size, (rank + 1) * self.batch_size) * stream_len
        for k in range(start, (stream_len - shift) // self.seq_len):
            offsets = starts[:, None] + shift + k * self.seq_len + torch.arange(self.seq_len + 1)  # (B, T+1)
            chunk = self.tokens[offsets]
            # stream_start: the first window of each stream this epoch (a model carrying state starts afresh)
            yield {"input": chunk[:, :-1], "target": chunk[:, 1:], "stream_start": torch.tensor(k == 0)}


class TextDataModule(L.LightningDataModule):
    """Character-, byte- or subword-level text for causal language models.

    Args:
        path: a UTF-8 text file (format=text) or JSONL file (format=jsonl); None means tiny-shakespeare,
            fetched into `data_dir` when missing.
        format: "text" or "jsonl".
        jsonl_field: the string field of each JSONL record.
        tokenizer: "char" (vocabulary from the training split), "byte" (256), or a local path to a
            Hugging Face tokenizer folder.
        seq_len: tokens per window.
        batch_size: training windows per batch (per device).
        eval_batch_size: windows per validation/test batch.
        splits: fractions of the text (by position) for train, val, test.
        windows: "random" (random-offset training windows) or "stream" (parallel in-order streams,
            for models that carry state across windows).
        train_windows_per_epoch: random windows per epoch; None means one pass worth (tokens // seq_len).
        num_workers, pin_memory, prefetch_factor: DataLoader settings (prefetch only with workers).
        data_dir: the data root (raw files and caches); None means $MEMEXP_DATA_DIR or ./data.
        n_tasks, task_id: corpus parts for continual learning: with n_tasks > 1 the text is cut
            into n_tasks contiguous parts of equal length and this module serves part task_id,
            split by `splits` as a whole text would be; the char vocabulary comes from the
            training splits of all parts, so every part's module has the same one.
        seed: the data seed: which training windows each step draws (with the epoch), the same for every
            model trained at this seed (`data_seed`, which follows `seed` unless set).
        unknown: characters outside a char vocabulary (text evaluated with another run's vocabulary): "error"
            (one line naming the first, the default) or "skip" (dropped; counted in `skipped_chars` per split).
    """

    task_kind = "causal_lm"

    def __init__(
        self,
        path: str | None = None,
        format: str = "text",
        jsonl_field: str = "text",
        tokenizer: str = "char",
        seq_len: int = 64,
        batch_size: int = 12,
        eval_batch_size: int = 64,
        splits: Sequence[float] = (0.9, 0.05, 0.05),
        windows: str = "random",
        train_windows_per_epoch: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        prefetch_factor: int | None = None,
        data_dir: str | None = None,
        n_tasks: int = 1,
        task_id: int = 0,
        seed: int = 0,
        unknown: str = "error",
    ):
        super().__init__()
        self.n_tasks, self.task_id, self.seed, self.unknown = int(n_tasks), int(task_id), int(seed), unknown
        self.skipped_chars: dict[str, int] = {}
        self.path, self.format, self.jsonl_field = path, format, jsonl_field
        self.tokenizer_name, self.seq_len = tokenizer, seq_len
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.splits, self.windows = tuple(splits), windows
        self.train_windows_per_epoch = train_windows_per_epoch
        self.num_workers, self.pin_memory, self.prefetch_factor = num_workers, pin_memory, prefetch_factor
        self.data_dir = Path(data_dir) if data_dir else default_data_dir()
        self.tokenizer = None
        self._split_tokens: dict[str, torch.Tensor] = {}
        self._validate()

    def _validate(self) -> None:
        if self.format not in ("text", "jsonl"):
            raise ConfigError(f"data.format={self.format!r}: expected 'text' or 'jsonl'")
        if self.windows not in ("random", "stream"):
            raise ConfigError(f"data.windows={self.windows!r}: expected 'random' or 'stream'")
        if self.unknown not in ("error", "skip"):
            raise ConfigError(f"data.unknown={self.unknown!r}: expected 'error' or 'skip'")
        if len(self.splits) != 3 or any(s < 0 for s in self.splits) or abs(sum(self.splits) - 1) > 1e-6:
            raise ConfigError(
                f"data.splits={list(self.splits)}: expected three non-negative fractions (train, val, test) summing to 1"
            )
        if self.seq_len < 1 or self.batch_size < 1:
            raise ConfigError("data.seq_len and data.batch_size must be positive")
        if self.n_tasks < 1 or not 0 <= self.task_id < self.n_tasks:
            raise ConfigError(
                f"data.task_id={self.task_id}, data.n_tasks={self.n_tasks}: expected n_tasks >= 1 and 0 <= task_id < n_tasks"
            )

    # -- files --------------------------------------------------------------------------
    def source_path(self) -> Path:
        return Path(self.path) if self.path else self.data_dir / TINY_SHAKESPEARE.relpath

    def prepare_data(self) -> None:
        if self.path is None:
            fetch(TINY_SHAKESPEARE, self.data_dir)

    def read_text(self) -> str:
        path = self.source_path()
        return read_jsonl_text(path, self.jsonl_field) if self.format == "jsonl" else read_utf8(path)

    # -- splits and tokenizer -----------------------------------------------------------
    def set_tokenizer(self, tokenizer: Tokenizer) -> None:
        """Use this tokenizer instead of fitting one."""
        self.tokenizer = tokenizer

    def restore_tokenizer(self, state: dict) -> None:
        """Use the tokenizer saved with a checkpoint (its `state_dict()`)."""
        self.set_tokenizer(tokenizer_from_state(state))

    def setup(self, stage: str | None = None) -> None:
        if self._split_tokens:
            return
        if self.path is None and not self.source_path().exists():
            self.prepare_data()
        text = self.read_text()
        if len(text) // self.n_tasks <= self.seq_len:
            raise DataError(
                f"{self.source_path()} holds {len(text)} characters, shorter than one training window of "
                f"data.seq_len={self.seq_len} (+1){f' per part of {self.n_tasks}' if self.n_tasks > 1 else ''}; "
                f"use a longer text or a smaller data.seq_len"
            )
        part = len(text) // self.n_tasks
        parts = [self._split(text[i * part : (i + 1) * part if i < self.n_tasks - 1 else len(text)]) for i in range(self.n_tasks)]
        pieces = parts[self.task_id]
        if self.tokenizer is None:
            self.tokenizer = build_tokenizer(self.tokenizer_name, "".join(p["train"] for p in parts))
        for name, piece in pieces.items():
            if self.unknown == "skip" and getattr(self.tokenizer, "stoi", None) is not None:  # a char vocabulary
                piece, self.skipped_chars[name] = drop_unknown_chars(self.tokenizer, piece)
            try:
                ids = self.tokenizer.encode(piece)
            except DataError as e:
                raise DataError(
                    f"{self.source_path()} ({name} split): {e}, or data.unknown=skip to drop such characters"
                ) from None
            self._split_tokens[name] = torch.tensor(ids, dtype=torch.long)

    def _split(self, text: str) -> dict[str, str]:
        n = len(text)
        a = int(n * self.splits[0])
        b = a + int(n * self.splits[1])
        return {"train": text[:a], "val": text[a:b], "test": text[b:]}

    def tokens(self, split: str) -> torch.Tensor:
        self.setup()
        return self._split_tokens[split]

    @property
    def spec(self) -> DataSpec:
        self.setup()
        return DataSpec(
            task_kind=self.task_kind,
            vocab_size=self.tokenizer.vocab_size,
            tokenizer=self.tokenizer,
            seq_len=self.seq_len,
            ordered_windows=self.windows == "stream",
        )

    # -- loaders ------------------------------------------------------------------------
    def _loader(self, dataset: Dataset, loader: type[DataLoader] = DataLoader, **kwargs) -> DataLoader:
        return loader(
            dataset,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            prefetch_factor=self.prefetch_factor if self.num_workers > 0 else None,
            **kwargs,
        )

    def train_dataloader(self) -> DataLoader:
        tokens = self.tokens("train")
        if self.windows == "stream":
            return self._loader(StreamWindows(tokens, self.seq_len, self.batch_size, self.seed), ResumableLoader, batch_size=None)
        windows = RandomWindows(tokens, self.seq_len)
        per_epoch = self.train_windows_per_epoch or max(len(tokens) // self.seq_len, self.batch_size)
        sampler = EpochSampler(len(windows), self.seed, num_samples=per_epoch, replacement=True)
        return self._loader(windows, ResumableLoader, batch_size=self.batch_size, sampler=sampler, drop_last=True)

    def eval_dataloader(self, split: str) -> DataLoader:
        return self._loader(TiledWindows(self.tokens(split), self.seq_len), batch_size=self.eval_batch_size)

    def val_dataloader(self) -> DataLoader:
        return self.eval_dataloader("val")

    def test_dataloader(self) -> DataLoader:
        return self.eval_dataloader("test")


class RandomBytesDataModule(TextDataModule):
    """Uniformly random bytes (vocab 256), generated from a seed: a quick check that a model
    runs end to end. Nothing can be learned beyond ln(256) = 5.545 nats per token."""

    def __init__(self, num_tokens: int = 200_000, **kwargs):
        kwargs.setdefault("tokenizer", "byte")
        super().__init__(**kwargs)
        self.num_tokens = num_tokens

    def prepare_data(self) -> None:
        pass

    def source_path(self) -> Path:
        return Path(f"<random bytes, seed {self.seed}>")

    def setup(self, stage: str | None = None) -> None:
        if self._split_tokens:
            return
        if self.tokenizer is None:
            self.tokenizer = build_tokenizer("byte")
        g = torch.Generator().manual_seed(self.seed)
        tokens = torch.randint(0, 256, (self.num_tokens,), generator=g)
        a = int(self.num_tokens * self.splits[0])
        b = a + int(self.num_tokens * self.splits[1])
        self._split_tokens = {"train": tokens[:a], "val": tokens[a:b], "test": tokens[b:]}
