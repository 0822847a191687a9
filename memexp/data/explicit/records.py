"""JSONL records for ExplicitLM, streamed line by line: pretraining text and SFT conversations.

  pretrain   {"text": "..."} per line
  sft        {"conversations": [{"role": "system" | "user" | "assistant", "content": "..."}, ...]} per line
Blank lines are not records. Each record is checked as it is read; a bad one raises a DataError
naming the file and line (and, for a conversation, the turn). Nothing holds the file in memory.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from memexp.errors import DataError

FORMATS = ("pretrain", "sft")
ROLES = ("system", "user", "assistant")
EXPECTED = {
    "pretrain": 'one {"text": string} object per line',
    "sft": 'one {"conversations": [{"role": ..., "content": ...}, ...]} object per line',
}


def numbered_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, line) of the non-blank lines of a UTF-8 file, streamed."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file (expected a JSONL file)")
    with open(path, encoding="utf-8") as f:
        line_no = 0
        while True:
            line_no += 1
            try:
                line = f.readline()
            except UnicodeDecodeError as e:
                raise DataError(f"{path}, line {line_no}: not valid UTF-8 ({e.reason})") from None
            if not line:
                return
            if line.strip():
                yield line_no, line


def check_not_empty(path: str | Path, fmt: str) -> None:
    """Raise when the file has no record at all (reads only up to its first non-blank line)."""
    if next(numbered_lines(path), None) is None:
        raise DataError(f"{path} is empty; expected {EXPECTED[fmt]}")


def parse_record(path: str | Path, line_no: int, line: str, fmt: str) -> Any:
    """The text (pretrain) or list of turns (sft) of one JSONL line, checked."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}, line {line_no}: not valid JSON ({e.msg}); expected {EXPECTED[fmt]}") from None
    if not isinstance(record, dict):
        raise DataError(f"{path}, line {line_no}: a JSON {type(record).__name__}, not an object; expected {EXPECTED[fmt]}")
    if fmt == "pretrain":
        if not isinstance(record.get("text"), str):
            raise DataError(f'{path}, line {line_no}: no string "text" field; expected {EXPECTED[fmt]}')
        return record["text"]
    turns = record.get("conversations")
    if not isinstance(turns, list) or not turns:
        raise DataError(f'{path}, line {line_no}: no non-empty "conversations" list; expected {EXPECTED[fmt]}')
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict) or not isinstance(turn.get("content"), str):
            raise DataError(f'{path}, line {line_no}, turn {i}: expected {{"role": ..., "content": string}}')
        if turn.get("role") not in ROLES:
            raise DataError(f"{path}, line {line_no}, turn {i}: role {turn.get('role')!r}; expected one of {', '.join(ROLES)}")
    if not any(t["role"] == "assistant" for t in turns):  # SFT learns the assistant turns only: nothing to learn here
        raise DataError(f"{path}, line {line_no}: the conversation has no assistant turn, so nothing in it is trained on")
    return [{"role": t["role"], "content": t["content"]} for t in turns]
