"""Streaming reads of large JSON files: one value at a time, each with the line it starts on.

The stdlib json module can neither stream a huge array element by element (without holding it
in memory) nor say on which line a bad element starts; `JSONCursor` does both around json's own
value decoder. Used for LCCC dialogue files (`data/dialogue/readers.py`) and for knowledge
bases of explicit memory (`data/explicit/bank_cache.py`), which run to hundreds of megabytes.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from memexp.errors import DataError


# Hand-written on purpose: see the module docstring.
class JSONCursor:
    """Incremental JSON reading over a text file with `json.JSONDecoder.raw_decode`.

    Holds a window of the file; values are decoded one at a time and the consumed prefix
    is dropped, so memory is bounded by the largest single value, not the file.
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

    def array_items(self, what: str = "values") -> Iterator[tuple[int, Any]]:
        """(line, value) of each element of the array at the cursor; stops after its ']'."""
        self.expect("[", "'['")
        first = True
        while True:
            if self.peek() == "]":
                self.pos += 1
                return
            if not first:
                self.expect(",", f"',' or ']' between {what}")
            first = False
            self.peek()  # to the value's first character, so its line is reported
            line = self.line()
            yield line, self.value()


def iter_json_array(path: str | Path, what: str = "items", block: int = 1 << 20) -> Iterator[tuple[int, Any]]:
    """(line, value) of each element of a file holding one top-level JSON array, streamed.

    `what` names the elements in error messages ("knowledge items"). Stops reading as soon as
    the caller stops iterating, so taking the first N items of a huge file reads only those.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file (expected a JSON array of {what})")
    with open(path, encoding="utf-8", newline="") as f:
        cur = JSONCursor(f, path, block=block)
        first = cur.peek()
        if first == "":
            raise DataError(f"{path} is empty; expected a JSON array of {what}")
        if first != "[":
            cur.fail(f"a JSON array of {what} ('[')")
        yield from cur.array_items(what)
        if cur.peek() != "":
            cur.fail("end of file after the top-level array")
