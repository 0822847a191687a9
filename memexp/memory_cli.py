"""python -m memexp.memory <verb> ckpt=<ExplicitLM checkpoint or bank file> [key=value ...]   (console script: memexp-memory)

An ExplicitLM's memory bank as text. The verb comes first; every other option is key=value:

    show     [start=0] [count=20]               entries decoded to text, with frozen flag, usage and source
    search   query="..." [top=5]                the entries the model's own retrieval considers for the query's
                                                last token, per memory layer, best cosine first (* = selected)
    edit     index=N text="..." out=BANK        overwrite one entry
    delete   index=N out=BANK                   empty one entry (all pad)
    add      text="..." out=BANK [strategy=lru] write a fact where the update strategy puts it (never a frozen
                                                entry; strategy: fifo, lru, random, similarity, importance)
    export   out=bank.jsonl                     every entry as a JSON line (memexp.memory.bank_jsonl)
    import   src=bank.jsonl out=BANK            write the file's entries into the bank

A write (edit, delete, add, import) goes to a new bank file `out=` (it names the checkpoint it belongs
to; open it again with ckpt=BANK), written atomically; the input file is never changed unless
inplace=true, which rewrites the bank file, or the checkpoint's bank, given as ckpt=. Frozen entries
are refused unless force=true. show and search print a table; format=json prints one JSON object a
line (for writes: one per changed entry, then {"saved": path}). A text longer than an entry's
L tokens is cut to L with a warning. data_dir: pass paths.data_dir=... when the checkpoint's data
(tokenizer, knowledge cache) is not under the default data folder. A text with a comma, a bracket or
a quote goes in quotes inside the shell's: 'text="Paris, the capital"'.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from memexp.entry import launch
from memexp.errors import ConfigError

# torch and the memory are imported inside the functions, so `--help` answers at once.
if TYPE_CHECKING:
    from omegaconf import DictConfig

    from memexp.memory.runtime import ExplicitMemory
    from memexp.memory.updates import EntryChange

VERBS = ("show", "search", "edit", "delete", "add", "export", "import")
WRITES = ("edit", "delete", "add", "import")
FORMATS = ("table", "json")


def _index(index: object) -> int:
    if index is None:
        raise ConfigError("index: this verb needs index=N (the entry to change; `show` lists them)")
    if isinstance(index, bool) or not isinstance(index, int):
        raise ConfigError(f"index={index}: expected an entry number")
    return index


def _text(text: object, field: str = "text") -> str:
    if text is None or isinstance(text, (bool, list, dict)) or str(text) == "":
        raise ConfigError(f'{field}: expected a text, as {field}="..."')
    return str(text)


def _destination(ckpt: Path, out: str | None, inplace: bool) -> Path:
    """Where a write goes: `out` (a new or an existing bank file, never the input), or the input with inplace=true."""
    if inplace:
        if out is not None:
            raise ConfigError(f"out={out} and inplace=true: choose one (inplace=true rewrites ckpt={ckpt})")
        return ckpt
    if out is None:
        raise ConfigError(f"out: a write goes to a new bank file (out=bank.pt); to rewrite ckpt={ckpt} itself pass inplace=true")
    from memexp.memory.bank_file import is_bank_file

    dest = Path(out)
    if dest.resolve() == ckpt.resolve():
        raise ConfigError(f"out={out} is the input file; pass inplace=true to overwrite it")
    if dest.exists() and not is_bank_file(dest):
        raise ConfigError(f"out={out} exists and is not a bank file; expected a new path (or a bank file to replace)")
    return dest


def _save(memory: ExplicitMemory, ckpt: Path, dest: Path) -> Path:
    from memexp.runs.checkpoints import write_bank_into_checkpoint

    if dest.resolve() == Path(memory.checkpoint):  # inplace=true on a checkpoint (not a bank file): only its bank changes
        return write_bank_into_checkpoint(dest, memory.state())
    return memory.save(dest)


def _one_line(text: str) -> str:
    return text.replace("\n", "\\n")


def entry_table(entries: list[dict]) -> str:
    """show's table: index, frozen, uses, by content, source, text."""
    rows = [f"{'index':>6}  {'frozen':6}  {'uses':>5}  {'content':7}  {'source':12}  text"]
    for e in entries:
        rows.append(
            f"{e['index']:>6}  {'yes' if e['frozen'] else '':6}  {e['uses']:>5}  {'yes' if e['by_content'] else '':7}  "
            f"{e['source']:12}  {_one_line(e['text'])}"
        )
    return "\n".join(rows)


def search_table(found: list[dict]) -> str:
    """search's table, per layer best first; `*` marks the entry the model selects at that layer."""
    rows = [f"{'layer':>5}  {'cosine':>7}  {'sel':3}  {'index':>6}  {'frozen':6}  {'source':12}  text"]
    for e in found:
        rows.append(
            f"{e['layer']:>5}  {e['cosine']:>7.4f}  {'*' if e['selected'] else '':3}  {e['index']:>6}  "
            f"{'yes' if e['frozen'] else '':6}  {e['source']:12}  {_one_line(e['text'])}"
        )
    return "\n".join(rows)


