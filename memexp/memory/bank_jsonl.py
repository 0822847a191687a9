"""A memory bank as JSON lines, one entry a line, for reading, diffing and editing outside memexp.

    {"index": 7, "text": "the capital of x is y .", "tokens": [12, 40, ...], "frozen": false, "source": "kb:f7", "by_content": false}

`tokens` are the entry's exact ids, all L of them, pad included: exporting a bank and importing the
file gives back the same bank, and exporting again the same bytes. On import:

    index       required; an entry of the bank (0..N-1), each at most once
    tokens      the ids the entry gets (exactly L, each in the vocabulary); they win over `text`
    text        used when there are no tokens: encoded like a knowledge entry (cut to L with a warning)
    frozen      optional; when given it must match the bank (the frozen region is the model's, not the file's)
    source      optional; default: the entry's own when its tokens stay, else "import"
    by_content  optional; default: the entry's own when its tokens stay, else true (as an edit)
    uses        ignored (the usage counters of `show format=json`; not imported)

Entries the file does not name stay as they are. Every line is checked before anything is written, so
a bad line (named with its number) leaves the bank unchanged; so does a change to a frozen entry
without `force`.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from memexp.errors import ConfigError, DataError
from memexp.files import write_text
from memexp.memory.runtime import ExplicitMemory
from memexp.memory.updates import EntryChange

FIELDS = ("index", "text", "tokens", "frozen", "source", "by_content")
IGNORED = ("uses",)


def entry_line(memory: ExplicitMemory, index: int) -> str:
    """The JSON line of one entry (fields in FIELDS order; text kept readable, not \\u-escaped)."""
    e = memory.entry(index)
    record = {
        "index": e["index"],
        "text": e["text"],
        "tokens": memory.net.memory_bank[index].tolist(),
        "frozen": e["frozen"],
        "source": e["source"],
        "by_content": e["by_content"],
    }
    return json.dumps(record, ensure_ascii=False)


def export_bank_jsonl(memory: ExplicitMemory, path: str | Path) -> Path:
    """Write every entry of the bank, in index order, to `path` (atomically)."""
    return write_text("".join(entry_line(memory, i) + "\n" for i in range(memory.size)), path)


@dataclass
class ImportedEntry:
    """One line of an import file, checked: where it was, which entry, and what the entry becomes."""

    line: int
    index: int
    tokens: torch.Tensor  # (L,) int32
    source: str | None  # None: the default (see the module docstring)
    by_content: bool | None


def read_bank_jsonl(path: str | Path, memory: ExplicitMemory) -> list[ImportedEntry]:
    """Every line of `path` checked against `memory`'s bank; a DataError names the first bad line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file (expected a JSONL bank export, one entry a line)")
    entries: list[ImportedEntry] = []
    seen: dict[int, int] = {}
    with open(path, encoding="utf-8") as f:
        for n, raw in enumerate(f, start=1):
            if raw.strip():
                entry = _read_line(raw, n, f"{path}, line {n}", memory)
                if entry.index in seen:
                    raise DataError(f"{path}, line {n}: index {entry.index} was already given on line {seen[entry.index]}")
                seen[entry.index] = n
                entries.append(entry)
    if not entries:
        raise DataError(f"{path}: no entries (expected one JSON object a line, as `export` writes)")
    return entries


def _read_line(raw: str, line: int, where: str, memory: ExplicitMemory) -> ImportedEntry:
    try:
        record = json.loads(raw.rstrip("\r\n"))
    except json.JSONDecodeError as e:
        raise DataError(f"{where}: not JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object with index and tokens or text, got {type(record).__name__}")
    unknown = sorted(set(record) - set(FIELDS) - set(IGNORED))
    if unknown:
        raise DataError(f"{where}: unknown field {unknown[0]!r} (expected {', '.join(FIELDS)})")
    if "index" not in record:
        raise DataError(f"{where}: missing field 'index' (the entry the line writes)")
    index = record["index"]
    if not isinstance(index, int) or isinstance(index, bool):
        raise DataError(f"{where}: index {index!r} is not an entry number")
    if not 0 <= index < memory.size:
        raise DataError(f"{where}: index {index} is out of range (the bank has entries 0..{memory.size - 1})")
    if "tokens" in record:
        tokens = _tokens(record["tokens"], where, memory)
    elif "text" in record:
        if not isinstance(record["text"], str):
            raise DataError(f"{where}: text must be a string, got {type(record['text']).__name__}")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            tokens = memory.encode(record["text"])
        for w in caught:
            warnings.warn(f"{where}: {w.message}", stacklevel=4)
    else:
        raise DataError(f"{where}: missing field 'tokens' or 'text' (what entry {index} holds)")
    frozen = bool(memory.net.freeze_mask[index])
    if "frozen" in record and not isinstance(record["frozen"], bool):
        raise DataError(f"{where}: frozen must be true or false, got {json.dumps(record['frozen'])}")
    if "frozen" in record and record["frozen"] is not frozen:
        raise DataError(
            f"{where}: frozen is {json.dumps(record['frozen'])} but entry {index} is {'' if frozen else 'not '}frozen in this bank "
            f"(the first {int(memory.net.freeze_mask.sum())} entries are); expected a file exported from this model's bank"
        )
    source, by_content = record.get("source"), record.get("by_content")
    if source is not None and not isinstance(source, str):
        raise DataError(f"{where}: source must be a string, got {type(source).__name__}")
    if by_content is not None and not isinstance(by_content, bool):
        raise DataError(f"{where}: by_content must be true or false, got {json.dumps(by_content)}")
    return ImportedEntry(line, index, tokens, source, by_content)


def _tokens(ids: object, where: str, memory: ExplicitMemory) -> torch.Tensor:
    if not isinstance(ids, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in ids):
        raise DataError(f"{where}: tokens must be a list of token ids (integers)")
    if len(ids) != memory.length:
        raise DataError(
            f"{where}: tokens has {len(ids)} ids; a bank entry holds exactly {memory.length} (knowledge_length, pad included)"
        )
    vocab = memory.vocab_size
    bad = next((t for t in ids if not 0 <= t < vocab), None)
    if bad is not None:
        raise DataError(f"{where}: token id {bad} is outside the vocabulary (ids 0..{vocab - 1})")
    return torch.tensor(ids, dtype=torch.int32)


def import_bank_jsonl(memory: ExplicitMemory, path: str | Path, force: bool = False) -> list[EntryChange]:
    """Write the entries of `path` into `memory` (frozen ones only with force); the entries that changed.

    Nothing is written unless every line is good and every change is allowed."""
    entries = read_bank_jsonl(path, memory)
    planned = []
    for e in entries:
        same_tokens = torch.equal(memory.net.memory_bank[e.index], e.tokens)
        source = e.source if e.source is not None else (memory.sources[e.index] if same_tokens else "import")
        if e.by_content is not None:
            by_content = e.by_content
        else:
            by_content = bool(memory.net.content_rows[e.index]) if same_tokens else True
        changed = not same_tokens or source != memory.sources[e.index] or by_content != bool(memory.net.content_rows[e.index])
        if changed and bool(memory.net.freeze_mask[e.index]) and not force:
            raise ConfigError(
                f"{path}, line {e.line}: entry {e.index} is frozen (the first {int(memory.net.freeze_mask.sum())} entries "
                f"are) and the file changes it; import it with force=true"
            )
        if changed:
            planned.append((e, source, by_content))
    return [memory.put(e.index, e.tokens, source, by_content, force=force) for e, source, by_content in planned]
