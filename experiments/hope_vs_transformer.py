"""HOPE vs the transformer at nanoGPT's CPU budget on tiny-shakespeare (character level).

Runs `python -m memexp.run experiment=nanogpt_shakespeare` and `experiment=hope_nanogpt`
(same dim / depth / heads / ff_mult, context 64, batch 12, 2000 steps, same optimiser and
schedule, same seed) as subprocesses with the same extra overrides, then writes a JSON file
and a markdown table of their validation and test losses.

    PYTHONPATH=. MEMEXP_DATA_DIR=/path/to/data python experiments/hope_vs_transformer.py \
        --out outputs/compare/hope_vs_transformer [--jobs 2] [--threads 1] [extra overrides...]

Extra overrides go to both runs (e.g. `trainer.max_steps=200` for a smoke test); overrides
that start with `hope:` go to the HOPE run only (e.g. `hope:model.cms_frequencies=[1,2,4]`).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

RUNS = {"transformer": "nanogpt_shakespeare", "hope": "hope_nanogpt"}
QUIET = ["trainer.enable_progress_bar=false", "logger=csv", "sample_tokens=0", "fresh=true"]


def val_curve(run_dir: Path) -> list[tuple[int, float]]:
    """(step, val/loss) rows of the run's CSV log."""
    with open(run_dir / "csv" / "metrics.csv") as f:
        return [(int(r["step"]), float(r["val/loss"])) for r in csv.DictReader(f) if r.get("val/loss")]


def run_one(name: str, experiment: str, out: Path, overrides: list[str], threads: int) -> dict:
    run_dir = out / name
    cmd = [
        sys.executable,
        "-m",
        "memexp.run",
        f"experiment={experiment}",
        *QUIET,
        *overrides,
        f"paths.output_dir={out}",
        f"hydra.run.dir={run_dir}",
    ]
    env = os.environ | {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "WANDB_MODE": "offline"}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    (out / f"{name}.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode:
        raise SystemExit(f"{name} run failed (exit {proc.returncode}); see {out / f'{name}.log'}")
    result = json.loads((run_dir / "metrics.json").read_text())
    curve = val_curve(run_dir)
    m = result["metrics"]
    return {
        "experiment": experiment,
        "command": " ".join(cmd[1:]),
        "wall_s": round(wall, 1),
        "steps": int(m["global_step"]),
        "final_val_loss": m["val/loss"],
        "best_val_loss": min(v for _, v in curve),
        "test_loss": m["test/loss"],
        "test_bpc": m["test/bpc"],
        "test_acc": m["test/acc"],
        "val_curve": curve,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="outputs/compare/hope_vs_transformer")
    ap.add_argument("--jobs", type=int, default=1, help="runs at once (1: one after the other)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    both = [o for o in args.overrides if not o.startswith("hope:")]
    per_run = {"transformer": both, "hope": both + [o[5:] for o in args.overrides if o.startswith("hope:")]}
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = {n: pool.submit(run_one, n, e, out, per_run[n], args.threads) for n, e in RUNS.items()}
        results = {n: f.result() for n, f in futures.items()}

    gap = results["hope"]["final_val_loss"] - results["transformer"]["final_val_loss"]
    summary = {"results": results, "hope_minus_transformer_final_val_loss": gap, "hope_at_most_transformer": gap <= 0}
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    lines = [
        "| model | experiment | steps | final val loss | best val loss | test loss | test bpc | test acc | wall s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for n, r in results.items():
        lines.append(
            f"| {n} | {r['experiment']} | {r['steps']} | {r['final_val_loss']:.4f} | {r['best_val_loss']:.4f} | "
            f"{r['test_loss']:.4f} | {r['test_bpc']:.4f} | {r['test_acc']:.4f} | {r['wall_s']:.0f} |"
        )
    lines.append(f"\nHOPE - transformer, final val loss: {gap:+.4f} nats/char ({gap / math.log(2):+.4f} bits/char)")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
