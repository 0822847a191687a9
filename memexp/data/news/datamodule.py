"""ENDEF-schema news for binary classification (fake = 1, real = 0): `data=endef`, `endef_ch`, `endef_en`.

Reads `{root}/{train,val,test}.json` (`memexp.data.news.schema`), tokenises them once into a
cached tensor file (`memexp.data.news.tokens`), and serves padded batches (`memexp.data.news.batches`)
with ENDEF's augmentation on the training split. The tokenizer is BERT WordPiece: a vocab.txt
file or a BERT folder (the one whose embeddings `model.embedding=bert` uses); by default the
shared 21,128-entry Chinese BERT vocabulary, `<data_dir>/vocab/bert_chinese_vocab.txt`.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader

from memexp.data.dialogue.datamodule import _default_cache_root
from memexp.data.news.batches import EpochShuffle, NewsItems, SpecialIds
from memexp.data.news.schema import SPLITS, emotion_path, read_split
from memexp.data.news.tokens import WordPieceTokenizer, fingerprint, load_cache, save_cache, tokenize_split, word_splitter
from memexp.data.samplers import ResumableLoader
from memexp.data.sources import RawFile, default_data_dir, fetch
from memexp.data.spec import DataSpec
from memexp.errors import ConfigError, DataError

CHINESE_BERT_VOCAB = RawFile(relpath="vocab/bert_chinese_vocab.txt", description="Chinese BERT vocabulary (21,128 entries)")
ENDEF_SOURCE = "ENDEF_ch/data/data.zip (Chinese) or ENDEF_en/data/data.zip (English) of github.com/ICTMCG/ENDEF-SIGIR2022"


class NewsDataModule(L.LightningDataModule):
    """ENDEF-schema news items for fake-news classification.

    Args:
        root: folder holding train.json, val.json, test.json (and optionally *_emo.npy).
        language: "ch" (Weibo21 year map, jieba words) or "en" (GossipCop year map, space-separated words).
        tokenizer: a WordPiece vocab.txt or a BERT folder; None: the shared Chinese BERT vocabulary.
        max_len, entity_max_len: tokens of the content and of the joined entity string, with [CLS]/[SEP].
        batch_size, eval_batch_size: items per training / evaluation batch.
        aug_prob: ENDEF's augmentation probability (training split only; 0 turns it off).
        words: word splitter for augmentation: "auto" (jieba for Chinese when installed, else
            characters; spaces for English), "jieba", "char" or "space".
        emotion: the `{split}_emo.npy` features: "auto" (loaded when present), "off" or "require".
        seed: seeds the training order and the augmentation.
        num_workers, pin_memory: DataLoader settings.
        data_dir: the data root; None: $MEMEXP_DATA_DIR or ./data.
        cache_dir: where the token cache goes; None: <data_dir>/prepared/news (or the user's cache
            folder when the data root is read-only).
    """

    task_kind = "classification"

    def __init__(
        self,
        root: str | None = None,
        language: str = "ch",
        tokenizer: str | None = None,
        max_len: int = 170,
        entity_max_len: int = 50,
        batch_size: int = 64,
        eval_batch_size: int = 256,
        aug_prob: float = 0.1,
        words: str = "auto",
        emotion: str = "auto",
        seed: int = 0,
        num_workers: int = 0,
        pin_memory: bool = False,
        data_dir: str | None = None,
        cache_dir: str | None = None,
    ):
        super().__init__()
        if language not in ("ch", "en"):
            raise ConfigError(f"data.language={language!r}: expected 'ch' (Weibo21) or 'en' (GossipCop)")
        if max_len < 3 or entity_max_len < 2 or batch_size < 1 or eval_batch_size < 1:
            raise ConfigError("data.max_len must be >= 3, data.entity_max_len >= 2, batch sizes >= 1")
        if not 0 <= aug_prob <= 0.5:
            raise ConfigError(f"data.aug_prob={aug_prob} must be in [0, 0.5] (masking and deletion each take aug_prob)")
        self.root = Path(root) if root else None
        self.language, self.tokenizer_path = language, tokenizer
        self.max_len, self.entity_max_len = max_len, entity_max_len
        self.batch_size, self.eval_batch_size, self.aug_prob = batch_size, eval_batch_size, aug_prob
        self.words, self.emotion, self.seed = word_splitter(language, words), emotion, seed
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.data_dir = Path(data_dir) if data_dir else default_data_dir()
        self.cache_root = Path(cache_dir) if cache_dir else _default_cache_root(self.data_dir) / "news"
        self.tokenizer: WordPieceTokenizer | None = None
        self.tensors: dict | None = None

    # -- files --------------------------------------------------------------------------
    def split_root(self) -> Path:
        if self.root is None:
            raise ConfigError(f"data.root is not set; expected a folder holding train.json, val.json, test.json ({ENDEF_SOURCE})")
        return self.root

    def split_files(self) -> list[Path]:
        root = self.split_root()
        files = [root / f"{s}.json" for s in SPLITS]
        for f in files:
            if not f.is_file():
                raise DataError(
                    f"split file {f} does not exist; expected train.json, val.json and test.json in {root} ({ENDEF_SOURCE})"
                )
        return files

    def _tokenizer(self) -> WordPieceTokenizer:
        if self.tokenizer is None:
            path = self.tokenizer_path or fetch(CHINESE_BERT_VOCAB, self.data_dir)
            self.tokenizer = WordPieceTokenizer(path)
        return self.tokenizer

    def cache_path(self) -> Path:
        files = self.split_files()
        extra = [emotion_path(f) for f in files] if self.emotion != "off" else []
        return self.cache_root / f"news-{fingerprint(files + extra, self._tokenizer(), self.language, self.words)}.pt"

    def prepare_data(self) -> None:
        """Tokenise the three splits into the cache once (rank 0; the others load it in setup)."""
        self._load_or_build()

    def _load_or_build(self) -> dict:
        path = self.cache_path()
        if path.is_file():
            try:
                return load_cache(path)
            except DataError:
                pass  # a damaged cache is rebuilt below
        tok, tensors = self._tokenizer(), {}
        for split, f in zip(SPLITS, self.split_files()):
            items = read_split(f, self.language, self.emotion)
            tensors[split] = tokenize_split(items, tok, self.words)
            tensors[split]["clamped_years"] = torch.tensor(items.clamped_years)
        save_cache(tensors, path)
        return tensors

    def setup(self, stage: str | None = None) -> None:
        if self.tensors is None:
            self.tensors = self._load_or_build()

    # -- tokenizer and spec ---------------------------------------------------------------
    def set_tokenizer(self, tokenizer: WordPieceTokenizer) -> None:
        self.tokenizer = tokenizer

    def restore_tokenizer(self, state: dict) -> None:
        """The tokenizer a checkpoint was trained with (its vocabulary file or BERT folder)."""
        if state.get("name") != WordPieceTokenizer.name:
            raise ConfigError(f"the checkpoint's tokenizer is {state.get('name')!r}, not a WordPiece vocabulary")
        self.tokenizer_path = state["path"]
        self.tokenizer = WordPieceTokenizer(state["path"])

    @property
    def special_ids(self) -> SpecialIds:
        tok = self._tokenizer()
        return SpecialIds(pad=tok.pad_id, cls=tok.cls_id, sep=tok.sep_id, mask=tok.mask_id)

    @property
    def spec(self) -> DataSpec:
        tok = self._tokenizer()
        return DataSpec(
            task_kind=self.task_kind, vocab_size=tok.vocab_size, tokenizer=tok, pad_id=tok.pad_id, seq_len=None, num_classes=2
        )

    def summary_lines(self) -> list[str]:
        """What `python -m memexp.prepare` prints: items, fake share and clamped years per split, the cache."""
        self.setup()
        lines = [
            f"corpus: {self.split_root()}",
            f"token cache: {self.cache_path()}",
            f"{'split':6s} {'items':>8s} {'fake':>7s} {'tokens':>10s}",
        ]
        for split in SPLITS:
            t = self.tensors[split]
            n = len(t["label"])
            lines.append(f"{split:6s} {n:>8,d} {float(t['label'].float().mean()):>7.3f} {len(t['content']):>10,d}")
        clamped = sum(int(self.tensors[s]["clamped_years"]) for s in SPLITS)
        lines.append(f"years outside the {self.language} year map, clamped to its ends: {clamped}")
        lines.append(
            f"vocabulary: {self._tokenizer().vocab_size} WordPiece tokens ({self._tokenizer().path}); words: {self.words}"
        )
        return lines

    # -- loaders ------------------------------------------------------------------------
    def items(self, split: str, augment: bool = False) -> NewsItems:
        if split not in SPLITS:
            raise ConfigError(f"split {split!r}: expected one of {', '.join(SPLITS)}")
        self.setup()
        aug = self.aug_prob if augment else 0.0
        return NewsItems(self.tensors[split], self.special_ids, self.max_len, self.entity_max_len, aug, self.seed)

    def _loader(self, dataset: NewsItems, batch_size: int, loader: type[DataLoader] = DataLoader, **kwargs) -> DataLoader:
        return loader(
            dataset,
            batch_size=batch_size,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            **kwargs,
        )

    def train_dataloader(self) -> DataLoader:
        items = self.items("train", augment=True)
        return self._loader(items, self.batch_size, ResumableLoader, sampler=EpochShuffle(len(items), self.seed))

    def eval_dataloader(self, split: str) -> DataLoader:
        return self._loader(self.items(split), self.eval_batch_size)

    def val_dataloader(self) -> DataLoader:
        return self.eval_dataloader("val")

    def test_dataloader(self) -> DataLoader:
        return self.eval_dataloader("test")
