"""Tokenizers for text data: `char` (vocabulary from the training split), `byte` (256),
`qwen` (Qwen3's, built offline: `qwen_tokenizer.py`) and Hugging Face tokenizers loaded from a local path.

Each has encode(str) -> list[int], decode(list[int]) -> str, vocab_size, and
state_dict()/from_state() so the exact tokenizer travels inside a checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from memexp.data.hf_tokenizer import HFTokenizer
from memexp.errors import ConfigError, DataError


class Tokenizer(Protocol):
    """What a text data module needs of a tokenizer (every class below is one)."""

    name: str

    @property
    def vocab_size(self) -> int: ...

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Iterable[int]) -> str: ...

    def state_dict(self) -> dict: ...


class CharTokenizer:
    """One id per distinct character of the training text, in sorted order."""

    name = "char"

    def __init__(self, chars: list[str]):
        self.chars = chars
        self.stoi = {c: i for i, c in enumerate(chars)}

    @classmethod
    def fit(cls, text: str) -> CharTokenizer:
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        try:
            return [self.stoi[c] for c in text]
        except KeyError as e:
            raise DataError(
                f"character {e.args[0]!r} is not in the char vocabulary built from the training split "
                f"({self.vocab_size} characters); use data.tokenizer=byte for open-vocabulary text"
            ) from None

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.chars[i] for i in ids)

    def state_dict(self) -> dict:
        return {"name": self.name, "chars": self.chars}


class ByteTokenizer:
    """UTF-8 bytes: vocabulary 256, nothing to fit."""

    name = "byte"
    vocab_size = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: Iterable[int]) -> str:
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")

    def state_dict(self) -> dict:
        return {"name": self.name}


def build_tokenizer(
    name: str, train_text: str | None = None, data_dir: str | Path | None = None
) -> CharTokenizer | ByteTokenizer | HFTokenizer:
    """`char` (fit on train_text), `byte`, `qwen` (Qwen3's, built offline and cached under
    data_dir), or a path to a Hugging Face tokenizer."""
    if name == "char":
        if train_text is None:
            raise ValueError("a char tokenizer is fitted on the training text")
        return CharTokenizer.fit(train_text)
    if name == "byte":
        return ByteTokenizer()
    if name == "qwen":
        from memexp.data.qwen_tokenizer import QwenTokenizer

        return QwenTokenizer(data_dir)
    if Path(name).exists() or "/" in name:
        return HFTokenizer(name)
    raise ConfigError(f"data.tokenizer={name!r}: expected 'char', 'byte', 'qwen' or a path to a Hugging Face tokenizer folder")


def tokenizer_from_state(state: dict, data_dir: str | Path | None = None) -> CharTokenizer | ByteTokenizer | HFTokenizer:
    """Rebuild the tokenizer saved with a checkpoint."""
    name = state.get("name")
    if name == "char":
        return CharTokenizer(list(state["chars"]))
    if name == "byte":
        return ByteTokenizer()
    if name == "qwen":
        return build_tokenizer("qwen", data_dir=data_dir)
    if name == "hf":
        return HFTokenizer(state["path"])
    raise ConfigError(f"unknown tokenizer in checkpoint: {name!r}")
