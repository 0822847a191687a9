"""The token rows of an explicit memory bank, built once from a knowledge base and cached.

Shapes: N = knowledge_num rows (entries), L = knowledge_length tokens per row.

  tokens (N, L) int32   row i = the first L token ids of knowledge item i, padded with the pad id;
                        rows past the file's items are all pad (never random ids)

On disk, next to each other:
  <cache>.pt              the tokens tensor (torch.save, loaded with weights_only=True)
  <cache>_mapping.json    {"metadata": {<fingerprint>, tokens_sha256, total_entries, knowledge_num,
                           knowledge_length, source_file, generation_time, pad_id},
                           "mappings": [{database_index, uuid, sentence, subject, predicate, object,
                           token_count, is_truncated}, ...]}
Both are written atomically, the mapping last: it is the "finished" marker, and it records the
digest of the tensor beside it, so a `.pt` without a matching mapping is never trusted. The
fingerprint (source file digest, tokenizer identity, N, L) decides whether a cache is reused or
rebuilt; a cache whose source file has gone is reused as it is.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from memexp.data.explicit.knowledge import KnowledgeItem, read_knowledge
from memexp.data.json_stream import JSONCursor
from memexp.errors import ConfigError, DataError
from memexp.files import atomic_path, file_digest, text_digest

__all__ = ["BankCache", "KnowledgeItem", "build_bank_cache", "encode_entry", "load_bank_cache", "read_knowledge"]

# Strings whose encodings identify a tokenizer beyond its name and size (scripts, digits, specials).
PROBES = (
    "The quick brown fox jumps over the lazy dog.",
    "今天天气很好，我们去公园散步吧。",
    "x = 12345 + 0.5",
    "<|im_start|>user\n",
)
FINGERPRINT_KEYS = ("source_sha256", "tokenizer", "knowledge_num", "knowledge_length")


@dataclass
class BankCache:
    """A built memory bank: its rows, where they live and what they were built from."""

    tokens: torch.Tensor  # (N, L) int32
    mapping_path: Path
    path: Path
    fingerprint: dict
    n_filled: int  # rows holding a knowledge item; rows n_filled.. are all pad
    pad_id: int


def _pad_id(tokenizer: Any) -> int:
    pad = getattr(tokenizer, "pad_id", None)
    if pad is None:
        raise ConfigError(
            f"data.tokenizer={getattr(tokenizer, 'name', tokenizer)!r}: a memory bank is padded with the tokenizer's "
            f"pad id, and this tokenizer has none; expected 'qwen' or a Hugging Face tokenizer folder"
        )
    return int(pad)


def encode_entry(tokenizer: Any, text: str, length: int) -> tuple[list[int], int, bool]:
    """One bank row from a sentence: its ids (no special tokens added) cut or padded to `length`.

    Returns (row of `length` ids, token count of the whole sentence, whether it was cut). Every
    writer of the bank (the cache here, fact updates at inference) goes through this function,
    so rows built at different times are encoded alike.
    """
    ids = tokenizer.encode(text)
    row = ids[:length] + [_pad_id(tokenizer)] * max(0, length - len(ids))
    return row, len(ids), len(ids) > length


def tokenizer_identity(tokenizer: Any) -> dict:
    """Name, vocabulary size and a digest of a few probe encodings: what decides that two
    tokenizers give the same rows."""
    encodings = []
    for probe in PROBES:
        try:
            encodings.append(list(tokenizer.encode(probe)))
        except DataError:  # a char vocabulary without these characters
            encodings.append(None)
    vocab = len(tokenizer) if hasattr(tokenizer, "__len__") else tokenizer.vocab_size
    return {"name": tokenizer.name, "vocab_size": int(vocab), "probe_sha256": text_digest(json.dumps(encodings), length=16)}


def mapping_path_for(cache_path: str | Path) -> Path:
    cache_path = Path(cache_path)
    return cache_path.with_name(f"{cache_path.stem}_mapping.json")


def read_bank_metadata(mapping_path: str | Path) -> dict | None:
    """The "metadata" object at the head of a mapping file, read without the (long) mappings;
    None when the file is missing or not a finished mapping."""
    mapping_path = Path(mapping_path)
    if not mapping_path.is_file():
        return None
    try:
        with open(mapping_path, encoding="utf-8") as f:
            cur = JSONCursor(f, mapping_path, block=1 << 16)
            cur.expect("{", "'{'")
            if cur.value() != "metadata":
                return None
            cur.expect(":", "':'")
            meta = cur.value()
    except (DataError, OSError):
        return None
    return meta if isinstance(meta, dict) else None


def load_bank_cache(cache_path: str | Path) -> BankCache:
    """A finished cache: the tensor checked against the digest, shape and dtype its mapping records."""
    path = Path(cache_path)
    mapping = mapping_path_for(path)
    if not path.is_file():
        raise DataError(f"memory bank cache {path} does not exist; build it with build_bank_cache (data.knowledge_path)")
    meta = read_bank_metadata(mapping)
    if meta is None:
        raise DataError(f"memory bank cache {path} has no finished mapping {mapping.name} beside it; rebuild it")
    if meta.get("tokens_sha256") != file_digest(path):
        raise DataError(f"memory bank cache {path} does not match its mapping {mapping.name} (tensor digest differs); rebuild it")
    try:
        tokens = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as e:  # truncated or foreign file: torch raises several types
        raise DataError(f"memory bank cache {path} cannot be read ({type(e).__name__}); rebuild it") from None
    shape = (meta.get("knowledge_num"), meta.get("knowledge_length"))
    if not isinstance(tokens, torch.Tensor) or tokens.dtype != torch.int32 or tuple(tokens.shape) != shape:
        raise DataError(f"memory bank cache {path}: expected an int32 tensor of shape {shape}; rebuild it")
    return BankCache(
        tokens=tokens,
        mapping_path=mapping,
        path=path,
        fingerprint={k: meta.get(k) for k in FINGERPRINT_KEYS},
        n_filled=int(meta["total_entries"]),
        pad_id=int(meta["pad_id"]),
    )


def _reusable(path: Path, source: Path, wanted: dict) -> BankCache | None:
    """The cache at `path` when its fingerprint equals `wanted` (source digest unchecked when the
    source file is gone), else None."""
    meta = read_bank_metadata(mapping_path_for(path))
    if meta is None or not path.is_file():
        return None
    if any(meta.get(k) != wanted[k] for k in FINGERPRINT_KEYS if k != "source_sha256"):
        return None
    if source.is_file() and meta.get("source_sha256") != file_digest(source):
        return None
    try:
        return load_bank_cache(path)
    except DataError:
        if not source.is_file():
            raise
        return None


def build_bank_cache(
    knowledge_path: str | Path,
    tokenizer: Any,
    knowledge_num: int,
    knowledge_length: int,
    cache_path: str | Path,
    recompute: bool = False,
) -> BankCache:
    """The bank of the first `knowledge_num` knowledge items, `knowledge_length` tokens each:
    reused from `cache_path` when its fingerprint matches (and not `recompute`), else built and saved.

    Memory stays bounded at any N: the (N, L) int32 tensor is filled row by row and the mapping
    entries go to a scratch file, never into a Python list.
    """
    if knowledge_num < 1 or knowledge_length < 1:
        raise ConfigError(
            f"data.knowledge_num={knowledge_num}, data.knowledge_length={knowledge_length}: expected positive integers"
        )
    source, path = Path(knowledge_path), Path(cache_path)
    identity = tokenizer_identity(tokenizer)
    wanted = {"tokenizer": identity, "knowledge_num": knowledge_num, "knowledge_length": knowledge_length}
    if not recompute:
        cached = _reusable(path, source, {**wanted, "source_sha256": None})
        if cached is not None:
            return cached
    if not source.is_file():
        raise DataError(
            f"{source}: no such file (expected the knowledge base, a JSON array of sentences), and there is no "
            f"finished cache for these settings at {path}"
        )
    fingerprint = {"source_sha256": file_digest(source), **wanted}
    pad = _pad_id(tokenizer)
    mapping = mapping_path_for(path)
    mapping.unlink(missing_ok=True)  # from here until the new mapping lands, the cache is unfinished

    tokens = torch.full((knowledge_num, knowledge_length), pad, dtype=torch.int32)  # (N, L)
    n_filled = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile("w+", encoding="utf-8", dir=path.parent) as entries:
        for i, item in enumerate(read_knowledge(source, knowledge_num)):
            row, count, cut = encode_entry(tokenizer, item.sentence, knowledge_length)
            tokens[i] = torch.tensor(row, dtype=torch.int32)
            entry = {"database_index": i, "uuid": item.uuid, "sentence": item.sentence, "subject": item.subject}
            entry |= {"predicate": item.predicate, "object": item.object, "token_count": count, "is_truncated": cut}
            entries.write(("," if i else "") + "\n    " + json.dumps(entry, ensure_ascii=False))
            n_filled = i + 1
        if n_filled == 0:  # an all-padding bank would train and report as if it held knowledge
            raise DataError(f"{source}: the knowledge base holds no entries (expected a JSON array of sentences or facts)")

        with atomic_path(path) as tmp:
            torch.save(tokens, tmp)
        meta = {
            **fingerprint,
            "tokens_sha256": file_digest(path),
            "total_entries": n_filled,
            "source_file": str(source),
            "generation_time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "pad_id": pad,
        }
        entries.seek(0)
        with atomic_path(mapping) as tmp, open(tmp, "w", encoding="utf-8") as out:
            out.write('{"metadata": ' + json.dumps(meta, ensure_ascii=False) + ',\n "mappings": [')
            for block in iter(lambda: entries.read(1 << 20), ""):
                out.write(block)
            out.write("\n ]}\n")
    return BankCache(tokens, mapping, path, fingerprint, n_filled, pad)
