"""Prepare LCCC-format dialogues into a folder of fixed-size chunks, streaming and resumable.

The folder layout and what the manifest proves are the package's contract (see
`memexp.data.dialogue`). Conversion is deterministic, so running `prepare_dialogues` again after
an interruption checks the chunks recorded in progress.json, continues after them and ends
byte-identical to an uninterrupted run. Nothing here holds the corpus in memory: sources are read
record by record and a writer holds one chunk at a time.
"""

from __future__ import annotations

import json
import shutil
import sys
import urllib.request
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from memexp.data.dialogue.chunks import ChunkWriter
from memexp.data.dialogue.readers import LCCC_FILE, READERS, SPLITS, Record, resolve_sources
from memexp.data.dialogue.vocab import DialogueVocab
from memexp.errors import ConfigError, DataError
from memexp.files import atomic_path, file_digest, text_digest, write_json

FORMAT_VERSION = 1
LCCC_URL = "https://huggingface.co/datasets/silver/lccc/resolve/main/lccc_base_{split}.jsonl.gz"
# skipped_single: dialogues of one utterance (no history -> reply pair to learn from)
# unk_tokens: words the vocabulary lacks (<unk>); with a built vocabulary only in valid/test, with a given one anywhere
COUNTERS = ("dialogues", "utterances", "tokens", "unk_tokens", "pairs", "skipped_empty", "skipped_single", "skipped_bad")
Sources = list[tuple[Path, str | None, str]]  # (path, split or None, format), from resolve_sources


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
            try:
                with atomic_path(target) as tmp, urllib.request.urlopen(url, timeout=30) as response, open(tmp, "wb") as f:
                    shutil.copyfileobj(response, f, length=1 << 20)
            except Exception as e:  # no network, HTTP error, disk full: all fixed the same way
                raise DataError(
                    f"could not download {url} ({type(e).__name__}: {e}); download it by hand and put it at {target} "
                    f"(or pass a local LCCC file such as LCCC-base_{split}.json or toy_data.json as the source)"
                ) from None
        found[split] = target
    return found


def _fingerprint(sources: Sources, vocab_desc: dict, chunk_size: int, skip_bad: bool, splits: tuple[str, ...]) -> str:
    parts = []
    for path, split, fmt in sources:
        if not path.is_file():
            raise DataError(f"{path}: no such file (expected a JSON, JSONL or TSV dialogue file)")
        st = path.stat()
        parts.append([str(path.resolve()), split, fmt, st.st_size, st.st_mtime_ns])
    blob = {
        "v": FORMAT_VERSION,
        "sources": parts,
        "vocab": vocab_desc,
        "chunk_size": chunk_size,
        "skip_bad": skip_bad,
        "splits": list(splits),
    }
    return text_digest(json.dumps(blob, sort_keys=True))


