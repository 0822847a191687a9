"""Raw dialogue files -> `Record`s, streamed: TSV, JSONL and JSON (LCCC as published).

Source formats (`.gz` is read transparently):
  json   LCCC as published: a JSON array of dialogues, or {"train": [...], "valid": [...], "test": [...]}
  jsonl  one dialogue per line: a list of strings, a list of {"text": ...}, or {"dialog": [...]} (HF silver/lccc)
  tsv    one dialogue per line, utterances separated by tabs (`.tsv`, `.txt`)
A dialogue is a list of utterances; each utterance is already segmented with spaces.
Nothing here holds a file in memory: records are produced one at a time (JSON arrays through
`memexp.data.json_stream.JSONCursor`).
"""

from __future__ import annotations

import gzip
import io
import itertools
import json
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memexp.data.json_stream import JSONCursor
from memexp.errors import ConfigError, DataError

SPLITS = ("train", "valid", "test")
SPLIT_ALIASES = {"train": "train", "valid": "valid", "validation": "valid", "dev": "valid", "test": "test"}
# LCCC-base as mirrored on the Hugging Face hub (JSONL, one {"dialog": [...]} per line).
LCCC_FILE = "lccc_base_{split}.jsonl.gz"


def open_text(path: str | Path) -> io.TextIOBase:
    """Open a UTF-8 text file for reading, gunzipping `*.gz` on the fly."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file (expected a JSON, JSONL or TSV dialogue file)")
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def detect_format(path: str | Path) -> str:
    """'json', 'jsonl' or 'tsv' from the file name (a trailing .gz is ignored)."""
    name = Path(path).name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    for suffix, fmt in ((".jsonl", "jsonl"), (".json", "json"), (".tsv", "tsv"), (".txt", "tsv")):
        if name.endswith(suffix):
            return fmt
    raise DataError(
        f"{path}: cannot tell the format from the name; expected *.json, *.jsonl, *.tsv or *.txt (optionally .gz), or pass fmt="
    )


def resolve_sources(source: str | Path | dict[str, str | Path], fmt: str | None) -> list[tuple[Path, str | None, str]]:
    """source -> [(path, split or None, format)]. None split: taken from a {"train",...} object, else 'train'."""
    if isinstance(source, dict):
        out = []
        for split, path in source.items():
            if split not in SPLITS:
                raise ConfigError(f"source split {split!r}: expected one of {SPLITS}")
            out.append((Path(path), split, fmt or detect_format(path)))
        return out
    path = Path(source)
    if path.is_dir():
        out = []
        for split in SPLITS:
            names = [
                f"{split}.json",
                f"{split}.jsonl",
                f"{split}.tsv",
                f"{split}.txt",
                LCCC_FILE.format(split=split),
                f"LCCC-base_{split}.json",
            ]
            names += [n + ".gz" for n in names if not n.endswith(".gz")]
            hit = next((path / n for n in names if (path / n).is_file()), None)
            if hit is not None:
                out.append((hit, split, fmt or detect_format(hit)))
        if not out:
            raise DataError(
                f"{path}: no dialogue files found; expected train.json / train.jsonl / train.tsv or {LCCC_FILE.format(split='train')} (and valid/test) in it"
            )
        return out
    return [(path, None, fmt or detect_format(path))]


@dataclass
class Record:
    """One raw dialogue: its split (None: the caller decides), where it starts, and either
    its utterances or what is wrong with it."""

    split: str | None
    line: int
    utterances: list[str] | None
    problem: str | None = None
    index: int | None = None  # the dialogue's index in its JSON array (a one-line JSON file has every one on line 1)

    @property
    def where(self) -> str:
        """`<line>`, with the dialogue's index in a JSON array: `1 (dialogue 3 of 'train')`."""
        if self.index is None:
            return str(self.line)
        return f"{self.line} (dialogue {self.index}{f' of {self.split!r}' if self.split else ''})"


def _as_utterances(value: Any) -> tuple[list[str] | None, str | None]:
    """A parsed dialogue value -> (utterances, None) or (None, what was expected)."""
    if isinstance(value, dict):
        for key in ("dialog", "dialogue", "conversation", "utterances"):
            if key in value:
                value = value[key]
                break
        else:
            return (
                None,
                f"expected a list of utterances or an object with a 'dialog' list, got an object with keys {sorted(value)[:5]}",
            )
    if not isinstance(value, list):
        return None, f"expected a list of utterances, got {type(value).__name__}"
    out = []
    for i, u in enumerate(value):
        if isinstance(u, dict):
            u = u.get("text")
        if not isinstance(u, str):
            return None, f'utterance {i} should be a string or {{"text": string}}, got {type(u).__name__}'
        if not u.strip():
            return None, f"utterance {i} is empty"
        out.append(u)
    return out, None


def _compression_error(path: str | Path, e: Exception) -> DataError:
    if isinstance(e, EOFError):
        return DataError(f"{path}: the gzip stream ends early (a truncated download?); expected a complete .gz file")
    return DataError(f"{path}: not a gzip file ({e}); expected gzip data, or a name without .gz for plain text")


