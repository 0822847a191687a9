"""The chunk file: a fixed number of encoded dialogues as three flat tensors.

    tokens       (N_tok,)   int32  every utterance's ids, back to back
    utt_offsets  (N_utt+1,) int64  utterance u is tokens[utt_offsets[u]:utt_offsets[u+1]]
    dial_offsets (N_dia+1,) int64  dialogue d is utterances dial_offsets[d]:dial_offsets[d+1]

saved with `torch.save` as a dict of plain tensors, read with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
from array import array
from pathlib import Path

import torch

from memexp.errors import ConfigError, DataError
from memexp.files import file_digest

CHUNK_DTYPES = {"tokens": torch.int32, "utt_offsets": torch.int64, "dial_offsets": torch.int64}


def chunk_name(index: int) -> str:
    """File name of a split's chunk number `index`."""
    return f"chunk_{index:05d}.pt"


class ChunkWriter:
    """Collects encoded dialogues and writes every `chunk_size` of them as one chunk.

    Each chunk is written under a temporary name and renamed, so a chunk file that exists
    is complete. `records` lists what has been written (file, counts, sha256).
    """

    def __init__(self, split_dir: str | Path, chunk_size: int, records: list[dict] | None = None):
        if chunk_size < 1:
            raise ConfigError(f"data.chunk_size={chunk_size} must be a positive number of dialogues per chunk")
        self.dir = Path(split_dir)
        self.chunk_size = chunk_size
        self.records = list(records or [])
        self._reset()

    def _reset(self) -> None:
        self.tokens = array("i")
        self.utt_offsets = array("q", [0])
        self.dial_offsets = array("q", [0])
        self.pairs = 0

    @property
    def pending(self) -> int:
        """Dialogues collected and not yet written."""
        return len(self.dial_offsets) - 1

    def add(self, dialogue: list[list[int]]) -> dict | None:
        """Append one encoded dialogue; returns the chunk record when this completed a chunk."""
        for utt in dialogue:
            self.tokens.extend(utt)
            self.utt_offsets.append(len(self.tokens))
        self.dial_offsets.append(len(self.utt_offsets) - 1)
        self.pairs += max(len(dialogue) - 1, 0)
        if self.pending >= self.chunk_size:
            return self.flush()
        return None

    def flush(self) -> dict | None:
        """Write what is pending (a short last chunk); None when nothing is."""
        if self.pending == 0:
            return None
        self.dir.mkdir(parents=True, exist_ok=True)
        name = chunk_name(len(self.records))
        chunk = {
            "tokens": torch.frombuffer(self.tokens, dtype=torch.int32).clone()
            if self.tokens
            else torch.zeros(0, dtype=torch.int32),
            "utt_offsets": torch.frombuffer(self.utt_offsets, dtype=torch.int64).clone(),
            "dial_offsets": torch.frombuffer(self.dial_offsets, dtype=torch.int64).clone(),
        }
        path = self.dir / name
        # Not memexp.files.atomic_path: torch.save stores the file's name (up to its last suffix)
        # inside the archive, so only "chunk_NNNNN.pt.tmp" keeps chunk bytes and manifest sha256s
        # as they always were; prepare_dialogues removes such leftovers ("*.tmp") when it resumes.
        tmp = path.with_name(name + ".tmp")
        torch.save(chunk, tmp)
        os.replace(tmp, path)
        record = {
            "file": name,
            "dialogues": self.pending,
            "utterances": len(self.utt_offsets) - 1,
            "tokens": len(self.tokens),
            "pairs": self.pairs,
            "sha256": file_digest(path),
        }
        self.records.append(record)
        self._reset()
        return record


def read_chunk(path: str | Path, sha256: str | None = None) -> dict[str, torch.Tensor]:
    """Load one chunk with weights_only=True and check its structure (DataError names the chunk).

    With `sha256` (from the manifest) the file must also match that checksum.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"chunk {path} is missing; the folder is incomplete, run the preparation again") from None
    try:
        chunk = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise DataError(
            f"chunk {path} carries pickled Python objects, which weights_only loading refuses "
            f"(memexp chunks hold plain tensors only; re-prepare the folder): {str(e).splitlines()[0]}"
        ) from None
    except Exception as e:  # zip errors, truncated files, bad headers
        raise DataError(
            f"chunk {path} is corrupt or truncated ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); run the preparation again"
        ) from None
    # the hash of the very bytes loaded above (file_digest would read the file a second time)
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise DataError(
            f"chunk {path} does not match the sha256 in manifest.json (changed after preparation?); run the preparation again"
        )
    if not isinstance(chunk, dict) or set(chunk) != set(CHUNK_DTYPES):
        raise DataError(
            f"chunk {path}: expected a dict with keys {sorted(CHUNK_DTYPES)}, got {type(chunk).__name__} {sorted(chunk) if isinstance(chunk, dict) else ''}"
        )
    for key, dtype in CHUNK_DTYPES.items():
        t = chunk[key]
        if not isinstance(t, torch.Tensor) or t.dtype != dtype or t.dim() != 1:
            raise DataError(f"chunk {path}: '{key}' should be a 1-d {dtype} tensor")
    uo, do = chunk["utt_offsets"], chunk["dial_offsets"]
    if len(uo) < 1 or len(do) < 1 or uo[-1] != len(chunk["tokens"]) or do[-1] != len(uo) - 1 or uo[0] != 0 or do[0] != 0:
        raise DataError(f"chunk {path}: offsets do not match the token count (corrupt chunk); run the preparation again")
    return chunk


def chunk_dialogues(chunk: dict[str, torch.Tensor]) -> list[list[list[int]]]:
    """A chunk back as dialogues of utterances of ids (for tests and inspection)."""
    tokens, uo, do = chunk["tokens"].tolist(), chunk["utt_offsets"].tolist(), chunk["dial_offsets"].tolist()
    return [[tokens[uo[u] : uo[u + 1]] for u in range(do[d], do[d + 1])] for d in range(len(do) - 1)]
