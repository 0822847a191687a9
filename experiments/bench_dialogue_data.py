"""Benchmark: LCCC chunk preparation and streaming, throughput and peak memory.

    python experiments/bench_dialogue_data.py [--out outputs/bench/dialogue_data.json]

1. Preparation: the CDial-GPT toy dialogues repeated into JSON-array corpora of each
   `--prep-sizes` (written to --tmp, streamed), converted by `prepare_dialogues` (built
   vocabulary: two streaming passes). Reports dialogues/s and peak RSS; peak RSS should
   not grow with the corpus.
2. Streaming: one epoch over the chunk folders of `--stream-sizes` (default 20x apart)
   through a DataLoader with `collate_dialogues`: samples/s and peak RSS, against the
   source's design (raw-poplar/HGD-MemNet BinaryDialogueDataset: every chunk loaded at
   start and kept in a list) on the same folders.

Each measurement runs in a fresh subprocess so its peak RSS (VmHWM from /proc) is its own.
Defaults fit a 2-core shared machine in about 4 minutes: preparation 50k vs 1M dialogues;
streaming 10k vs 200k dialogues (~26k vs ~530k samples), since a full epoch over 1M
dialogues (~2.6M samples) would take minutes per design there.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from memexp.files import write_json

TOY = Path(os.environ.get("MEMEXP_DATA_DIR", "../shared/data")) / "lccc_toy" / "toy_data.json"


def rss_mb() -> dict:
    """Current and peak resident set size of this process, from /proc/self/status."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1]) / 1024
    return {"rss_mb": round(out.get("VmRSS", 0), 1), "peak_rss_mb": round(out.get("VmHWM", 0), 1)}


def write_corpus(path: Path, n: int) -> None:
    """A JSON array of n dialogues cycling through the toy data, written one dialogue at a time."""
    if path.exists() and path.with_suffix(".n").exists() and path.with_suffix(".n").read_text() == str(n):
        return
    data = json.loads(TOY.read_text(encoding="utf-8"))
    pool = data["train"] + data["valid"] + data["test"]
    with open(path, "w", encoding="utf-8") as f:
        f.write("[\n")
        for i in range(n):
            f.write(json.dumps(pool[i % len(pool)], ensure_ascii=False))
            f.write(",\n" if i < n - 1 else "\n")
        f.write("]\n")
    path.with_suffix(".n").write_text(str(n))


# ----------------------------------------------------------------------------- measured jobs (subprocess)


def job_prepare(corpus: str, out: str, chunk_size: int) -> dict:
    import torch

    torch.set_num_threads(1)
    from memexp.data.dialogue import prepare_dialogues

    base = rss_mb()
    t = time.perf_counter()
    m = prepare_dialogues(corpus, out, chunk_size=chunk_size, splits=("train",), progress=False)
    wall = time.perf_counter() - t
    n = m["splits"]["train"]["dialogues"]
    return {
        "dialogues": n,
        "chunks": len(m["splits"]["train"]["chunks"]),
        "tokens": m["splits"]["train"]["tokens"],
        "seconds": round(wall, 2),
        "dialogues_per_s": round(n / wall),
        "rss_after_imports_mb": base["rss_mb"],
        **rss_mb(),
    }


def job_stream(root: str, design: str, batch_size: int) -> dict:
    import torch
    from torch.utils.data import DataLoader

    torch.set_num_threads(1)
    from memexp.data.dialogue import DialogueStream, read_chunk

    class AllChunksInMemory(DialogueStream):
        """The source's design: every chunk loaded at start and kept in a list (same sampling otherwise)."""

        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            self.loaded = [read_chunk(path, sha) for path, sha, _, _ in self.chunks]

        def _chunk_samples(self, chunk_id, keep):
            return self.samples_from_chunk(self.loaded[chunk_id], self.chunks[chunk_id][3], keep)

    base = rss_mb()
    t = time.perf_counter()
    cls = AllChunksInMemory if design == "source_all_chunks_in_memory" else DialogueStream
    ds = cls(root, "train", max_history=8, max_context_len=256, max_reply_len=64, buffer_size=2048, seed=0)
    dataset = ds
    load_s = time.perf_counter() - t
    n = 0
    for batch in DataLoader(dataset, batch_size=batch_size, collate_fn=ds.collate_fn, num_workers=0):
        n += batch["context"].shape[0]
    wall = time.perf_counter() - t
    return {
        "design": design,
        "samples": n,
        "expected_samples": ds.num_samples,
        "chunks": len(ds.chunks),
        "startup_s": round(load_s, 2),
        "seconds": round(wall, 2),
        "samples_per_s": round(n / wall),
        "rss_after_imports_mb": base["rss_mb"],
        **rss_mb(),
    }


