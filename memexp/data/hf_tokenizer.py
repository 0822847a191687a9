"""A Hugging Face tokenizer from a local folder, with what chat-model data needs of it.

(`memexp.data.tokenizers` builds it for `data.tokenizer=<folder>`; `qwen_tokenizer` builds Qwen3's on it.)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from memexp.errors import ConfigError


class HFTokenizer:
    """A Hugging Face tokenizer from a local folder (or a hub name when online).

    Besides the Tokenizer protocol it gives what a chat/LM data pipeline needs: `pad_id`, `eos_id`,
    `special_id(token)`, `apply_chat(messages)` and the transformers object itself (`hf`).
    """

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
        self._special: dict[str, int | None] = {}

    @property
    def hf(self) -> Any:
        """The underlying transformers tokenizer."""
        return self.tok

    @property
    def vocab_size(self) -> int:
        return len(self.tok)

    def __len__(self) -> int:
        return len(self.tok)

    def special_id(self, token: str) -> int | None:
        """Id of a token of the vocabulary (e.g. "<|im_end|>"), None when the tokenizer lacks it."""
        if token not in self._special:
            tid = self.tok.convert_tokens_to_ids(token)
            unknown = tid is None or (tid == self.tok.unk_token_id and token != self.tok.unk_token)
            self._special[token] = None if unknown else int(tid)
        return self._special[token]

    @property
    def eos_id(self) -> int | None:
        return self.tok.eos_token_id

    @property
    def pad_id(self) -> int:
        """The pad token; a tokenizer without one pads with `<|endoftext|>`. Never the end token:
        padding positions are masked out of the loss, and pad = eos would mask every end token too."""
        if self.tok.pad_token_id is not None:
            return int(self.tok.pad_token_id)
        fallback = self.special_id("<|endoftext|>")
        if fallback is None or fallback == self.eos_id:
            raise ConfigError(
                f"data.tokenizer={self.path!r}: the tokenizer has no pad token and no <|endoftext|> distinct from "
                f"its end token; expected a tokenizer_config.json with a pad_token"
            )
        return fallback

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False)

    def decode(self, ids: Iterable[int]) -> str:
        return self.tok.decode(list(ids))

    def apply_chat(self, messages: list[dict[str, str]], add_generation_prompt: bool = False) -> list[int]:
        """Token ids of a conversation [{"role", "content"}, ...] rendered by the chat template."""
        try:
            ids = self.tok.apply_chat_template(
                messages, tokenize=True, return_dict=False, add_generation_prompt=add_generation_prompt
            )
        except ValueError as e:
            raise ConfigError(f"data.tokenizer={self.path!r}: cannot render a conversation ({e})") from None
        return [int(i) for i in ids]

    def state_dict(self) -> dict:
        return {"name": self.name, "path": self.path}
