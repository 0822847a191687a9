"""A memory bank saved on its own, beside the ExplicitLM checkpoint it belongs to.

Chat, dual-path inference and `python -m memexp.memory` change a bank; the checkpoint stays as it
was trained and the changed bank goes to a bank file (torch.save of plain tensors, strings and ints,
loaded with weights_only=True, written to a temporary name and renamed):

    format "memexp-bank", version 1
    tokens (N, L) int32        the entries' token ids, pad-filled
    freeze_mask (N,) bool      the frozen region (never written by update strategies)
    content_rows (N,) bool     entries rewritten after training, found by content too (ExplicitLM.content_candidates)
    sources list[str] (N)      where each entry came from: "kb:<uuid>", "chat", "edit", "import", "" (empty)
    usage dict | None          the updater's counters (last_used, uses, written, clock)
    checkpoint str             the checkpoint whose model reads this bank (its absolute path)
    backbone_fingerprint str   that model's backbone, checked when the bank is applied
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from memexp.errors import CheckpointError, DataError
from memexp.files import atomic_path

FORMAT, VERSION = "memexp-bank", 1


@dataclass
class BankState:
    tokens: torch.Tensor
    freeze_mask: torch.Tensor
    content_rows: torch.Tensor
    sources: list[str]
    checkpoint: str
    backbone_fingerprint: str
    pad_id: int
    usage: dict | None = field(default=None)

    def save(self, path: str | Path) -> Path:
        """Write the bank file atomically (nothing half-written is left under `path`)."""
        record = {
            "format": FORMAT,
            "version": VERSION,
            "tokens": self.tokens.to(torch.int32).clone(),
            "freeze_mask": self.freeze_mask.bool().clone(),
            "content_rows": self.content_rows.bool().clone(),
            "sources": list(self.sources),
            "usage": None if self.usage is None else {k: v.clone() if torch.is_tensor(v) else v for k, v in self.usage.items()},
            "checkpoint": self.checkpoint,
            "backbone_fingerprint": self.backbone_fingerprint,
            "pad_id": int(self.pad_id),
        }
        with atomic_path(path) as tmp:
            torch.save(record, tmp)
        return Path(path)

    def text(self, tokenizer: object, index: int) -> str:
        """Entry `index` decoded to text (pad dropped)."""
        return tokenizer.decode([t for t in self.tokens[index].tolist() if t != self.pad_id])


def _peek(path: str | Path) -> object | None:
    """The torch file at `path`, memory-mapped (nothing is read until used); None when it cannot be read."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        return None


def is_bank_file(path: str | Path) -> bool:
    """Whether `path` holds a bank file (rather than a Lightning checkpoint)."""
    record = _peek(path)
    return isinstance(record, dict) and record.get("format") == FORMAT


def read_bank_file(path: str | Path) -> BankState | None:
    """The bank file at `path`, or None when the file is something else (a checkpoint); read once."""
    record = _peek(path)
    if not (isinstance(record, dict) and record.get("format") == FORMAT):
        return None
    return _bank_state(record, Path(path))


def load_bank_file(path: str | Path) -> BankState:
    """Read a bank file; anything else is one DataError naming the file and what was expected."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"bank file {path}: no such file")
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise DataError(f"bank file {path}: not a torch file ({type(e).__name__})") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise DataError(f"{path}: not a memexp bank file (expected a dict with format={FORMAT!r})")
    return _bank_state(record, path)


def _bank_state(record: dict, path: Path) -> BankState:
    """A bank file's record, checked field by field (one DataError naming the field)."""
    if record.get("version") != VERSION:
        raise DataError(f"bank file {path}: version {record.get('version')}, this memexp reads version {VERSION}")
    tokens = record["tokens"]
    n = tokens.shape[0]
    for name in ("freeze_mask", "content_rows"):
        if tuple(record[name].shape) != (n,):
            raise DataError(f"bank file {path}: field {name} has shape {tuple(record[name].shape)}, expected ({n},)")
    if len(record["sources"]) != n:
        raise DataError(f"bank file {path}: field sources has {len(record['sources'])} items, expected {n}")
    return BankState(
        tokens=tokens.clone(),  # owned, not a view of the memory-mapped file
        freeze_mask=record["freeze_mask"],
        content_rows=record["content_rows"],
        sources=list(record["sources"]),
        checkpoint=record["checkpoint"],
        backbone_fingerprint=record["backbone_fingerprint"],
        pad_id=int(record["pad_id"]),
        usage=record.get("usage"),
    )


def bank_state(net: torch.nn.Module, checkpoint: str | Path, sources: list[str], usage: dict | None = None) -> BankState:
    """The bank an ExplicitLM holds now, as a bank file's contents (copies, not views)."""
    return BankState(
        tokens=net.memory_bank.clone(),
        freeze_mask=net.freeze_mask.clone(),
        content_rows=net.content_rows.clone(),
        sources=list(sources),
        checkpoint=str(Path(checkpoint).resolve()),
        backbone_fingerprint=net.backbone_fingerprint(),
        pad_id=net.pad_id,
        usage=None if usage is None else {k: v.clone() if torch.is_tensor(v) else v for k, v in usage.items()},
    )


def apply_bank(net: torch.nn.Module, state: BankState, origin: str | Path = "the bank file") -> None:
    """Put a saved bank into an ExplicitLM (same shape, same backbone, same frozen region)."""
    if tuple(state.tokens.shape) != tuple(net.memory_bank.shape):
        raise CheckpointError(
            f"{origin} holds a bank of shape {tuple(state.tokens.shape)}; the model's is {tuple(net.memory_bank.shape)}"
        )
    if state.backbone_fingerprint != net.backbone_fingerprint():
        raise CheckpointError(f"{origin} was saved for a model with another backbone (fingerprint {state.backbone_fingerprint})")
    net.memory_bank.copy_(state.tokens)
    net.freeze_mask.copy_(state.freeze_mask)
    net.content_rows.copy_(state.content_rows)
