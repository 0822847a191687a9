"""Prepare LCCC-format dialogues into a folder of fixed-size `.pt` chunks, streaming.

Output folder (the contract `DialogueStream` reads):

    out_dir/
      vocabulary.json            DialogueVocab.state_dict()
      train/chunk_00000.pt ...   each a dict of plain tensors (torch.load(weights_only=True)):
                                   tokens       (N_tok,)  int32  every utterance's ids, back to back
                                   utt_offsets  (N_utt+1,) int64 utterance u is tokens[utt_offsets[u]:utt_offsets[u+1]]
                                   dial_offsets (N_dia+1,) int64 dialogue d is utterances dial_offsets[d]:dial_offsets[d+1]
      valid/...  test/...
      manifest.json              written LAST: counts, per-chunk sha256, source, vocab checksum

A folder without `manifest.json` is never a finished one. While preparing, `progress.json`
records the chunks already written (with their checksums) and how many source records they
cover, so running `prepare_dialogues` again after an interruption checks those chunks and
continues after them; because conversion is deterministic, the result is byte-identical to
an uninterrupted run. Nothing here holds the corpus in memory: sources are read record by
record (JSON arrays through an incremental parser), and a writer holds one chunk at a time.

Source formats (`.gz` is read transparently):
  json   LCCC as published: a JSON array of dialogues, or {"train": [...], "valid": [...], "test": [...]}
  jsonl  one dialogue per line: a list of strings, a list of {"text": ...}, or {"dialog": [...]} (HF silver/lccc)
  tsv    one dialogue per line, utterances separated by tabs (`.tsv`, `.txt`)
A dialogue is a list of utterances; each utterance is already segmented with spaces.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import sys
import urllib.request
from array import array
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import torch

from memexp.errors import ConfigError, DataError

FORMAT_VERSION = 1
SPLITS = ("train", "valid", "test")
SPLIT_ALIASES = {"train": "train", "valid": "valid", "validation": "valid", "dev": "valid", "test": "test"}

# LCCC-base as mirrored on the Hugging Face hub (JSONL, one {"dialog": [...]} per line).
LCCC_URL = "https://huggingface.co/datasets/silver/lccc/resolve/main/lccc_base_{split}.jsonl.gz"
LCCC_FILE = "lccc_base_{split}.jsonl.gz"


# --------------------------------------------------------------------------- raw files


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
    raise DataError(f"{path}: cannot tell the format from the name; expected *.json, *.jsonl, *.tsv or *.txt (optionally .gz), or pass fmt=")


def download_lccc(raw_dir: str | Path, splits: Iterable[str] = SPLITS) -> dict[str, Path]:
    """The LCCC-base files in raw_dir, downloading those that are missing.

    Without network the error says which file to put where (the toy sample
    `toy_data.json` of CDial-GPT can be passed to `prepare_dialogues` instead).
    """
    raw_dir = Path(raw_dir)
    found = {}
    for split in splits:
        target = raw_dir / LCCC_FILE.format(split=split)
        if not target.exists():
            url = LCCC_URL.format(split=split)
            raw_dir.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(target.name + ".part")
            try:
                with urllib.request.urlopen(url, timeout=30) as response, open(tmp, "wb") as f:
                    shutil.copyfileobj(response, f, length=1 << 20)
                os.replace(tmp, target)
            except Exception as e:  # no network, HTTP error, disk full: all fixed the same way
                tmp.unlink(missing_ok=True)
                raise DataError(
                    f"could not download {url} ({type(e).__name__}: {e}); download it by hand and put it at {target} "
                    f"(or pass a local LCCC file such as LCCC-base_{split}.json or toy_data.json as the source)"
                ) from None
        found[split] = target
    return found


@dataclass
class Record:
    """One raw dialogue: its split (None: the caller decides), where it starts, and either
    its utterances or what is wrong with it."""

    split: str | None
    line: int
    utterances: list[str] | None
    problem: str | None = None


def _as_utterances(value) -> tuple[list[str] | None, str | None]:
    """A parsed dialogue value -> (utterances, None) or (None, what was expected)."""
    if isinstance(value, dict):
        for key in ("dialog", "dialogue", "conversation", "utterances"):
            if key in value:
                value = value[key]
                break
        else:
            return None, f"expected a list of utterances or an object with a 'dialog' list, got an object with keys {sorted(value)[:5]}"
    if not isinstance(value, list):
        return None, f"expected a list of utterances, got {type(value).__name__}"
    out = []
    for i, u in enumerate(value):
        if isinstance(u, dict):
            u = u.get("text")
        if not isinstance(u, str):
            return None, f"utterance {i} should be a string or {{\"text\": string}}, got {type(u).__name__}"
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


class _JSONCursor:
    """Incremental JSON reading over a text file with `json.JSONDecoder.raw_decode`.

    Holds a window of the file; values are decoded one at a time and the consumed prefix
    is dropped, so memory is bounded by the largest single value (one dialogue), not the file.
    """

    def __init__(self, f, path, block: int = 1 << 20, max_value: int = 64 << 20):
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

    def fail(self, expected: str):
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

    def value(self):
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
            cur.fail("a JSON list of dialogues or an object {\"train\": [...], ...}")
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


# --------------------------------------------------------------------------- vocabulary


class DialogueVocab:
    """Space-separated tokens -> ids, with PAD / SOS / EOS / UNK roles.

    Built vocabularies put <pad>=0, <sos>=1, <eos>=2, <unk>=3 first and then tokens by
    descending training-split frequency (ties by token, so the build is deterministic).
    A WordPiece vocabulary file (the Chinese BERT vocab) keeps its own ids and maps
    [PAD]/[CLS]/[SEP]/[UNK] to the PAD/SOS/EOS/UNK roles; a token missing from it is tried
    lower-cased, then split greedily into WordPiece pieces (`##` continuations), else [UNK].
    """

    BUILT_SPECIALS = {"pad": "<pad>", "sos": "<sos>", "eos": "<eos>", "unk": "<unk>"}
    WORDPIECE_SPECIALS = {"pad": "[PAD]", "sos": "[CLS]", "eos": "[SEP]", "unk": "[UNK]"}

    def __init__(self, tokens: list[str], specials: dict[str, str], kind: str = "built", source: str | None = None):
        self.tokens = list(tokens)
        self.kind = kind
        self.source = source
        self.specials = dict(specials)
        self.stoi = {t: i for i, t in enumerate(self.tokens)}
        if len(self.stoi) != len(self.tokens):
            dup = next(t for t in self.tokens if self.tokens.count(t) > 1)
            raise DataError(f"vocabulary{' ' + source if source else ''}: token {dup!r} appears more than once")
        for role in ("pad", "sos", "eos", "unk"):
            if specials.get(role) not in self.stoi:
                raise DataError(
                    f"vocabulary{' ' + source if source else ''}: the {role.upper()} token {specials.get(role)!r} is missing "
                    f"(expected {DialogueVocab.WORDPIECE_SPECIALS if kind == 'wordpiece' else DialogueVocab.BUILT_SPECIALS})"
                )
        self.pad_id, self.sos_id, self.eos_id, self.unk_id = (self.stoi[specials[r]] for r in ("pad", "sos", "eos", "unk"))
        self._special_ids = {self.pad_id, self.sos_id, self.eos_id}

    # -- construction

    @classmethod
    def build(cls, counts: Counter, min_freq: int = 1, max_size: int | None = None) -> "DialogueVocab":
        """From token counts; `max_size` counts the 4 specials."""
        specials = cls.BUILT_SPECIALS
        words = sorted((w for w, c in counts.items() if c >= min_freq and w not in specials.values()), key=lambda w: (-counts[w], w))
        if max_size is not None:
            words = words[: max(0, max_size - len(specials))]
        return cls([specials[r] for r in ("pad", "sos", "eos", "unk")] + words, specials, kind="built")

    @classmethod
    def from_wordpiece_file(cls, path: str | Path) -> "DialogueVocab":
        """A BERT-style vocab.txt: one token per line, id = line number - 1."""
        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: vocabulary file not found (expected a WordPiece vocab.txt, one token per line)")
        with open(path, encoding="utf-8") as f:
            tokens = [line.rstrip("\r\n") for line in f]
        while tokens and tokens[-1] == "":
            tokens.pop()
        return cls(tokens, cls.WORDPIECE_SPECIALS, kind="wordpiece", source=str(path))

    # -- ids

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, text: str) -> list[int]:
        get = self.stoi.get
        words = text.split()
        ids = [get(w, -1) for w in words]
        if -1 in ids:
            ids = [i for w, i0 in zip(words, ids) for i in ((i0,) if i0 >= 0 else self._encode_missing(w))]
        return ids

    def _encode_missing(self, word: str) -> list[int]:
        if self.kind != "wordpiece":
            return [self.unk_id]
        low = word.lower()
        if low in self.stoi:
            return [self.stoi[low]]
        if len(low) > 100:
            return [self.unk_id]
        pieces, start = [], 0
        while start < len(low):  # greedy longest-match-first, as in BERT's WordPiece
            end = len(low)
            while end > start:
                piece = low[start:end] if start == 0 else "##" + low[start:end]
                if piece in self.stoi:
                    pieces.append(self.stoi[piece])
                    break
                end -= 1
            if end == start:
                return [self.unk_id]
            start = end
        return pieces

    def segment(self, text: str, longest: int = 8) -> str:
        """Unsegmented user text -> space-separated vocabulary tokens (for `encode`).

        Whitespace-separated words found in the vocabulary are kept; any other word is cut
        greedily into the longest known tokens of at most `longest` characters, unknown
        characters standing alone. "你好吗" becomes "你 好 吗" with a character vocabulary
        and "你好 吗" with a word vocabulary holding 你好.
        """
        out: list[str] = []
        for word in text.split():
            if word in self.stoi:
                out.append(word)
                continue
            start = 0
            while start < len(word):
                end = min(len(word), start + longest)
                while end > start + 1 and word[start:end] not in self.stoi:
                    end -= 1
                out.append(word[start:end])
                start = end
        return " ".join(out)

    def decode(self, ids, skip_special: bool = True) -> str:
        out: list[str] = []
        for i in ids:
            i = int(i)
            if skip_special and i in self._special_ids:
                continue
            tok = self.tokens[i]
            if tok.startswith("##") and out and self.kind == "wordpiece":
                out[-1] += tok[2:]
            else:
                out.append(tok)
        return " ".join(out)

    # -- persistence

    def state_dict(self) -> dict:
        return {"name": "dialogue_vocab", "kind": self.kind, "tokens": self.tokens, "specials": self.specials, "source": self.source}

    @classmethod
    def from_state(cls, state: dict) -> "DialogueVocab":
        try:
            return cls(state["tokens"], state["specials"], kind=state.get("kind", "built"), source=state.get("source"))
        except (KeyError, TypeError):
            raise DataError("vocabulary state: expected a dict with 'tokens' (list) and 'specials' (pad/sos/eos/unk)") from None

    @classmethod
    def load(cls, path: str | Path) -> "DialogueVocab":
        path = Path(path)
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataError(f"{path}: vocabulary.json not found; run the preparation for this folder first") from None
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{e.lineno}: vocabulary.json is not valid JSON ({e.msg})") from None
        return cls.from_state(state)

    @property
    def checksum(self) -> str:
        """sha256 of the id assignment (tokens and special roles); what chunks depend on."""
        blob = json.dumps({"tokens": self.tokens, "specials": self.specials, "kind": self.kind}, ensure_ascii=False, sort_keys=True)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def describe(self) -> str:
        if self.kind == "wordpiece":
            return f"WordPiece vocabulary {self.source} ({self.vocab_size} tokens; [PAD]/[CLS]/[SEP]/[UNK] as PAD/SOS/EOS/UNK)"
        return f"built from the training split ({self.vocab_size} tokens incl. <pad>/<sos>/<eos>/<unk>)"


# --------------------------------------------------------------------------- chunks


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def chunk_name(index: int) -> str:
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
            "tokens": torch.frombuffer(self.tokens, dtype=torch.int32).clone() if self.tokens else torch.zeros(0, dtype=torch.int32),
            "utt_offsets": torch.frombuffer(self.utt_offsets, dtype=torch.int64).clone(),
            "dial_offsets": torch.frombuffer(self.dial_offsets, dtype=torch.int64).clone(),
        }
        path = self.dir / name
        tmp = path.with_name(name + ".tmp")
        torch.save(chunk, tmp)
        os.replace(tmp, path)
        record = {
            "file": name,
            "dialogues": self.pending,
            "utterances": len(self.utt_offsets) - 1,
            "tokens": len(self.tokens),
            "pairs": self.pairs,
            "sha256": file_sha256(path),
        }
        self.records.append(record)
        self._reset()
        return record


def read_chunk(path: str | Path, sha256: str | None = None) -> dict[str, torch.Tensor]:
    """Load one chunk with weights_only=True and check its structure (DataError names the chunk).

    With `sha256` (from the manifest) the file must also match that checksum.
    """
    import pickle

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
        raise DataError(f"chunk {path} is corrupt or truncated ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); run the preparation again") from None
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise DataError(f"chunk {path} does not match the sha256 in manifest.json (changed after preparation?); run the preparation again")
    expected = {"tokens": torch.int32, "utt_offsets": torch.int64, "dial_offsets": torch.int64}
    if not isinstance(chunk, dict) or set(chunk) != set(expected):
        raise DataError(f"chunk {path}: expected a dict with keys {sorted(expected)}, got {type(chunk).__name__} {sorted(chunk) if isinstance(chunk, dict) else ''}")
    for key, dtype in expected.items():
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


# --------------------------------------------------------------------------- preparation


def _resolve_sources(source, fmt: str | None) -> list[tuple[Path, str | None, str]]:
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
            names = [f"{split}.json", f"{split}.jsonl", f"{split}.tsv", f"{split}.txt", LCCC_FILE.format(split=split), f"LCCC-base_{split}.json"]
            names += [n + ".gz" for n in names if not n.endswith(".gz")]
            hit = next((path / n for n in names if (path / n).is_file()), None)
            if hit is not None:
                out.append((hit, split, fmt or detect_format(hit)))
        if not out:
            raise DataError(f"{path}: no dialogue files found; expected train.json / train.jsonl / train.tsv or {LCCC_FILE.format(split='train')} (and valid/test) in it")
        return out
    return [(path, None, fmt or detect_format(path))]


def _fingerprint(sources, vocab_desc: dict, chunk_size: int, skip_bad: bool, splits) -> str:
    parts = []
    for path, split, fmt in sources:
        if not path.is_file():
            raise DataError(f"{path}: no such file (expected a JSON, JSONL or TSV dialogue file)")
        st = path.stat()
        parts.append([str(path.resolve()), split, fmt, st.st_size, st.st_mtime_ns])
    blob = json.dumps(
        {"v": FORMAT_VERSION, "sources": parts, "vocab": vocab_desc, "chunk_size": chunk_size, "skip_bad": skip_bad, "splits": list(splits)},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def _write_json_atomic(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, ensure_ascii=False, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def _records(sources) -> Iterator[tuple[int, Path, Record]]:
    for i, (path, split, fmt) in enumerate(sources):
        for rec in READERS[fmt](path):
            if split is not None:
                rec.split = split
            elif rec.split is None:
                rec.split = "train"
            yield i, path, rec


class _Progress:
    """A rich progress line when enabled; a no-op otherwise."""

    def __init__(self, enabled: bool | None, description: str):
        if enabled is None:
            enabled = sys.stderr.isatty()
        self.bar = None
        if enabled:
            try:
                from rich.progress import MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
            except ImportError:
                return
            self.bar = Progress(TextColumn("{task.description}"), MofNCompleteColumn(), TextColumn("dialogues"), TimeElapsedColumn(), transient=True)
            self.task = self.bar.add_task(description, total=None)
            self.bar.start()

    def advance(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.advance(self.task, n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def prepare_dialogues(
    source,
    out_dir: str | Path,
    vocab: "str | Path | DialogueVocab | None" = None,
    min_freq: int = 1,
    max_size: int | None = None,
    chunk_size: int = 10_000,
    skip_bad: bool = False,
    splits: Iterable[str] = SPLITS,
    fmt: str | None = None,
    progress: bool | None = None,
) -> dict:
    """Convert a dialogue corpus into `out_dir` (see the module docstring); returns the manifest.

    source: a file (a {"train","valid","test"} JSON object fills those splits; any other file
        fills 'train'), a folder holding {split}.json/.jsonl/.tsv or lccc_base_{split}.jsonl.gz,
        or a dict {split: path}.
    vocab: None or "build" (count the training split: `min_freq`, `max_size` incl. specials),
        a WordPiece vocab.txt path, or a DialogueVocab.
    chunk_size: dialogues per chunk file.
    skip_bad: skip malformed records (counted in the manifest) instead of raising DataError.
    splits: which splits to write; records of other splits are read past.
    progress: show a progress line (default: when stderr is a terminal).

    Running it again on a finished folder returns the existing manifest; on an interrupted
    one it verifies the chunks already written and continues, with an identical result.
    """
    splits = tuple(splits)
    for s in splits:
        if s not in SPLITS:
            raise ConfigError(f"splits: {s!r} is not one of {SPLITS}")
    if min_freq < 1:
        raise ConfigError(f"data.min_freq={min_freq} must be >= 1")
    if max_size is not None and max_size < 5:
        raise ConfigError(f"data.max_size={max_size} must leave room for the 4 special tokens and at least one word")
    if chunk_size < 1:
        raise ConfigError(f"data.chunk_size={chunk_size} must be a positive number of dialogues per chunk")
    out_dir = Path(out_dir)
    sources = _resolve_sources(source, fmt)
    for _, _, f in sources:
        if f not in READERS:
            raise ConfigError(f"fmt={f!r}: expected one of {sorted(READERS)}")

    if isinstance(vocab, DialogueVocab):
        given_vocab, vocab_desc = vocab, {"given": vocab.checksum}
    elif vocab is None or vocab == "build":
        given_vocab, vocab_desc = None, {"build": True, "min_freq": min_freq, "max_size": max_size}
    else:
        given_vocab = DialogueVocab.from_wordpiece_file(vocab)
        vocab_desc = {"wordpiece": file_sha256(vocab)}
    fingerprint = _fingerprint(sources, vocab_desc, chunk_size, skip_bad, splits)

    manifest_path, progress_path, vocab_path = out_dir / "manifest.json", out_dir / "progress.json", out_dir / "vocabulary.json"
    if manifest_path.exists():
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            manifest = {}
        if manifest.get("fingerprint") == fingerprint:
            return manifest
        manifest_path.unlink()  # a different preparation: this folder is no longer finished

    state = None
    if progress_path.exists():
        try:
            state = json.loads(progress_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            state = None
        if state is not None and not _state_is_valid(state, fingerprint, out_dir, vocab_path):
            state = None
    if state is None:
        # Start over deterministically: remove stale chunks of an earlier, different run.
        for split in SPLITS:
            for p in (out_dir / split).glob("chunk_*.pt*") if (out_dir / split).is_dir() else []:
                p.unlink()
        progress_path.unlink(missing_ok=True)
    for split in SPLITS:
        if (out_dir / split).is_dir():
            for p in (out_dir / split).glob("*.tmp"):
                p.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)

    # Pass 1 (built vocabularies only): count tokens of the training split.
    if state is None:
        if given_vocab is None:
            counts: Counter = Counter()
            bar = _Progress(progress, "counting tokens")
            for _, path, rec in _records(sources):
                if rec.split != "train":
                    continue
                if rec.problem is not None:
                    if not skip_bad:
                        raise DataError(f"{path}:{rec.line}: {rec.problem}")
                    continue
                for u in rec.utterances:
                    counts.update(u.split())
                bar.advance()
            bar.close()
            dvocab = DialogueVocab.build(counts, min_freq=min_freq, max_size=max_size)
            del counts
        else:
            dvocab = given_vocab
        _write_json_atomic(vocab_path, dvocab.state_dict())
        state = {
            "fingerprint": fingerprint,
            "vocab_sha256": dvocab.checksum,
            "consumed": [0] * len(sources),
            "open_split": None,
            "splits": {s: _empty_split_state() for s in splits},
        }
        _write_json_atomic(progress_path, state)
    else:
        dvocab = DialogueVocab.load(vocab_path)

    # Pass 2: encode and write chunks, resuming after the last recorded chunk.
    writers = {s: ChunkWriter(out_dir / s, chunk_size, state["splits"][s]["chunks"]) for s in splits}
    bar = _Progress(progress, "writing chunks")

    def checkpoint(src: int, consumed: int) -> None:
        state["consumed"][src] = consumed
        for s in splits:
            state["splits"][s]["chunks"] = writers[s].records
        _write_json_atomic(progress_path, state)

    def close_split(split: str, src: int, consumed: int) -> None:
        writers[split].flush()
        state["splits"][split]["finished"] = True
        state["open_split"] = None
        checkpoint(src, consumed)

    encode = dvocab.encode
    for src_i, (src_path, _, _) in enumerate(sources):
        skip = state["consumed"][src_i]
        if skip < 0:
            continue  # this source was read to the end
        consumed = 0
        for consumed, rec in enumerate(READERS[sources[src_i][2]](src_path), start=1):
            if consumed <= skip:
                continue
            split = sources[src_i][1] or rec.split or "train"
            if split != state["open_split"]:
                if state["open_split"] is not None:
                    close_split(state["open_split"], src_i, consumed - 1)
                if split in writers:
                    if state["splits"][split]["finished"]:
                        raise DataError(f"{src_path}:{rec.line}: split {split!r} was already written from an earlier source")
                    state["open_split"] = split
            if split not in writers:
                continue
            counters = state["splits"][split]
            if rec.problem is not None:
                if not skip_bad:
                    raise DataError(f"{src_path}:{rec.line}: {rec.problem}")
                counters["skipped_bad"] += 1
                continue
            if not rec.utterances:
                counters["skipped_empty"] += 1
                continue
            ids = [encode(u) for u in rec.utterances]
            counters["dialogues"] += 1
            counters["utterances"] += len(ids)
            counters["tokens"] += sum(map(len, ids))
            counters["pairs"] += len(ids) - 1
            if writers[split].add(ids) is not None:
                checkpoint(src_i, consumed)
            bar.advance()
        if state["open_split"] is not None:
            close_split(state["open_split"], src_i, consumed)
        state["consumed"][src_i] = -1  # read to the end
        _write_json_atomic(progress_path, state)
    bar.close()

    manifest = {
        "format_version": FORMAT_VERSION,
        "kind": "dialogue_chunks",
        "fingerprint": fingerprint,
        "source": [{"path": str(p.resolve()), "split": s, "format": f} for p, s, f in sources],
        "chunk_size": chunk_size,
        "skip_bad": skip_bad,
        "vocab": {
            "file": "vocabulary.json",
            "kind": dvocab.kind,
            "size": dvocab.vocab_size,
            "sha256": dvocab.checksum,
            "pad_id": dvocab.pad_id,
            "sos_id": dvocab.sos_id,
            "eos_id": dvocab.eos_id,
            "unk_id": dvocab.unk_id,
            "description": dvocab.describe(),
        },
        "tokenizer": "whitespace-split tokens" + (" with WordPiece fallback" if dvocab.kind == "wordpiece" else ""),
        "splits": {},
    }
    for s in splits:
        st = state["splits"][s]
        manifest["splits"][s] = {k: st[k] for k in ("dialogues", "utterances", "tokens", "pairs", "skipped_empty", "skipped_bad")}
        manifest["splits"][s]["chunks"] = writers[s].records
    manifest["totals"] = {k: sum(manifest["splits"][s][k] for s in splits) for k in ("dialogues", "utterances", "tokens", "pairs", "skipped_empty", "skipped_bad")}
    _write_json_atomic(manifest_path, manifest)  # last: from here on the folder counts as finished
    progress_path.unlink(missing_ok=True)
    return manifest


def _empty_split_state() -> dict:
    return {"chunks": [], "dialogues": 0, "utterances": 0, "tokens": 0, "pairs": 0, "skipped_empty": 0, "skipped_bad": 0, "finished": False}


def _state_is_valid(state: dict, fingerprint: str, out_dir: Path, vocab_path: Path) -> bool:
    """An interrupted run can be continued when it is the same preparation and its chunks check out."""
    if state.get("fingerprint") != fingerprint:
        return False
    try:
        if DialogueVocab.load(vocab_path).checksum != state.get("vocab_sha256"):
            return False
    except DataError:
        return False
    for split, st in state.get("splits", {}).items():
        for rec in st.get("chunks", []):
            path = out_dir / split / rec["file"]
            if not path.is_file() or file_sha256(path) != rec["sha256"]:
                return False
    return True
