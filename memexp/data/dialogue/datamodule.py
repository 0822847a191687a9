"""LCCC-format dialogues for (history -> reply) models: prepare once into chunks, stream them.

Contract of the batches (see `collate_dialogues`): dict(context (B, Lc) long, context_mask
(B, Lc) bool, reply_in (B, Lr) = SOS u, reply_out (B, Lr) = u EOS, padding = pad_id,
index (B,) long).

- `prepare_data` converts the raw corpus into `cache_dir` once (chunks, vocabulary.json,
  manifest.json written last; an interrupted preparation continues). Lightning calls it on
  one rank only; the other ranks wait at its barrier and then read the finished folder.
- Training streams the "train" split, reshuffled every epoch: the training loader sets the
  stream's epoch from `trainer.current_epoch` each time Lightning iterates it (also right
  after resuming), so no hook has to remember to do it.
- DDP: every rank yields the same number of training batches per epoch, namely
  floor(smallest rank's sample count / batch_size). Ranks read different chunks, so their
  counts differ; a rank that ran out while others still stepped would hang the gradient
  all-reduce. The price is at most about one chunk's worth of samples per rank per epoch
  (a different part each epoch, as chunk order is reshuffled). Validation and test read
  every sample of their split exactly once over all ranks (no collective runs per batch,
  so uneven counts are harmless there), and their loaders report no length, because with
  several workers the number of batches depends on how chunks fall to workers.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import lightning as L
from torch.utils.data import DataLoader

from memexp.data.dialogue.prepare import download_lccc, prepare_dialogues
from memexp.data.dialogue.readers import hold_out
from memexp.data.dialogue.stream import DialogueStream, load_manifest
from memexp.data.dialogue.vocab import DialogueVocab
from memexp.data.samplers import EpochPosition
from memexp.data.sources import RawFile, default_data_dir, fetch
from memexp.data.spec import DataSpec
from memexp.errors import ConfigError, DataError
from memexp.files import text_digest

# The 1,400-dialogue sample that ships with CDial-GPT (LCCC's authors): offline tests and demos.
LCCC_TOY = RawFile(
    relpath="lccc_toy/toy_data.json",
    url="https://raw.githubusercontent.com/thu-coai/CDial-GPT/master/data/toy_data.json",
    description="LCCC toy sample (CDial-GPT data/toy_data.json)",
)
# Its 10,000 single-exchange dialogues (one per line, the two utterances separated by a tab): HGD-MemNet's study.
LCCC_TOY_TRAIN = RawFile(
    relpath="lccc_toy/toy_train.txt",
    url="https://raw.githubusercontent.com/thu-coai/CDial-GPT/master/data/toy_train.txt",
    md5="5eb9bf3d8232ca4f307b3b7d5969583d",
    size=804_867,
    description="LCCC sample of 10,000 dialogues (CDial-GPT data/toy_train.txt)",
)
KNOWN_FILES = {f.relpath: f for f in (LCCC_TOY, LCCC_TOY_TRAIN)}
LCCC_BASE_DIR = "lccc_base"  # LCCC-base downloads land in <data_dir>/lccc_base/
SPLIT_NAMES = {"train": "train", "val": "valid", "valid": "valid", "test": "test"}


def _default_cache_root(data_dir: Path) -> Path:
    """<data_dir>/prepared, or the user's cache folder when the data root is read-only
    (a lab's shared raw-data folder)."""
    root = data_dir / "prepared"
    probe = root if root.exists() else data_dir
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    # A folder without write bits counts as read-only even for root, whom os.access lets write anywhere.
    if os.access(probe, os.W_OK) and probe.stat().st_mode & 0o222:
        return root
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "memexp" / "prepared"


class EpochBatches:
    """The training loader: the same number of batches on every rank, a fresh shuffle each epoch.

    Each `iter()` first sets the stream's epoch (the first one: `epoch_of()`, the trainer's current epoch; then
    the next, or the saved position's on resume), then yields the first `num_batches` batches of the wrapped
    DataLoader. Lightning saves its position with each checkpoint; a resumed run reads and drops the batches of
    the epoch already trained on (the stream's order is a function of seed, epoch, rank and worker).
    """

    def __init__(self, loader: DataLoader, stream: DialogueStream, num_batches: int, epoch_of: Callable[[], int]):
        self.loader, self.stream, self.num_batches, self.epoch_of = loader, stream, num_batches, epoch_of
        self.position = EpochPosition()

    def __len__(self) -> int:
        return self.num_batches

    def state_dict(self) -> dict:
        return self.position.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.position.load_state_dict(state, self.num_batches)

    def __iter__(self) -> Iterator[dict]:
        epoch, skip = self.position.begin(self.epoch_of())
        self.stream.set_epoch(epoch)
        for i, batch in enumerate(self.loader):
            if i >= self.num_batches:
                break
            if i >= skip:
                self.position.drawn += 1
                yield batch


class UnsizedBatches:
    """A DataLoader without `len`: evaluation runs until the stream is exhausted."""

    def __init__(self, loader: DataLoader):
        self.loader = loader

    def __iter__(self) -> Iterator[dict]:
        return iter(self.loader)


class DialogueDataModule(L.LightningDataModule):
    """(dialogue history -> reply) pairs from an LCCC-format corpus, prepared into chunks and streamed.

    Args:
        source: the raw corpus: a JSON/JSONL/TSV file or a folder of per-split files (see
            `prepare_dialogues`). None: LCCC-base, downloaded into `<data_dir>/lccc_base/`.
        cache_dir: where the prepared chunks go. None: `<data_dir>/prepared/<source name>-<hash of
            the preparation settings>` (the user's cache folder when the data root is read-only).
        vocab: "build" (from the training split) or the path of a WordPiece vocab.txt.
        min_freq: a built vocabulary keeps tokens seen at least this often.
        max_size: a built vocabulary keeps at most this many tokens (4 specials included); None: all.
        chunk_size: dialogues per chunk file.
        skip_bad: skip malformed records (counted in the manifest) instead of stopping.
        max_history: utterances of history before each reply.
        max_context_len: history tokens kept (the most recent).
        max_reply_len: reply tokens predicted per sample (EOS included).
        batch_size: training pairs per batch (per device).
        eval_batch_size: pairs per validation/test batch.
        buffer_size: samples in each worker's shuffle buffer.
        seed: base seed of the shuffles (the epoch is mixed in).
        num_workers: DataLoader workers per rank.
        data_dir: the data root (raw files and caches); None means $MEMEXP_DATA_DIR or ./data.
        holdout: for a source file of training dialogues only: its last `holdout` dialogues become the valid
            (first half) and test (second half) splits (`memexp.data.dialogue.readers.hold_out`); 0: none.
    """

    task_kind = "dialogue"

    def __init__(
        self,
        source: str | None = None,
        cache_dir: str | None = None,
        vocab: str = "build",
        min_freq: int = 1,
        max_size: int | None = None,
        chunk_size: int = 10_000,
        skip_bad: bool = False,
        max_history: int = 4,
        max_context_len: int = 128,
        max_reply_len: int = 32,
        batch_size: int = 32,
        eval_batch_size: int = 64,
        buffer_size: int = 2048,
        seed: int = 0,
        num_workers: int = 0,
        data_dir: str | None = None,
        holdout: int = 0,
    ):
        super().__init__()
        for field, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size), ("chunk_size", chunk_size)):
            if value < 1:
                raise ConfigError(f"data.{field}={value} must be a positive integer")
        if num_workers < 0:
            raise ConfigError(f"data.num_workers={num_workers} must be >= 0")
        self.source, self.vocab_setting = source, vocab
        self.min_freq, self.max_size, self.chunk_size, self.skip_bad = min_freq, max_size, chunk_size, skip_bad
        self.max_history, self.max_context_len, self.max_reply_len = max_history, max_context_len, max_reply_len
        self.batch_size, self.eval_batch_size, self.buffer_size = batch_size, eval_batch_size, buffer_size
        self.seed, self.num_workers, self.holdout = seed, num_workers, int(holdout)
        self.data_dir = Path(data_dir) if data_dir else default_data_dir()
        self.cache_dir = Path(cache_dir) if cache_dir else _default_cache_root(self.data_dir) / self._cache_name()
        self._cache_given = cache_dir is not None
        self.vocab: DialogueVocab | None = None  # set by setup() or restore_tokenizer()
        self.streams: dict[str, DialogueStream] = {}
        self.last_preparation: dict | None = None  # {"manifest", "seconds", "already_prepared"}

    # -- files ----------------------------------------------------------------------------
    def _cache_name(self) -> str:
        name = Path(self.source).stem if self.source else LCCC_BASE_DIR
        settings = {
            "source": str(Path(self.source).resolve()) if self.source else LCCC_BASE_DIR,
            "vocab": self.vocab_setting,
            "min_freq": self.min_freq,
            "max_size": self.max_size,
            "chunk_size": self.chunk_size,
            "skip_bad": self.skip_bad,
        } | ({"holdout": self.holdout} if self.holdout else {})
        return f"{name}-{text_digest(json.dumps(settings, sort_keys=True), 'sha1', 8)}"

    def _raw_source(self) -> Path:
        """The raw corpus, fetched or downloaded when it is a known file that is missing."""
        if self.source is None:
            download_lccc(self.data_dir / LCCC_BASE_DIR)
            return self.data_dir / LCCC_BASE_DIR
        path = Path(self.source)
        if not path.exists():
            try:
                rel = path.resolve().relative_to(self.data_dir.resolve()).as_posix()
            except ValueError:
                rel = None
            if rel in KNOWN_FILES:
                path = fetch(KNOWN_FILES[rel], self.data_dir)
                return self._split(path)
            raise DataError(
                f"data.source={path} does not exist; expected an LCCC-format JSON, JSONL or TSV file or a folder of them"
            )
        return self._split(path)

    def _split(self, path: Path) -> Path:
        if self.holdout:
            return hold_out(path, self.cache_dir.with_name(f"{self.cache_dir.name}-split"), self.holdout, self.skip_bad)
        return path

    def is_prepared(self) -> bool:
        """Whether cache_dir holds a finished preparation (its manifest.json)."""
        return (self.cache_dir / "manifest.json").is_file()

    def prepare(self, progress: bool | None = None) -> dict:
        """Prepare the cache (once); returns {"manifest", "seconds", "already_prepared", "cache_dir"}."""
        already = self.is_prepared()
        start = time.perf_counter()
        vocab = self.vocab_setting
        if isinstance(vocab, str) and vocab != "build" and not Path(vocab).is_file():
            raise DataError(f"data.vocab={vocab}: no such file; expected 'build' or the path of a WordPiece vocab.txt")
        manifest = prepare_dialogues(
            self._raw_source(),
            self.cache_dir,
            vocab=vocab,
            min_freq=self.min_freq,
            max_size=self.max_size,
            chunk_size=self.chunk_size,
            skip_bad=self.skip_bad,
            progress=progress,
        )
        self.last_preparation = {
            "manifest": manifest,
            "seconds": time.perf_counter() - start,
            "already_prepared": already,
            "cache_dir": str(self.cache_dir),
        }
        return self.last_preparation

    def prepare_data(self) -> None:
        """Lightning's hook (one rank): prepare the cache."""
        self.prepare()

    def _ensure_prepared(self) -> None:
        if not self.is_prepared():
            self.prepare()

    # -- vocabulary and streams -------------------------------------------------------------
    def restore_tokenizer(self, state: dict) -> None:
        """Use the vocabulary saved with a checkpoint (streams check it against the cache's).

        A source not prepared with it (another file given to `memexp.evaluate data_path=`) is prepared with this
        vocabulary, into a cache named for it: words it lacks become <unk> (counted, `unk_tokens`)."""
        self.vocab = DialogueVocab.from_state(state)
        if not self._cache_given and not self._prepared_with(self.vocab):
            self.vocab_setting = self.vocab
            self.cache_dir = self.cache_dir.with_name(f"{self.cache_dir.name}-vocab-{self.vocab.checksum[:10]}")

    def _prepared_with(self, vocab: DialogueVocab) -> bool:
        if not self.is_prepared():
            return False
        try:
            file = load_manifest(self.cache_dir)["vocab"].get("file", "vocabulary.json")
            return DialogueVocab.load(self.cache_dir / file).checksum == vocab.checksum
        except (DataError, ConfigError, OSError, KeyError):
            return False

    @property
    def tokenizer(self) -> DialogueVocab:
        """The vocabulary: restored from a checkpoint, else the prepared cache's vocabulary.json."""
        if self.vocab is None:
            self._ensure_prepared()
            self.vocab = DialogueVocab.load(
                self.cache_dir / load_manifest(self.cache_dir)["vocab"].get("file", "vocabulary.json")
            )
        return self.vocab

    def stream(self, split: str) -> DialogueStream:
        """The DialogueStream of "train", "val"/"valid" or "test"."""
        if split not in SPLIT_NAMES:
            raise ConfigError(f"split {split!r}: expected 'train', 'val' or 'test'")
        name = SPLIT_NAMES[split]
        if name not in self.streams:
            self._ensure_prepared()
            self.streams[name] = DialogueStream(
                self.cache_dir,
                name,
                vocab=self.tokenizer,
                max_history=self.max_history,
                max_context_len=self.max_context_len,
                max_reply_len=self.max_reply_len,
                shuffle=name == "train",
                buffer_size=self.buffer_size,
                seed=self.seed,
            )
        return self.streams[name]

    def setup(self, stage: str | None = None) -> None:
        """Open the streams the stage needs (preparing the cache first when it is missing)."""
        names = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}.get(stage, ("train", "val", "test"))
        for split in names:
            self.stream(split)

    @property
    def spec(self) -> DataSpec:
        """Task kind 'dialogue', vocabulary size, tokenizer and pad id."""
        vocab = self.tokenizer
        return DataSpec(task_kind=self.task_kind, vocab_size=vocab.vocab_size, tokenizer=vocab, pad_id=vocab.pad_id)

    # -- loaders ------------------------------------------------------------------------------
    def _loader(self, stream: DialogueStream, batch_size: int) -> DataLoader:
        # Workers are not persistent: each epoch's workers copy the stream with its new epoch.
        return DataLoader(stream, batch_size=batch_size, collate_fn=stream.collate_fn, num_workers=self.num_workers)

    def _world(self) -> int:
        trainer = self.trainer
        return trainer.world_size if trainer is not None else 1

    def train_dataloader(self) -> EpochBatches:
        """The train split, the same number of batches on every rank, reshuffled each epoch."""
        stream = self.stream("train")
        world = self._world()
        fewest = min(stream.samples_on_rank(r, world) for r in range(world))
        if fewest == 0:
            raise DataError(f"{self.cache_dir}: the train split has {stream.num_samples} pairs, too few for {world} ranks")
        num_batches = max(1, fewest // self.batch_size)
        epoch_of = lambda: self.trainer.current_epoch if self.trainer is not None else 0  # noqa: E731
        return EpochBatches(self._loader(stream, self.batch_size), stream, num_batches, epoch_of)

    def eval_dataloader(self, split: str) -> UnsizedBatches:
        """Every sample of `split` once over all ranks, without a length."""
        return UnsizedBatches(self._loader(self.stream(split), self.eval_batch_size))

    def val_dataloader(self) -> UnsizedBatches:
        """The valid split (see eval_dataloader)."""
        return self.eval_dataloader("val")

    def test_dataloader(self) -> UnsizedBatches:
        """The test split (see eval_dataloader)."""
        return self.eval_dataloader("test")


# Configs name the data module by its public path (`builds` takes __module__): run configs saved so
# far say _target_: memexp.data.dialogue.DialogueDataModule, whatever module defines the class.
DialogueDataModule.__module__ = "memexp.data.dialogue"