def _write_json_atomic(path: Path, obj: dict) -> None:
    write_json(obj, path, indent=1)  # indent=1: the bytes of the folders prepared so far


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
            self.bar = Progress(
                TextColumn("{task.description}"),
                MofNCompleteColumn(),
                TextColumn("dialogues"),
                TimeElapsedColumn(),
                transient=True,
            )
            self.task = self.bar.add_task(description, total=None)
            self.bar.start()

    def advance(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.advance(self.task, n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def _count_train_tokens(sources: Sources, skip_bad: bool, progress: bool | None) -> Counter:
    """Pass 1 of a built vocabulary: token counts of the training split."""
    counts: Counter = Counter()
    bar = _Progress(progress, "counting tokens")
    for path, split, fmt in sources:
        for rec in READERS[fmt](path):
            if (split or rec.split or "train") != "train":
                continue
            if rec.problem is not None:
                if not skip_bad:
                    raise DataError(f"{path}:{rec.where}: {rec.problem}")
                continue
            for u in rec.utterances:
                counts.update(u.split())
            bar.advance()
    bar.close()
    return counts


def prepare_dialogues(
    source: str | Path | dict[str, str | Path],
    out_dir: str | Path,
    vocab: str | Path | DialogueVocab | None = None,
    min_freq: int = 1,
    max_size: int | None = None,
    chunk_size: int = 10_000,
    skip_bad: bool = False,
    splits: Iterable[str] = SPLITS,
    fmt: str | None = None,
    progress: bool | None = None,
) -> dict:
    """Convert a dialogue corpus into `out_dir` (see the package docstring); returns the manifest.

    source: a file (a {"train","valid","test"} JSON object fills those splits; any other file
        fills 'train'), a folder holding {split}.json/.jsonl/.tsv or lccc_base_{split}.jsonl.gz,
        or a dict {split: path}.
    vocab: None or "build" (count the training split: `min_freq`, `max_size` incl. specials),
        a WordPiece vocab.txt path, or a DialogueVocab.
    chunk_size: dialogues per chunk file.
    skip_bad: skip malformed records (counted in the manifest) instead of raising DataError.
    splits: which splits to write; records of other splits are read past.
    fmt: the format of every source ('json', 'jsonl', 'tsv'); None: from each file name.
    progress: show a progress line (default: when stderr is a terminal).

    Running it again on a finished folder returns the existing manifest; on an interrupted
    one it verifies the chunks already written and continues, with an identical result.
    """
    splits = tuple(splits)
    _check_settings(splits, min_freq, max_size, chunk_size)
    out_dir = Path(out_dir)
    sources = resolve_sources(source, fmt)
    for _, _, f in sources:
        if f not in READERS:
            raise ConfigError(f"fmt={f!r}: expected one of {sorted(READERS)}")
    given_vocab, vocab_desc = _vocab_choice(vocab, min_freq, max_size)
    fingerprint = _fingerprint(sources, vocab_desc, chunk_size, skip_bad, splits)

    manifest_path, progress_path, vocab_path = out_dir / "manifest.json", out_dir / "progress.json", out_dir / "vocabulary.json"
    finished = _finished_manifest(manifest_path, fingerprint)
    if finished is not None:
        return finished
    state = _resumable_state(out_dir, progress_path, vocab_path, fingerprint)
    out_dir.mkdir(parents=True, exist_ok=True)

    if state is None:
        dvocab = given_vocab
        if dvocab is None:
            dvocab = DialogueVocab.build(_count_train_tokens(sources, skip_bad, progress), min_freq=min_freq, max_size=max_size)
        state = _start_state(fingerprint, dvocab, len(sources), splits, vocab_path, progress_path)
    else:
        dvocab = DialogueVocab.load(vocab_path)

    # Pass 2: encode and write chunks, resuming after the last recorded chunk.
    writers = _write_chunks(out_dir, sources, splits, chunk_size, skip_bad, dvocab, state, progress_path, progress)

    split_states = {s: {**state["splits"][s], "chunks": writers[s].records} for s in splits}
    manifest = _manifest(fingerprint, sources, chunk_size, skip_bad, dvocab, split_states)
    _write_json_atomic(manifest_path, manifest)  # last: from here on the folder counts as finished
    progress_path.unlink(missing_ok=True)
    return manifest


def _check_settings(splits: tuple[str, ...], min_freq: int, max_size: int | None, chunk_size: int) -> None:
    for s in splits:
        if s not in SPLITS:
            raise ConfigError(f"splits: {s!r} is not one of {SPLITS}")
    if min_freq < 1:
        raise ConfigError(f"data.min_freq={min_freq} must be >= 1")
    if max_size is not None and max_size < 5:
        raise ConfigError(f"data.max_size={max_size} must leave room for the 4 special tokens and at least one word")
    if chunk_size < 1:
        raise ConfigError(f"data.chunk_size={chunk_size} must be a positive number of dialogues per chunk")


def _vocab_choice(
    vocab: str | Path | DialogueVocab | None, min_freq: int, max_size: int | None
) -> tuple[DialogueVocab | None, dict]:
    """The given vocabulary (None: build one from the training split) and its description for the fingerprint."""
    if isinstance(vocab, DialogueVocab):
        return vocab, {"given": vocab.checksum}
    if vocab is None or vocab == "build":
        return None, {"build": True, "min_freq": min_freq, "max_size": max_size}
    return DialogueVocab.from_wordpiece_file(vocab), {"wordpiece": file_digest(vocab)}


def _finished_manifest(manifest_path: Path, fingerprint: str) -> dict | None:
    """The manifest of a folder already finished by this preparation; a different one's is removed."""
    if not manifest_path.exists():
        return None
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        manifest = {}
    if manifest.get("fingerprint") == fingerprint:
        return manifest
    manifest_path.unlink()  # a different preparation: this folder is no longer finished
    return None


def _resumable_state(out_dir: Path, progress_path: Path, vocab_path: Path, fingerprint: str) -> dict | None:
    """The progress of an interrupted run of this preparation, or None after clearing what an earlier one left."""
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
            for p in (out_dir / split).glob("*.tmp"):  # a chunk cut off while being written
                p.unlink()
    return state


def _start_state(
    fingerprint: str, dvocab: DialogueVocab, n_sources: int, splits: tuple[str, ...], vocab_path: Path, progress_path: Path
) -> dict:
    """A fresh preparation: its vocabulary and its empty progress, both written."""
    _write_json_atomic(vocab_path, dvocab.state_dict())
    state = {
        "fingerprint": fingerprint,
        "vocab_sha256": dvocab.checksum,
        "consumed": [0] * n_sources,
        "open_split": None,
        "splits": {s: _empty_split_state() for s in splits},
    }
    _write_json_atomic(progress_path, state)
    return state


def _write_chunks(
    out_dir: Path,
    sources: Sources,
    splits: tuple[str, ...],
    chunk_size: int,
    skip_bad: bool,
    dvocab: DialogueVocab,
    state: dict,
    progress_path: Path,
    progress: bool | None,
) -> dict[str, ChunkWriter]:
    """Pass 2: encode the dialogues and write the chunks, recording in progress.json after each chunk; the writers."""
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

    for src_i, (src_path, src_split, src_fmt) in enumerate(sources):
        skip = state["consumed"][src_i]
        if skip < 0:
            continue  # this source was read to the end
        consumed = 0
        for consumed, rec in enumerate(READERS[src_fmt](src_path), start=1):
            if consumed <= skip:
                continue
            split = src_split or rec.split or "train"
            if split != state["open_split"]:
                if state["open_split"] is not None:
                    close_split(state["open_split"], src_i, consumed - 1)
                if split in writers:
                    if state["splits"][split]["finished"]:
                        raise DataError(f"{src_path}:{rec.line}: split {split!r} was already written from an earlier source")
                    state["open_split"] = split
            if split not in writers:
                continue
            ids = _encode(rec, state["splits"][split], dvocab, skip_bad, src_path)
            if ids is None:
                continue
            if writers[split].add(ids) is not None:
                checkpoint(src_i, consumed)
            bar.advance()
        if state["open_split"] is not None:
            close_split(state["open_split"], src_i, consumed)
        state["consumed"][src_i] = -1  # read to the end
        _write_json_atomic(progress_path, state)
    bar.close()
    return writers


def _encode(rec: Record, counters: dict, dvocab: DialogueVocab, skip_bad: bool, src_path: Path) -> list[list[int]] | None:
    """The record's utterances as ids, counted in its split's `counters`; None when it is skipped (bad, empty, one utterance)."""
    if rec.problem is not None:
        if not skip_bad:
            raise DataError(f"{src_path}:{rec.where}: {rec.problem}")
        counters["skipped_bad"] += 1
        return None
    if not rec.utterances:
        counters["skipped_empty"] += 1
        return None
    if len(rec.utterances) == 1:
        counters["skipped_single"] = counters.get("skipped_single", 0) + 1  # .get: a preparation begun before
        return None
    ids = [dvocab.encode(u) for u in rec.utterances]
    counters["dialogues"] += 1
    counters["utterances"] += len(ids)
    counters["tokens"] += sum(map(len, ids))
    counters["unk_tokens"] = counters.get("unk_tokens", 0) + sum(u.count(dvocab.unk_id) for u in ids)
    counters["pairs"] += len(ids) - 1
    return ids


def _manifest(
    fingerprint: str, sources: Sources, chunk_size: int, skip_bad: bool, dvocab: DialogueVocab, split_states: dict[str, dict]
) -> dict:
    """What a finished folder proves: its source, vocabulary, chunks (with sha256) and counts."""
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
    for s, st in split_states.items():
        manifest["splits"][s] = {k: st.get(k, 0) for k in COUNTERS}
        manifest["splits"][s]["chunks"] = st["chunks"]
    manifest["totals"] = {k: sum(manifest["splits"][s][k] for s in split_states) for k in COUNTERS}
    return manifest


def _empty_split_state() -> dict:
    return {"chunks": [], **{k: 0 for k in COUNTERS}, "finished": False}


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
            if not path.is_file() or file_digest(path) != rec["sha256"]:
                return False
    return True