def _numbered_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, line) of a text file, streamed; invalid UTF-8 names its line (each line is decoded
    on its own: a text reader decodes blocks ahead and would blame the block's first line)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file (expected a JSON, JSONL or TSV dialogue file)")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            for line_no, raw in enumerate(f, start=1):
                try:
                    yield line_no, raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise DataError(f"{path}:{line_no}: not valid UTF-8 ({e.reason} at byte {e.start} of the line)") from None
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise _compression_error(path, e) from None


def read_tsv(path: str | Path) -> Iterator[Record]:
    """One dialogue per line, utterances separated by tabs."""
    for line_no, line in _numbered_lines(path):
        line = line.rstrip("\r\n")
        if not line.strip():
            yield Record(None, line_no, [])
            continue
        utts = line.split("\t")
        bad = next((i for i, u in enumerate(utts) if not u.strip()), None)
        if bad is not None:
            yield Record(None, line_no, None, f"utterance {bad} is empty (expected utterances separated by single tabs)")
        else:
            yield Record(None, line_no, utts)


def read_jsonl(path: str | Path) -> Iterator[Record]:
    """One dialogue per line: a JSON list of strings / of {"text": ...}, or {"dialog": [...]}."""
    for line_no, line in _numbered_lines(path):
        if not line.strip():
            continue  # blank lines between records are not dialogues
        try:
            value = json.loads(line)
        except json.JSONDecodeError as e:
            yield Record(None, line_no, None, f"not valid JSON ({e.msg} at column {e.colno})")
            continue
        utts, problem = _as_utterances(value)
        yield Record(None, line_no, utts, problem)


def read_json(path: str | Path, block: int = 1 << 20) -> Iterator[Record]:
    """LCCC as published: `[dialogue, ...]` or `{"train": [...], "valid": [...], "test": [...]}`.

    Streams element by element. A syntax error cannot be skipped (the parser cannot tell
    where the next dialogue starts), so it always raises; a well-formed element that is not
    a dialogue is a bad record like a bad JSONL line.
    """
    try:
        yield from _read_json(path, block)
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise _compression_error(path, e) from None


def _read_json(path: str | Path, block: int) -> Iterator[Record]:
    with open_text(path) as f:
        cur = JSONCursor(f, path, block=block)
        first = cur.peek()
        if first == "[":
            yield from _read_json_array(cur, None)
        elif first == "{":
            cur.pos += 1
            seen = set()
            while True:
                c = cur.peek()
                if c == "}":
                    cur.pos += 1
                    break
                if seen:
                    cur.expect(",", "',' or '}' between splits")
                if cur.peek() != '"':
                    cur.fail('a split name such as "train"')
                key = cur.value()
                cur.expect(":", "':' after the split name")
                split = SPLIT_ALIASES.get(key)
                if split is None:
                    raise DataError(f"{path}:{cur.line()}: unknown split {key!r}; expected keys among {sorted(SPLIT_ALIASES)}")
                if split in seen:
                    raise DataError(f"{path}:{cur.line()}: split {key!r} appears twice")
                seen.add(split)
                if cur.peek() != "[":
                    cur.fail(f"a list of dialogues for split {key!r}")
                yield from _read_json_array(cur, split)
        else:
            cur.fail('a JSON list of dialogues or an object {"train": [...], ...}')
        if cur.peek() != "":
            cur.fail("end of file after the top-level value")


def _read_json_array(cur: JSONCursor, split: str | None) -> Iterator[Record]:
    for index, (line, value) in enumerate(cur.array_items("dialogues")):
        utts, problem = _as_utterances(value)
        yield Record(split, line, utts, problem, index)


READERS: dict[str, Callable[[str | Path], Iterator[Record]]] = {"json": read_json, "jsonl": read_jsonl, "tsv": read_tsv}


def hold_out(path: str | Path, out_dir: str | Path, n: int, skip_bad: bool = False) -> Path:
    """A corpus file with only training dialogues, split into `out_dir`/{train,valid,test}.tsv: its last `n`
    dialogues are held out (the first half of them to valid, the rest to test), in the file's order.
    Written under temporary names and renamed; a folder already split from the same file is reused."""
    from memexp.files import atomic_path, file_digest, write_json

    path, out_dir = Path(path), Path(out_dir)
    if not path.is_file():
        raise ConfigError(f"data.holdout={n} needs data.source to be one corpus file; {path} is not a file")
    done = out_dir / "holdout.json"
    stamp = {"source": str(path.resolve()), "sha256": file_digest(path), "holdout": n}
    if done.is_file() and json.loads(done.read_text(encoding="utf-8")) == stamp:
        return out_dir
    reader = READERS[detect_format(path)]
    total = 0
    for rec in reader(path):
        if rec.split not in (None, "train"):
            raise ConfigError(f"data.holdout={n}: {path} already has a {rec.split!r} split; set data.holdout=0")
        if rec.problem is not None and not skip_bad:
            raise DataError(f"{path}:{rec.where}: {rec.problem}")
        total += rec.problem is None and bool(rec.utterances)
    if total <= n or n < 2:
        raise ConfigError(f"data.holdout={n}: expected 2 <= holdout < the {total} dialogues of {path}")
    counts = {"train": total - n, "valid": n // 2, "test": n - n // 2}
    out_dir.mkdir(parents=True, exist_ok=True)
    records = (r for r in reader(path) if r.problem is None and r.utterances)
    for split in SPLITS:
        with atomic_path(out_dir / f"{split}.tsv") as tmp, open(tmp, "w", encoding="utf-8") as f:
            for rec in itertools.islice(records, counts[split]):
                f.write("\t".join(" ".join(u.split()) for u in rec.utterances) + "\n")
    write_json(stamp, done)
    return out_dir
