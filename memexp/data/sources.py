"""Raw files of the data root: find them locally, in a mirror folder, or download them.

A raw file is looked for in the data root first, then in each mirror folder
(a lab's shared data folder, `MEMEXP_DATA_MIRRORS`), then downloaded from its
canonical address. Every copy is written to a temporary name and renamed when
complete and verified, so a half-written file is never taken for the real one.
"""

from __future__ import annotations

import os
import shutil
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from memexp.console import say
from memexp.errors import DataError
from memexp.files import atomic_path, file_digest


@dataclass(frozen=True)
class RawFile:
    """A raw file with a canonical address and (optionally) a checksum."""

    relpath: str  # path under the data root, e.g. "tinyshakespeare/input.txt"
    url: str | None = None
    md5: str | None = None
    size: int | None = None
    description: str = ""


TINY_SHAKESPEARE = RawFile(
    relpath="tinyshakespeare/input.txt",
    url="https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
    md5="6fb458f1232090904fb40fe944165e91",
    size=1_115_394,
    description="tiny-shakespeare (char-rnn)",
)


def default_data_dir() -> Path:
    return Path(os.environ.get("MEMEXP_DATA_DIR", "data"))


def default_mirror_dirs() -> list[Path]:
    """Folders searched before downloading: `MEMEXP_DATA_MIRRORS` (':'-separated),
    else a sibling `../shared/data` when it exists (the team's shared data folder)."""
    env = os.environ.get("MEMEXP_DATA_MIRRORS")
    if env is not None:
        return [Path(p) for p in env.split(os.pathsep) if p]
    return [Path("../shared/data")]


def _verify(tmp: Path, raw: RawFile, origin: str) -> None:
    if raw.md5 is not None and file_digest(tmp, "md5") != raw.md5:
        raise DataError(f"{origin} does not match the expected md5 {raw.md5} of {raw.description or raw.relpath}")


def fetch(raw: RawFile, data_dir: str | Path, mirrors: list[Path] | None = None, timeout: float = 30.0) -> Path:
    """Return the local path of `raw` under `data_dir`, copying or downloading it once."""
    target = Path(data_dir) / raw.relpath
    if target.exists():
        return target
    candidates = [Path(m) / raw.relpath for m in (default_mirror_dirs() if mirrors is None else mirrors)]
    source = next((c for c in candidates if c.exists() and c.resolve() != target.resolve()), None)
    if source is None and raw.url is None:
        raise DataError(f"{target} does not exist and {raw.relpath} has no download address; put the file there")
    with atomic_path(target) as tmp:  # renamed into place only when complete and verified
        if source is not None:
            shutil.copyfile(source, tmp)
            _verify(tmp, raw, str(source))
            say(f"data: copied {raw.relpath} from the mirror {source} to {target}")
            return target
        try:
            with urllib.request.urlopen(raw.url, timeout=timeout) as response, open(tmp, "wb") as out:
                shutil.copyfileobj(response, out)
        except OSError as e:
            size = f" ({raw.size:,} bytes, md5 {raw.md5})" if raw.size else ""
            raise DataError(
                f"could not download {raw.description or raw.relpath} from {raw.url} ({e}); "
                f"put the file{size} at {target.resolve()} or set MEMEXP_DATA_DIR to a folder holding {raw.relpath}"
            ) from None
        _verify(tmp, raw, raw.url)
        say(f"data: downloaded {raw.relpath} from {raw.url} to {target}")
    return target
