"""python -m memexp.prepare data=lccc [data.source=FILE] [data.cache_dir=DIR] [data.vocab=build|vocab.txt ...]

Builds a data option's prepared cache without training (for dialogue data: the chunk
folder, vocabulary.json and manifest.json, under <data_dir>/prepared/<name>-<hash> unless
data.cache_dir is given), then prints what is in it: dialogues, pairs, tokens and skipped
records per split, the vocabulary, and the time taken and throughput. Running it again on
a finished cache only reads the manifest; an interrupted preparation continues.
Data without a preparation step (text files) is just fetched and tokenized.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from memexp.entry import launch

if TYPE_CHECKING:
    import lightning as L
    from omegaconf import DictConfig


def summary_lines(result: dict) -> list[str]:
    """Human-readable lines about one preparation (the dict `DialogueDataModule.prepare` returns)."""
    m = result["manifest"]
    lines = [f"cache: {result['cache_dir']}" + (" (already prepared)" if result["already_prepared"] else "")]
    lines.append(f"{'split':6s} {'dialogues':>10s} {'pairs':>10s} {'tokens':>12s} {'chunks':>7s} {'skipped':>8s}")
    for split, st in m["splits"].items():
        skipped = st["skipped_empty"] + st.get("skipped_single", 0) + st["skipped_bad"]
        lines.append(
            f"{split:6s} {st['dialogues']:>10,d} {st['pairs']:>10,d} {st['tokens']:>12,d} {len(st['chunks']):>7d} {skipped:>8,d}"
        )
    t = m["totals"]
    lines.append(
        f"skipped: {t['skipped_empty']:,} empty, {t.get('skipped_single', 0):,} of a single utterance (no reply), "
        f"{t['skipped_bad']:,} malformed records"
    )
    if t.get("unk_tokens"):
        lines.append(f"words outside the vocabulary (<unk>): {t['unk_tokens']:,} of {t['tokens']:,} tokens")
    lines.append(f"vocabulary: {m['vocab']['description']}")
    seconds = result["seconds"]
    if result["already_prepared"]:
        lines.append(f"checked in {seconds:.2f} s")
    else:
        rate = t["dialogues"] / seconds if seconds > 0 else float("inf")
        lines.append(f"prepared in {seconds:.2f} s ({rate:,.0f} dialogues/s, {t['tokens'] / max(seconds, 1e-9):,.0f} tokens/s)")
    return lines


def prepare(data: Callable[..., L.LightningDataModule], paths: DictConfig) -> dict:
    """The Hydra task of `python -m memexp.prepare`: `data` is the data option's partial (`PrepareConfig`)."""
    dm = data()
    if hasattr(dm, "prepare"):
        result = dm.prepare()
        for line in summary_lines(result):
            print(line)
        return result
    dm.prepare_data()
    for line in dm.summary_lines() if hasattr(dm, "summary_lines") else []:  # e.g. the news token cache
        print(line)
    spec = dm.spec
    print(f"ready: {spec.task_kind} data, vocabulary of {spec.vocab_size} tokens")
    return {"spec": spec}


def main() -> None:
    launch(prepare, "memexp_prepare", "prepare")


if __name__ == "__main__":
    main()
