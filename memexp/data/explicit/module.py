"""ExplicitLMDataModule: streamed JSONL text or SFT conversations for a frozen chat-model
backbone, and the explicit memory bank built from a knowledge base."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from torch.utils.data import DataLoader

from memexp.data.explicit.bank_cache import BankCache, build_bank_cache
from memexp.data.explicit.records import FORMATS, check_not_empty, numbered_lines
from memexp.data.explicit.stream import JSONLStream
from memexp.data.samplers import ResumableLoader
from memexp.data.sources import default_data_dir
from memexp.data.spec import DataSpec
from memexp.data.tokenizers import Tokenizer, build_tokenizer, tokenizer_from_state
from memexp.errors import ConfigError, DataError


class ExplicitLMDataModule(L.LightningDataModule):
    """Text for ExplicitLM (frozen Qwen3 + explicit token memory bank), streamed, never loaded whole.

    Batches: dict(input=(B, T) long, target=(B, T) long), T = seq_len, target -100 where nothing
    is predicted (padding; for SFT also every token outside the assistant turns). See
    `memexp.data.explicit.samples` and `.stream` for the sample and sharding contracts.

    Args:
        path: the training JSONL file (required before use).
        val_path, test_path: JSONL files for validation / test (their first `eval_records` records).
            When absent, the first `eval_records` records of `path` are validation, the next
            `eval_records` test (only the splits carved from it), and training skips them.
        eval_records: records per evaluation split.
        format: "pretrain" ({"text": ...} per line) or "sft" ({"conversations": [...]} per line).
        tokenizer: "qwen" (Qwen3's, built offline and cached under data_dir) or a local Hugging
            Face tokenizer folder (e.g. the Qwen3 backbone's).
        seq_len: tokens per sample (records are cut or padded to it).
        batch_size: training samples per batch (per device).
        eval_batch_size: samples per validation/test batch.
        shuffle_buffer: training samples shuffled together (1: file order).
        knowledge_path: knowledge-base JSON array for the memory bank; None: no bank.
        knowledge_num: bank rows N (the first N knowledge items; rows past the file's end are pad).
        knowledge_length: tokens per bank row L.
        cache_path: where the bank is cached; None means <data_dir>/explicit/<stem>_N<N>_L<L>.pt.
        recompute_cache: rebuild the bank even when a matching cache exists.
        num_workers: DataLoader workers (each reads its own share of the records).
        data_dir: the data root; None means $MEMEXP_DATA_DIR or ./data.
        seed: seed of the shuffle (with the epoch).
    """

    task_kind = "causal_lm"

    def __init__(
        self,
        path: str | None = None,
        val_path: str | None = None,
        test_path: str | None = None,
        eval_records: int = 200,
        format: str = "pretrain",
        tokenizer: str = "qwen",
        seq_len: int = 512,
        batch_size: int = 4,
        eval_batch_size: int = 8,
        shuffle_buffer: int = 1000,
        knowledge_path: str | None = None,
        knowledge_num: int = 1024,
        knowledge_length: int = 16,
        cache_path: str | None = None,
        recompute_cache: bool = False,
        num_workers: int = 0,
        data_dir: str | None = None,
        seed: int = 0,
    ):
        super().__init__()
        self.path, self.val_path, self.test_path = path, val_path, test_path
        self.eval_records, self.format, self.tokenizer_name = eval_records, format, tokenizer
        self.seq_len, self.batch_size, self.eval_batch_size = seq_len, batch_size, eval_batch_size
        self.shuffle_buffer, self.num_workers, self.seed = shuffle_buffer, num_workers, seed
        self.knowledge_path, self.knowledge_num, self.knowledge_length = knowledge_path, knowledge_num, knowledge_length
        self.recompute_cache = recompute_cache
        self.data_dir = Path(data_dir) if data_dir else default_data_dir()
        self.cache_path = Path(cache_path) if cache_path else self._default_cache_path()
        self.tokenizer = None
        self.bank: BankCache | None = None
        self._validate()

    def _validate(self) -> None:
        if self.format not in FORMATS:
            raise ConfigError(f"data.format={self.format!r}: expected one of {', '.join(FORMATS)}")
        for field in ("seq_len", "batch_size", "eval_batch_size", "shuffle_buffer", "eval_records"):
            if not isinstance(getattr(self, field), int) or getattr(self, field) < 1:
                raise ConfigError(f"data.{field}={getattr(self, field)!r}: expected a positive integer")
        for field in ("knowledge_num", "knowledge_length"):
            if not isinstance(getattr(self, field), int) or getattr(self, field) < 1:
                raise ConfigError(f"data.{field}={getattr(self, field)!r}: expected a positive integer")
        if not isinstance(self.num_workers, int) or self.num_workers < 0:
            raise ConfigError(f"data.num_workers={self.num_workers!r}: expected an integer >= 0")

    def _default_cache_path(self) -> Path | None:
        if not self.knowledge_path:
            return None
        stem = Path(self.knowledge_path).stem
        return self.data_dir / "explicit" / f"{stem}_N{self.knowledge_num}_L{self.knowledge_length}.pt"

    # -- tokenizer and memory bank ----------------------------------------------------------
    def set_tokenizer(self, tokenizer: Tokenizer) -> None:
        """Use this tokenizer instead of building one."""
        self.tokenizer = tokenizer

    def restore_tokenizer(self, state: dict) -> None:
        """Use the tokenizer saved with a checkpoint (its `state_dict()`)."""
        self.set_tokenizer(tokenizer_from_state(state, data_dir=self.data_dir))

    def _tokenizer(self) -> Tokenizer:
        if self.tokenizer is None:
            self.tokenizer = build_tokenizer(self.tokenizer_name, data_dir=self.data_dir)
        return self.tokenizer

    def _bank(self) -> BankCache | None:
        if self.knowledge_path and self.bank is None:
            self.bank = build_bank_cache(
                self.knowledge_path,
                self._tokenizer(),
                self.knowledge_num,
                self.knowledge_length,
                self.cache_path,
                recompute=self.recompute_cache,
            )
        return self.bank

    def prepare_data(self) -> None:
        """Build (or check) the memory bank cache once, before the ranks start."""
        self._bank()

    def setup(self, stage: str | None = None) -> None:
        if not self.path:
            raise ConfigError("data.path=None: expected a JSONL training file")
        check_not_empty(self.path, self.format)
        for extra in (self.val_path, self.test_path):
            if extra:
                check_not_empty(extra, self.format)
        carved = self._carved()
        if carved:
            need = self.eval_records * len(carved) + 1
            have = sum(1 for _ in zip(range(need), numbered_lines(self.path)))
            if have < need:
                raise DataError(
                    f"{self.path} has {have} records; the first {self.eval_records * len(carved)} are kept for "
                    f"{' and '.join(carved)} (data.eval_records={self.eval_records}), which leaves none to train on"
                )
        self._tokenizer()
        self._bank()

    @property
    def spec(self) -> DataSpec:
        tokenizer = self._tokenizer()
        return DataSpec(
            task_kind=self.task_kind,
            vocab_size=len(tokenizer),
            tokenizer=tokenizer,
            pad_id=tokenizer.pad_id,
            seq_len=self.seq_len,
            memory=self._bank(),
        )

    # -- splits -------------------------------------------------------------------------------
    def _carved(self) -> list[str]:
        """The evaluation splits taken from the head of `path`, in order."""
        return [s for s, p in (("val", self.val_path), ("test", self.test_path)) if not p]

    def _stream(self, split: str) -> JSONLStream:
        if not self.path:
            raise ConfigError("data.path=None: expected a JSONL training file")
        carved, e = self._carved(), self.eval_records
        common = {"tokenizer": self._tokenizer(), "fmt": self.format, "seq_len": self.seq_len}
        if split == "train":
            start = e * len(carved)
            return JSONLStream(self.path, start=start, shuffle_buffer=self.shuffle_buffer, seed=self.seed, **common)
        if split not in ("val", "test"):
            raise ConfigError(f"split {split!r}: expected 'train', 'val' or 'test'")
        if split in carved:
            start = e * carved.index(split)
            return JSONLStream(self.path, start=start, stop=start + e, **common)
        return JSONLStream(self.val_path if split == "val" else self.test_path, stop=e, **common)

    # -- loaders ------------------------------------------------------------------------------
    def _loader(self, dataset: JSONLStream, batch_size: int, loader: type[DataLoader] = DataLoader) -> DataLoader:
        return loader(dataset, batch_size=batch_size, num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        # resumable: a resumed run redraws the stream's epoch (the shuffle is seeded by seed, epoch and shard) and
        # drops the batches the checkpoint had already drawn, so it continues with the batch it stopped at
        return self._loader(self._stream("train"), self.batch_size, ResumableLoader)

    def eval_dataloader(self, split: str) -> DataLoader:
        """Samples of split "val" or "test" in file order ("train": the training stream)."""
        return self._loader(self._stream(split), self.eval_batch_size)

    def val_dataloader(self) -> DataLoader:
        return self.eval_dataloader("val")

    def test_dataloader(self) -> DataLoader:
        return self.eval_dataloader("test")
