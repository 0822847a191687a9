"""Raw dialogue files -> `Record`s, streamed: TSV, JSONL and JSON (LCCC as published).

Source formats (`.gz` is read transparently):
  json   LCCC as published: a JSON array of dialogues, or {"train": [...], "valid": [...], "test": [...]}
  jsonl  one dialogue per line: a list of strings, a list of {"text": ...}, or {"dialog": [...]} (HF silver/lccc)
  tsv    one dialogue per line, utterances separated by tabs (`.tsv`, `.txt`)
A dialogue is a list of utterances; each utterance is already segmented with spaces.
Nothing here holds a file in memory: records are produced one at a time.
"""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def _numbered_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, line) of a text file, streamed; invalid UTF-8 names its line."""
    with open_text(path) as f:
        line_no = 0
        while True:
            line_no += 1
            try:
                line = f.readline()
            except UnicodeDecodeError as e:
                raise DataError(f"{path}:{line_no}: not valid UTF-8 ({e.reason})") from None
            if not line:
                return
            yield line_no, line


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


# Hand-written on purpose: LCCC ships as one JSON array of millions of dialogues, and the stdlib
# json module can neither stream such an array element by element (without holding it in memory)
# nor say on which line a bad record starts; this cursor does both around json's value decoder.
class _JSONCursor:
    """Incremental JSON reading over a text file with `json.JSONDecoder.raw_decode`.

    Holds a window of the file; values are decoded one at a time and the consumed prefix
    is dropped, so memory is bounded by the largest single value (one dialogue), not the file.
    """

    def __init__(self, f: io.TextIOBase, path: str | Path, block: int = 1 << 20, max_value: int = 64 << 20):
        self.f, self.path, self.block, self.max_value = f, path, block, max_value
        self.buf, self.pos, self.eof = "", 0, False
        self._lpos, self._lno = 0, 1  # line number at buf[_lpos], moved forward incrementally
        self.decoder = json.JSONDecoder()

    def _fill(self) -> bool:
        if self.eof:
            return False
        try:
            chunk = self.f.read(self.block)
        except UnicodeDecodeError as e:
            raise DataError(f"{self.path}:{self.line()}: not valid UTF-8 ({e.reason})") from None
        if not chunk:
            self.eof = True
            return False
        if self.pos > self.block:  # drop what has been consumed
            self.line(self.pos)
            self.buf = self.buf[self.pos :]
            self._lpos -= self.pos
            self.pos = 0
        self.buf += chunk
        return True

    def line(self, pos: int | None = None) -> int:
        """1-based line number of buf[pos] (default: the cursor)."""
        pos = self.pos if pos is None else pos
        if pos >= self._lpos:
            self._lno += self.buf.count("\n", self._lpos, pos)
            self._lpos = pos
            return self._lno
        return self._lno - self.buf.count("\n", pos, self._lpos)

    def fail(self, expected: str) -> None:
        found = repr(self.buf[self.pos : self.pos + 20]) if self.pos < len(self.buf) else "end of file"
        raise DataError(f"{self.path}:{self.line()}: expected {expected}, found {found}")

    def peek(self) -> str:
        """Next non-whitespace character ('' at end of file), without consuming it."""
        while True:
            while self.pos < len(self.buf) and self.buf[self.pos] in " \t\r\n":
                self.pos += 1
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self._fill():
                return ""

    def expect(self, char: str, what: str) -> None:
        if self.peek() != char:
            self.fail(what)
        self.pos += 1

    def value(self) -> Any:
        """Decode the next JSON value, reading more of the file while it is incomplete."""
        self.peek()
        while True:
            try:
                value, end = self.decoder.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as e:
                # Incomplete at the end of the window: read more and retry; an error well before
                # the end of the window (or in a value larger than max_value) is malformed input.
                near_end = len(self.buf) - e.pos <= self.block or e.msg.startswith("Unterminated string")
                if near_end and len(self.buf) - self.pos < self.max_value and self._fill():
                    continue
                raise DataError(f"{self.path}:{self.line(e.pos)}: not valid JSON ({e.msg})") from None
            if end == len(self.buf) and not self.eof and isinstance(value, (int, float)):
                # a number may continue in the next block
                if self._fill():
                    continue
            self.pos = end
            return value


def read_json(path: str | Path, block: int = 1 << 20) -> Iterator[Record]:
    """LCCC as published: `[dialogue, ...]` or `{"train": [...], "valid": [...], "test": [...]}`.

    Streams element by element. A syntax error cannot be skipped (the parser cannot tell
    where the next dialogue starts), so it always raises; a well-formed element that is not
    a dialogue is a bad record like a bad JSONL line.
    """
    with open_text(path) as f:
        cur = _JSONCursor(f, path, block=block)
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


def _read_json_array(cur: _JSONCursor, split: str | None) -> Iterator[Record]:
    cur.expect("[", "'['")
    first = True
    while True:
        c = cur.peek()
        if c == "]":
            cur.pos += 1
            return
        if not first:
            cur.expect(",", "',' or ']' between dialogues")
        first = False
        cur.peek()  # to the value's first character, so its line is reported
        line = cur.line()
        utts, problem = _as_utterances(cur.value())
        yield Record(split, line, utts, problem)


READERS: dict[str, Callable[[str | Path], Iterator[Record]]] = {"json": read_json, "jsonl": read_jsonl, "tsv": read_tsv}
