"""ExplicitLM's knowledge study over seeds: run `experiment=explicit_knowledge` once per seed (each a new
world and a new training stream), then one table of mean +- std over the seeds.

    python experiments/explicit_knowledge.py --seeds 0 1 2 --jobs 2        # run, then aggregate
    python experiments/explicit_knowledge.py --aggregate-only --out DIR    # aggregate runs already in DIR

Each run is `python -m memexp.run experiment=explicit_knowledge seed=S paths.output_dir=<out>/seedS` on one thread;
the table goes to <out>/knowledge_summary.md and standard output.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from memexp.files import write_text

ROWS = [
    ("held-out accuracy, full bank", lambda r: r["full_bank"]["accuracy"]),
    ("held-out accuracy, empty bank", lambda r: r["empty_bank"]["accuracy"]),
    ("held-out accuracy, backbone alone", lambda r: r["backbone_alone"]["accuracy"]),
    ("full bank - empty bank (target >= 0.2)", lambda r: r["full_minus_empty"]),
    ("hit rate on correct answers", lambda r: r["full_bank"]["hit_rate_correct"]),
    ("hit rate on wrong answers", lambda r: r["full_bank"]["hit_rate_wrong"]),
    ("edit-follow rate (target >= 0.5)", lambda r: r["edit"]["follow_rate"]),
    ("old answer after the edit", lambda r: r["edit"]["old_answer_rate"]),
    ("training subjects, full bank", lambda r: r["train_subjects_full_bank"]["accuracy"]),
]


def run_seed(seed: int, out: Path, extra: list[str]) -> float:
    # one output folder per seed: runs started in the same second would share Hydra's time-stamped folder
    cmd = [
        sys.executable,
        "-m",
        "memexp.run",
        "experiment=explicit_knowledge",
        f"seed={seed}",
        f"paths.output_dir={out}/seed{seed}",
    ]
    cmd += ["logger=csv", "trainer.enable_progress_bar=false", *extra]
    start = time.time()
    log = out / f"seed{seed}.log"
    out.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, check=True, env=os.environ | {"OMP_NUM_THREADS": "1"})
    return time.time() - start


def collect(out: Path) -> dict[int, dict]:
    """seed -> the study's result, from every run folder under <out>/seed*/runs (the newest per seed)."""
    found = {}
    for path in sorted(out.glob("seed*/runs/**/metrics.json"), key=lambda p: p.stat().st_mtime):
        run = json.loads(path.read_text())
        study = (run.get("study") or {}).get("knowledge")
        if study is not None:
            found[int(run["names"]["seed"])] = study
    return found


def table(results: dict[int, dict], walls: dict[int, float]) -> str:
    seeds = sorted(results)
    lines = [
        f"# ExplicitLM knowledge study, seeds {', '.join(map(str, seeds))}",
        "",
        "| measurement | mean ± std | " + " | ".join(f"seed {s}" for s in seeds) + " |",
        "|---|---|" + "---|" * len(seeds),
    ]
    for name, get in ROWS:
        values = [float(get(results[s])) for s in seeds]
        known = [v for v in values if v == v]  # a hit rate on no answers (none wrong, none right) is NaN: left out
        mean = statistics.mean(known) if known else float("nan")
        spread = statistics.stdev(known) if len(known) > 1 else 0.0
        left_out = f" (of {len(known)} seeds)" if len(known) < len(values) else ""
        lines.append(f"| {name} | {mean:.3f} ± {spread:.3f}{left_out} | " + " | ".join(f"{v:.3f}" for v in values) + " |")
    if walls:
        lines += [
            "",
            "Wall time per seed (one thread each): " + ", ".join(f"seed {s}: {walls[s] / 60:.1f} min" for s in sorted(walls)),
        ]
    chance = results[seeds[0]]["chance"]
    lines += ["", f"Chance: {chance:.3f} (answers are chosen among the relation's objects)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("outputs/explicit_knowledge"))
    ap.add_argument("--aggregate-only", action="store_true")
    ap.add_argument("overrides", nargs="*", help="extra memexp.run overrides for every seed")
    args = ap.parse_args()
    walls = {}
    if not args.aggregate_only:
        with ThreadPoolExecutor(args.jobs) as pool:
            walls = dict(zip(args.seeds, pool.map(lambda s: run_seed(s, args.out, args.overrides), args.seeds)))
    results = collect(args.out)
    if not results:
        sys.exit(f"error: no knowledge study results under {args.out}/seed*/runs")
    text = table(results, walls)
    write_text(text, args.out / "knowledge_summary.md")
    print(text)


if __name__ == "__main__":
    main()