def run_job(*args: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    out = subprocess.run([sys.executable, __file__, "--job", *args], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="outputs/bench/dialogue_data.json")
    ap.add_argument("--tmp", default="/tmp/memexp_bench_dialogue")
    ap.add_argument("--prep-sizes", type=int, nargs="+", default=[50_000, 1_000_000])
    ap.add_argument("--stream-sizes", type=int, nargs="+", default=[10_000, 200_000])
    ap.add_argument("--chunk-size", type=int, default=10_000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--keep", action="store_true", help="keep the corpora and chunk folders in --tmp")
    ap.add_argument("--job", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if not args.job:
        from memexp.runs.machine import describe, machine_line

        print(machine_line(describe()), flush=True)
    if args.job:
        kind, *rest = args.job
        if kind == "prepare":
            result = job_prepare(rest[0], rest[1], int(rest[2]))
        else:
            result = job_stream(rest[0], rest[1], int(rest[2]))
        print(json.dumps(result))
        return

    tmp = Path(args.tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    results = {
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "args": {k: v for k, v in vars(args).items() if k != "job"},
    }
    t0 = time.perf_counter()

    results["prepare"] = []
    for n in sorted(set(args.prep_sizes) | set(args.stream_sizes)):
        corpus = tmp / f"corpus_{n}.json"
        t = time.perf_counter()
        write_corpus(corpus, n)
        write_s = time.perf_counter() - t
        out = tmp / f"chunks_{n}"
        import shutil

        shutil.rmtree(out, ignore_errors=True)
        r = run_job("prepare", str(corpus), str(out), str(args.chunk_size))
        r["corpus_mb"] = round(corpus.stat().st_size / 2**20, 1)
        r["corpus_write_s"] = round(write_s, 1)
        results["prepare"].append(r)
        print("prepare", json.dumps(r), flush=True)

    results["stream"] = []
    for n in args.stream_sizes:
        for design in ("chunk_stream", "source_all_chunks_in_memory"):
            r = run_job("stream", str(tmp / f"chunks_{n}"), design, str(args.batch_size))
            r["dialogues"] = n
            results["stream"].append(r)
            print("stream", json.dumps(r), flush=True)

    def by(rows, key, value):
        return next(r for r in rows if r[key] == value)

    small_p, large_p = (
        by(results["prepare"], "dialogues", min(args.prep_sizes)),
        by(results["prepare"], "dialogues", max(args.prep_sizes)),
    )
    summary = {
        "prepare_peak_rss_ratio_large_over_small": round(large_p["peak_rss_mb"] / small_p["peak_rss_mb"], 3),
        "prepare_dialogues_per_s_large": large_p["dialogues_per_s"],
    }
    s_small, s_large = min(args.stream_sizes), max(args.stream_sizes)
    for design in ("chunk_stream", "source_all_chunks_in_memory"):
        a = next(r for r in results["stream"] if r["design"] == design and r["dialogues"] == s_small)
        b = next(r for r in results["stream"] if r["design"] == design and r["dialogues"] == s_large)
        summary[f"{design}_peak_rss_ratio_{s_large // s_small}x_corpus"] = round(b["peak_rss_mb"] / a["peak_rss_mb"], 3)
        summary[f"{design}_samples_per_s_large"] = b["samples_per_s"]
        assert a["samples"] == a["expected_samples"] and b["samples"] == b["expected_samples"]
    summary["total_seconds"] = round(time.perf_counter() - t0, 1)
    results["summary"] = summary
    print(json.dumps(summary, indent=1))
    write_json(results, args.out, indent=1)
    if not args.keep:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
