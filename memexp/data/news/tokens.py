"""WordPiece tokenisation of a news corpus, done once into a cached tensor file.

The original ENDEF loader re-tokenises every text every epoch (and reloads the tokenizer for each
call). Here each split is tokenised once, word by word, and kept as flat tensors:

    content          (T,) int32  token ids of every item's content, concatenated (no special tokens)
    content_word     (T,) int32  which word of its item each token belongs to (for word-level augmentation)
    content_offsets  (N+1,) int64  item i is content[content_offsets[i]:content_offsets[i+1]]
    entity           (S,) int32  token ids of every entity string, concatenated
    entity_offsets   (M+1,) int64  entity j is entity[entity_offsets[j]:entity_offsets[j+1]]
    item_entities    (N+1,) int64  item i owns entities item_entities[i]:item_entities[i+1]
    label (N,) int64, year (N,) int64, emotion (N, K) float32 when present

Truncation to `max_len`, special tokens and padding happen when a batch is built, so one cache
serves any max_len. The file is `<cache_dir>/news-<fingerprint>.pt`, where the fingerprint hashes
the format, the split files' bytes, the vocabulary and the word splitter: another corpus or
vocabulary gets another file, and a file is written whole (memexp.files) or not at all.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import torch

from memexp.data.news.schema import NewsSplit
from memexp.errors import ConfigError, DataError
from memexp.files import atomic_path, file_digest, text_digest

FORMAT_VERSION = 1
_VOCAB_FILES = ("vocab.txt", "tokenizer.json")


def vocab_file_size(path: Path) -> int:
    """Entries of a WordPiece vocab.txt: one per '\\n'-separated line (never splitlines(), which also
    breaks at U+2028, entry 343 of the Chinese BERT vocabulary, and shifts every later id)."""
    lines = path.read_text(encoding="utf-8").split("\n")
    return len(lines) - (lines[-1] == "")


class WordPieceTokenizer:
    """BERT WordPiece from a vocab.txt file or a BERT folder (vocab.txt or tokenizer.json).

    `len()` of the loaded tokenizer is checked against the file, so a loader that silently builds
    a tiny vocabulary (`BertTokenizerFast(vocab_file=...)` in transformers 5) cannot slip through.
    """

    name = "wordpiece"

    def __init__(self, path: str | Path):
        from transformers import AutoTokenizer, BertTokenizer

        self.path = str(path)
        p = Path(path)
        if p.is_file():
            self.tok, expected = BertTokenizer(vocab=str(p)), vocab_file_size(p)
        elif (p / "tokenizer.json").is_file():
            self.tok, expected = AutoTokenizer.from_pretrained(str(p)), None
        elif (p / "vocab.txt").is_file():
            self.tok, expected = BertTokenizer.from_pretrained(str(p)), vocab_file_size(p / "vocab.txt")
        else:
            raise ConfigError(
                f"data.tokenizer={self.path}: expected a WordPiece vocab.txt file or a BERT folder holding vocab.txt or tokenizer.json"
            )
        if expected is not None and len(self.tok) != expected:
            raise ConfigError(
                f"data.tokenizer={self.path}: the tokenizer holds {len(self.tok)} tokens but the file lists {expected}"
            )
        for special in ("pad", "cls", "sep", "mask"):
            if getattr(self.tok, f"{special}_token_id") is None:
                raise ConfigError(f"data.tokenizer={self.path}: the vocabulary has no [{special.upper()}] token")
        self.pad_id, self.cls_id = self.tok.pad_token_id, self.tok.cls_token_id
        self.sep_id, self.mask_id = self.tok.sep_token_id, self.tok.mask_token_id

    @property
    def vocab_size(self) -> int:
        return len(self.tok)

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False)

    def decode(self, ids: Iterable[int]) -> str:
        return self.tok.decode(list(ids), skip_special_tokens=True)

    def state_dict(self) -> dict:
        return {"name": self.name, "path": self.path}

    def digest(self) -> str:
        """A hash of the vocabulary files (part of the cache fingerprint)."""
        p = Path(self.path)
        files = [p] if p.is_file() else [p / f for f in _VOCAB_FILES if (p / f).is_file()]
        return text_digest("".join(file_digest(f) for f in files))


def word_splitter(language: str, words: str = "auto") -> str:
    """The splitter used for word-level augmentation: "jieba" (Chinese, when installed), "char", or "space"."""
    if words not in ("auto", "jieba", "char", "space"):
        raise ConfigError(f"data.words={words!r}: expected 'auto', 'jieba', 'char' or 'space'")
    if words != "auto":
        if words == "jieba":
            try:
                import jieba  # noqa: F401
            except ImportError:
                raise ConfigError("data.words=jieba: jieba is not installed (pip install jieba)") from None
        return words
    if language == "en":
        return "space"
    try:
        import jieba  # noqa: F401

        return "jieba"
    except ImportError:
        return "char"


def split_words(text: str, splitter: str) -> list[str]:
    if splitter == "jieba":
        import jieba

        return [w for w in jieba.lcut(text) if w.strip()]
    if splitter == "char":
        return [c for c in text if not c.isspace()]
    return re.findall(r"\S+", text)


def tokenize_split(split: NewsSplit, tok: WordPieceTokenizer, splitter: str) -> dict[str, torch.Tensor]:
    """One split as the flat tensors described in the module docstring."""
    words = [split_words(t, splitter) or [tok.tok.unk_token] for t in split.contents]
    enc = tok.tok(words, is_split_into_words=True, add_special_tokens=False)
    ids, word, offsets = [], [], [0]
    for i, row in enumerate(enc["input_ids"]):
        ids.extend(row)
        word.extend(w if w is not None else 0 for w in enc.word_ids(i))
        offsets.append(len(ids))
    flat_entities = [e for ents in split.entities for e in ents]
    ent_rows = tok.tok(flat_entities, add_special_tokens=False)["input_ids"] if flat_entities else []
    ent_ids, ent_offsets = [], [0]
    for row in ent_rows:
        ent_ids.extend(row)
        ent_offsets.append(len(ent_ids))
    item_entities = [0]
    for ents in split.entities:
        item_entities.append(item_entities[-1] + len(ents))
    out = {
        "content": torch.tensor(ids, dtype=torch.int32),
        "content_word": torch.tensor(word, dtype=torch.int32),
        "content_offsets": torch.tensor(offsets, dtype=torch.int64),
        "entity": torch.tensor(ent_ids, dtype=torch.int32),
        "entity_offsets": torch.tensor(ent_offsets, dtype=torch.int64),
        "item_entities": torch.tensor(item_entities, dtype=torch.int64),
        "label": torch.tensor(split.labels, dtype=torch.int64),
        "year": torch.tensor(split.years, dtype=torch.int64),
    }
    if split.emotion is not None:
        out["emotion"] = torch.from_numpy(split.emotion)
    return out


def fingerprint(files: list[Path], tok: WordPieceTokenizer, language: str, splitter: str) -> str:
    parts = [f"v{FORMAT_VERSION}", language, splitter, tok.digest()]
    parts += [f"{f.name}:{file_digest(f)}" for f in files if f.is_file()]
    return text_digest("|".join(parts), length=16)


def save_cache(tensors: dict[str, dict[str, torch.Tensor]], path: Path) -> Path:
    with atomic_path(path) as tmp:
        torch.save(tensors, tmp)
    return path


def load_cache(path: Path) -> dict[str, dict[str, torch.Tensor]]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a damaged cache is rebuilt by the caller
        raise DataError(f"token cache {path} could not be read ({type(e).__name__}); delete it to rebuild") from None
