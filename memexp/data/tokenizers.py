"""Tokenizers for text data: `char` (vocabulary from the training split), `byte` (256),
and Hugging Face tokenizers loaded from a local path.

Each has encode(str) -> list[int], decode(list[int]) -> str, vocab_size, and
state_dict()/from_state() so the exact tokenizer travels inside a checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

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


class HFTokenizer:
    """A Hugging Face tokenizer from a local folder (or a hub name when online)."""

    name = "hf"

    def __init__(self, path: str):
        from transformers import AutoTokenizer

        self.path = path
        try:
            self.tok = AutoTokenizer.from_pretrained(path)
        except (OSError, ValueError) as e:
            raise ConfigError(
                f"data.tokenizer={path!r}: no Hugging Face tokenizer could be loaded from it "
                f"(expected a folder with tokenizer.json / tokenizer_config.json): {e}"
            ) from None

    @property
    def vocab_size(self) -> int:
        return len(self.tok)

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False)

    def decode(self, ids: Iterable[int]) -> str:
        return self.tok.decode(list(ids))

    def state_dict(self) -> dict:
        return {"name": self.name, "path": self.path}


def build_tokenizer(name: str, train_text: str | None = None) -> CharTokenizer | ByteTokenizer | HFTokenizer:
    """`char` (fit on train_text), `byte`, or a path to a Hugging Face tokenizer."""
    if name == "char":
        if train_text is None:
            raise ValueError("a char tokenizer is fitted on the training text")
        return CharTokenizer.fit(train_text)
    if name == "byte":
        return ByteTokenizer()
    if Path(name).exists() or "/" in name:
        return HFTokenizer(name)
    raise ConfigError(f"data.tokenizer={name!r}: expected 'char', 'byte' or a path to a Hugging Face tokenizer folder")


def tokenizer_from_state(state: dict) -> CharTokenizer | ByteTokenizer | HFTokenizer:
    """Rebuild the tokenizer saved with a checkpoint."""
    name = state.get("name")
    if name == "char":
        return CharTokenizer(list(state["chars"]))
    if name == "byte":
        return ByteTokenizer()
    if name == "hf":
        return HFTokenizer(state["path"])
    raise ConfigError(f"unknown tokenizer in checkpoint: {name!r}")