def _write(memory: ExplicitMemory, verb: str, index: object, text: object, src: str | None, force: bool) -> list[EntryChange]:
    """The verb's change to the bank in memory (nothing on disk yet)."""
    if verb == "edit":
        return [memory.edit(_index(index), _text(text), force=force)]
    if verb == "delete":
        return [memory.delete(_index(index), force=force)]
    if verb == "add":
        facts = [_text(t) for t in text] if isinstance(text, list) and text else [_text(text)]
        return memory.add(facts)
    if src is None:
        raise ConfigError("src: import needs src=bank.jsonl (a file written by export)")
    from memexp.memory.bank_jsonl import import_bank_jsonl

    return import_bank_jsonl(memory, src, force=force)


def memory_command(
    verb: str,
    ckpt: str,
    out: str | None = None,
    inplace: bool = False,
    force: bool = False,
    start: int = 0,
    count: int = 20,
    query: str | None = None,
    top: int = 5,
    index: object = None,
    text: object = None,
    src: str | None = None,
    strategy: str = "lru",
    similarity_threshold: float = 0.9,
    seed: int = 0,
    format: str = "table",
    data_dir: str | None = None,
) -> dict:
    """Run one verb on the bank of `ckpt` and print its result; returns what it printed, as data."""
    from memexp.configs.rebuild import load_memory
    from memexp.memory.bank_jsonl import export_bank_jsonl
    from memexp.memory.updates import STRATEGIES

    if verb not in VERBS:
        raise ConfigError(f"verb={verb!r}: expected one of {', '.join(VERBS)}")
    if format not in FORMATS:
        raise ConfigError(f"format={format!r}: expected one of {', '.join(FORMATS)}")
    if strategy not in STRATEGIES:
        raise ConfigError(f"strategy={strategy!r}: expected one of {', '.join(STRATEGIES)}")
    path = Path(str(ckpt))
    if verb in WRITES:
        dest = _destination(path, out, inplace)  # checked before the (slow) load
    elif verb == "export" and out is None:
        raise ConfigError("out: export needs out=bank.jsonl (the file to write)")
    elif verb == "export" and Path(out).resolve() == path.resolve():
        raise ConfigError(f"out={out} is the input file; export writes a new JSONL file")
    _, memory = load_memory(path, data_dir, strategy=strategy, similarity_threshold=similarity_threshold, seed=seed)

    if verb == "show":
        if not 0 <= start < memory.size:
            raise ConfigError(f"start={start}: the bank has entries 0..{memory.size - 1}")
        if count < 0:
            raise ConfigError(f"count={count}: must be >= 0")
        entries = memory.show(start, count)
        print("\n".join(json.dumps(e, ensure_ascii=False) for e in entries) if format == "json" else entry_table(entries))
        return {"verb": verb, "entries": entries}
    if verb == "search":
        if top < 1:
            raise ConfigError(f"top={top}: must be >= 1")
        found = memory.search(_text(query, "query"), top)
        print("\n".join(json.dumps(e, ensure_ascii=False) for e in found) if format == "json" else search_table(found))
        return {"verb": verb, "entries": found}
    if verb == "export":
        saved = export_bank_jsonl(memory, out)
        print(f"{memory.size} entries exported to {saved}")
        return {"verb": verb, "saved": str(saved)}

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        changes = _write(memory, verb, index, text, src, force)
    for w in caught:  # a text cut to L tokens: said once, on one line
        print(f"warning: {w.message}", file=sys.stderr, flush=True)
    saved = _save(memory, path, dest)
    rows = [{"index": c.index, "old": c.old, "new": memory.text(c.index)} for c in changes]
    for r in rows:
        print(json.dumps(r, ensure_ascii=False) if format == "json" else f"entry {r['index']}: {r['old']!r} -> {r['new']!r}")
    if format == "json":
        print(json.dumps({"saved": str(saved)}))
    else:
        print(f"{len(rows)} {'entry' if len(rows) == 1 else 'entries'} changed; bank saved to {saved}")
    return {"verb": verb, "changes": rows, "saved": str(saved)}


def memory(
    verb: str,
    ckpt: str,
    out: str | None,
    inplace: bool,
    force: bool,
    start: int,
    count: int,
    query: object,
    top: int,
    index: object,
    text: object,
    src: str | None,
    strategy: str,
    similarity_threshold: float,
    seed: int,
    format: str,
    paths: DictConfig,
) -> dict:
    """The Hydra task of `python -m memexp.memory` (arguments: `MemoryConfig`)."""
    text = list(text) if text is not None and not isinstance(text, (str, int, float, bool)) else text  # a ListConfig
    return memory_command(
        verb,
        ckpt,
        None if out is None else str(out),
        inplace,
        force,
        start,
        count,
        None if query is None else str(query),
        top,
        index,
        text,
        None if src is None else str(src),
        strategy,
        similarity_threshold,
        seed,
        format,
        paths.data_dir,
    )


def main() -> None:
    """The verb is the first argument (Hydra takes only key=value): it is passed on as verb=<verb>."""
    from memexp.help import answer_help

    args = sys.argv[1:]
    answer_help("memexp_memory", args[:1])  # `-h` as the verb; after a verb, launch answers it
    if not args or args[0] not in VERBS:
        got = f"{args[0]!r}" if args else "none"
        print(f"error: the first argument is the verb, one of {', '.join(VERBS)} (got {got})", file=sys.stderr, flush=True)
        raise SystemExit(2)
    sys.argv = [sys.argv[0], f"verb={args[0]}", *args[1:]]
    launch(memory, "memexp_memory", "memory")


if __name__ == "__main__":
    main()
