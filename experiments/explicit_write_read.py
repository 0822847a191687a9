"""ExplicitLM write-then-read study: state new facts to a trained model, let dual-path inference write them
into the bank, ask about them; per update strategy, what the writes displace. Protocol:
`memexp.evals.write_read` (module docstring).

    python experiments/explicit_write_read.py --seeds 0 1 2
    python experiments/explicit_write_read.py --seeds 0 --extractor llmlingua --llmlingua-model models/llmlingua-2-bert-base-multilingual-cased-meetingbank

It reads the knowledge-study models under --knowledge-out (`experiments/explicit_knowledge.py`), training the
seeds that are missing there first (about 8 CPU-minutes each). Writes <out>/write_read.json, the table
<out>/write_read.md (also printed) and the plot <out>/write_read.png.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from explicit_knowledge import run_seed  # noqa: E402  (a sibling script)

from memexp.configs.rebuild import load_checkpoint  # noqa: E402
from memexp.evals.write_read import WRITE_READ_ROWS, write_then_read  # noqa: E402
from memexp.files import atomic_path, write_json, write_text  # noqa: E402
from memexp.memory.facts import IdentityExtractor, LLMLinguaExtractor  # noqa: E402

# (label, strategy, similarity threshold, similarity space); the token threshold 0.8 lies between a restated
# fact (6 of 7 tokens shared: 0.86) and another subject's fact of the same template (5 of 7: 0.71)
CONDITIONS = [
    ("fifo", "fifo", 0.9, "retrieval"),
    ("lru", "lru", 0.9, "retrieval"),
    ("random", "random", 0.9, "retrieval"),
    ("importance", "importance", 0.9, "retrieval"),
    ("similarity (retrieval, 0.9)", "similarity", 0.9, "retrieval"),
    ("similarity (tokens, 0.8)", "similarity", 0.8, "tokens"),
]


def checkpoint_for(seed: int, knowledge_out: Path) -> Path | None:
    """The newest ExplicitLM last.ckpt of the knowledge study of `seed` under `knowledge_out`."""
    found = None
    for path in sorted(knowledge_out.glob(f"seed{seed}/runs/**/metrics.json"), key=lambda p: p.stat().st_mtime):
        run = json.loads(path.read_text())
        if (run.get("study") or {}).get("knowledge") is not None and int(run["names"]["seed"]) == seed:
            found = Path(run["ckpt_dir"]) / "last.ckpt"
    return found if found is not None and found.is_file() else None


def mean_std(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {spread:.3f}"


def table(results: list[dict], seeds: list[int], args: argparse.Namespace) -> str:
    labels = [c[0] for c in CONDITIONS]
    lines = [
        f"# ExplicitLM write-then-read, seeds {', '.join(map(str, seeds))}, extractor {args.extractor}",
        "",
        f"{args.n_earlier} earlier and {args.n_new} new held-out facts, their entries emptied first; "
        f"stated {args.facts_per_turn} per turn through dual-path inference. Mean ± std over seeds.",
        "",
        "| measurement | " + " | ".join(labels) + " |",
        "|---|" + "---|" * len(labels),
    ]
    for name, key in WRITE_READ_ROWS:
        cells = [mean_std([float(r[key]) for r in results if r["label"] == label]) for label in labels]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Per seed, earlier facts displaced: "
        + "; ".join(
            f"{label}: " + ", ".join(str(r["earlier_displaced"]) for r in results if r["label"] == label) for label in labels
        )
        + ".",
    ]
    return "\n".join(lines) + "\n"


def plot(results: list[dict], path: Path) -> Path:
    labels = [c[0] for c in CONDITIONS]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    x = range(len(labels))
    for offset, key, colour, name in (
        (-0.2, "new_before", "#bbbbbb", "before the writes"),
        (0.2, "new_after", "#3b75af", "after"),
    ):
        vals = [[r[key] for r in results if r["label"] == lab] for lab in labels]
        a.bar([i + offset for i in x], [statistics.mean(v) for v in vals], 0.4, color=colour, label=name)
        for i, v in enumerate(vals):
            a.scatter([i + offset] * len(v), v, color="black", s=8, zorder=3)
    a.set_xticks(list(x), labels, rotation=20)
    a.set_ylim(0, 1)
    a.set_ylabel("accuracy on the new facts")
    a.set_title("new facts: before and after the dual path writes them")
    a.legend()
    vals = [[r["earlier_displaced"] for r in results if r["label"] == lab] for lab in labels]
    b.bar(list(x), [statistics.mean(v) for v in vals], 0.6, color="#c44e52")
    for i, v in enumerate(vals):
        b.scatter([i] * len(v), v, color="black", s=8, zorder=3)
    b.set_xticks(list(x), labels, rotation=20)
    b.set_ylabel("earlier facts displaced")
    b.set_title("what the new writes pushed out (dots: seeds)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--knowledge-out", type=Path, default=Path("outputs/explicit_knowledge"))
    ap.add_argument("--out", type=Path, default=Path("outputs/explicit_write_read"))
    ap.add_argument("--n-new", type=int, default=80)
    ap.add_argument("--n-earlier", type=int, default=80)
    ap.add_argument("--facts-per-turn", type=int, default=4)
    ap.add_argument("--extractor", choices=["identity", "llmlingua"], default="identity")
    ap.add_argument("--llmlingua-model", default="microsoft/llmlingua-2-bert-base-multilingual-cased-meetingbank")
    ap.add_argument("--data-dir", default=None, help="the data root the knowledge study wrote its world to (default: as saved)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    extractor = IdentityExtractor() if args.extractor == "identity" else LLMLinguaExtractor(args.llmlingua_model)
    results = []
    for seed in args.seeds:
        ckpt = checkpoint_for(seed, args.knowledge_out)
        if ckpt is None:
            print(f"seed {seed}: no knowledge-study model under {args.knowledge_out}; training one", flush=True)
            run_seed(seed, args.knowledge_out, [])
            ckpt = checkpoint_for(seed, args.knowledge_out)
        run = load_checkpoint(ckpt, data_dir=args.data_dir)
        for label, strategy, threshold, space in CONDITIONS:
            start = time.time()
            r = write_then_read(
                run.task.net,
                run.datamodule,
                strategy,
                extractor,
                n_new=args.n_new,
                n_earlier=args.n_earlier,
                facts_per_turn=args.facts_per_turn,
                seed=seed,
                similarity_threshold=threshold,
                similarity_space=space,
            )
            results.append(r | {"label": label, "checkpoint": str(ckpt)})
            print(
                f"seed {seed} {label}: new {r['new_before']:.3f} -> {r['new_after']:.3f}, earlier displaced "
                f"{r['earlier_displaced']}, {time.time() - start:.1f} s",
                flush=True,
            )
    if not results:
        sys.exit("error: no seeds")
    write_json(
        {"settings": vars(args) | {"knowledge_out": str(args.knowledge_out), "out": str(args.out)}, "results": results},
        args.out / "write_read.json",
    )
    text = table(results, args.seeds, args)
    write_text(text, args.out / "write_read.md")
    plot(results, args.out / "write_read.png")
    print(text)
    print(f"plot: {args.out / 'write_read.png'}")


if __name__ == "__main__":
    main()
