"""Ground floor: files written whole or not at all, and file hashes.

Every writer in memexp goes through `atomic_path` (or `atomic_dir` for a folder): the content goes to a temporary name in
the same folder and is renamed into place when complete (`os.replace`, atomic on POSIX), so a
crash or a kill never leaves a half-written file looking finished. The temporary name keeps
the suffix (matplotlib and torch pick the format from it) and carries the process id (two
ranks writing the same file never share a temporary).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it to `path` when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder next to `path`; rename it to `path` when the block succeeds.

    When another process finished the same folder first, its copy is kept and this one dropped.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        try:
            os.replace(tmp, path)
        except OSError:
            if not path.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_bytes(data: bytes, path: str | Path) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(text: str, path: str | Path) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(obj: Any, path: str | Path, indent: int = 2) -> Path:
    """JSON as UTF-8 (non-ASCII text kept readable); tensors and numpy scalars become floats."""
    return write_text(json.dumps(obj, indent=indent, ensure_ascii=False, default=float), path)


def write_csv(rows: Sequence[dict], path: str | Path, fields: Sequence[str]) -> Path:
    """One row per dict, the given columns (missing values empty, extra keys ignored)."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(fields), extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in fields})
    return Path(path)


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes, read in 1 MiB blocks (never the whole file in memory)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def text_digest(text: str, algorithm: str = "sha256", length: int | None = None) -> str:
    """Hex digest of a string's UTF-8 bytes, optionally cut to `length` characters (folder keys)."""
    digest = hashlib.new(algorithm, text.encode("utf-8")).hexdigest()
    return digest[:length] if length else digest
