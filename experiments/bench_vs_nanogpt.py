"""memexp's transformer against nanoGPT's `train.py` at nanoGPT's README CPU command, run alternately.

    python experiments/bench_vs_nanogpt.py --nanogpt PATH [--iters 400] [--rounds 2] [--threads 1] [--no-compile]

PATH is a checkout of https://github.com/karpathy/nanoGPT (nothing is fetched: its data/shakespeare_char/input.txt
is copied from $MEMEXP_DATA_DIR/tinyshakespeare/input.txt when missing, and its prepare.py run once). Both train a
4-layer, 4-head, 128-wide character transformer, context 64, batch 12, fp32 on the CPU, with the same thread
count, for --iters iterations, and evaluate equally: nanoGPT at iterations 0, iters/2 and iters on 20 training and
20 validation batches (eval_iters=20); memexp validates at iters/2 and iters on 40 batches of 12 and tests on 40.

Printed per variant (median over rounds, with the range):
- loop it/s: nanoGPT from its per-iteration times (log_interval=1), iterations that evaluated or saved left out,
  the first 10 too; memexp from Lightning's ThroughputMonitor (train/time and train/batches, validation time left
  out), from step 10 on;
- whole-run wall: the process, start to exit.
Variants: nanogpt (compile=False), memexp (eager), memexp-compile (task.compile=true; --no-compile skips it).
Targets (issue 16): memexp loop >= 1.0x nanoGPT's, memexp-compile loop >= 1.2x, memexp whole run <= 1.1x
nanoGPT's wall. Results: outputs/bench/vs_nanogpt.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from memexp.runs.machine import logged_train_speed

REPO = Path(__file__).resolve().parents[1]
ITER_LINE = re.compile(r"^iter (\d+): loss [\d.]+, time ([\d.]+)ms")


def prepare_nanogpt(root: Path, data: Path, env: dict) -> None:
    folder = root / "data" / "shakespeare_char"
    if not (root / "train.py").is_file() or not (folder / "prepare.py").is_file():
        raise SystemExit(f"error: --nanogpt {root}: expected a nanoGPT checkout (train.py, data/shakespeare_char/prepare.py)")
    if not (folder / "input.txt").exists():
        shutil.copyfile(data / "tinyshakespeare" / "input.txt", folder / "input.txt")
    if not (folder / "train.bin").exists():
        subprocess.run([sys.executable, "prepare.py"], cwd=folder, env=env, check=True, capture_output=True)


def nanogpt_run(root: Path, out: Path, iters: int, env: dict) -> tuple[float, float]:
    """(loop it/s, whole-run wall seconds)."""
    every = iters // 2
    cmd = [sys.executable, "train.py", "config/train_shakespeare_char.py", "--device=cpu", "--compile=False",
           "--eval_iters=20", "--log_interval=1", "--block_size=64", "--batch_size=12", "--n_layer=4", "--n_head=4",
           "--n_embd=128", f"--max_iters={iters}", f"--lr_decay_iters={iters}", "--dropout=0.0",
           f"--eval_interval={every}", f"--out_dir={out}"]  # fmt: skip
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"nanoGPT failed: {proc.stderr[-2000:]}")
    times = {int(m[1]): float(m[2]) for m in map(ITER_LINE.match, proc.stdout.splitlines()) if m}
    loop = [ms for i, ms in times.items() if i > 10 and i % every != 0]  # the evaluating iterations' times hold the eval
    return len(loop) / (sum(loop) / 1000), wall


def memexp_run(out: Path, iters: int, threads: int, env: dict, compile_net: bool) -> tuple[float, float]:
    every = iters // 2
    run_dir = out / "run"
    cmd = [sys.executable, "-m", "memexp.run", "experiment=nanogpt_shakespeare", f"trainer.max_steps={iters}",
           f"trainer.val_check_interval={every}", "data.eval_batch_size=12", "trainer.limit_val_batches=40",
           "trainer.limit_test_batches=40", "fresh=true", "logger=csv", "sample_tokens=0", f"trainer.threads={threads}",
           "trainer.log_every_n_steps=10", f"task.compile={str(compile_net).lower()}", f"paths.output_dir={out}",
           f"hydra.run.dir={run_dir}"]  # fmt: skip
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"memexp.run failed: {proc.stderr[-2000:]}")
    return logged_train_speed(run_dir / "csv" / "metrics.csv"), wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nanogpt", type=Path, required=True, help="a nanoGPT checkout")
    ap.add_argument("--iters", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-compile", action="store_true", help="skip memexp with task.compile=true")
    ap.add_argument("--out", type=Path, default=Path("outputs/bench/vs_nanogpt.json"))
    args = ap.parse_args()
    from memexp.runs.machine import describe, machine_line

    data = Path(os.environ.get("MEMEXP_DATA_DIR", REPO.parent / "shared" / "data")).resolve()
    env = os.environ | {"OMP_NUM_THREADS": str(args.threads), "MEMEXP_DATA_DIR": str(data), "PYTHONPATH": str(REPO)}
    nanogpt = args.nanogpt.resolve()
    prepare_nanogpt(nanogpt, data, env)
    work = (args.out.parent / "vs-nanogpt-work").resolve()
    machine = describe()
    print(f"{machine_line(machine)}; {args.threads} thread(s), load {os.getloadavg()[0]:.2f}", flush=True)
    variants = {"nanogpt": lambda: nanogpt_run(nanogpt, work / "nanogpt", args.iters, env)}
    variants["memexp"] = lambda: memexp_run(work / "memexp", args.iters, args.threads, env, False)
    if not args.no_compile:
        variants["memexp-compile"] = lambda: memexp_run(work / "memexp-compile", args.iters, args.threads, env, True)
    results: dict[str, dict[str, list[float]]] = {k: {"loop_it_s": [], "wall_s": []} for k in variants}
    for r in range(args.rounds):
        for name, fn in variants.items():
            loop, wall = fn()
            results[name]["loop_it_s"].append(loop)
            results[name]["wall_s"].append(wall)
            print(f"round {r} {name:15s} loop {loop:6.2f} it/s, whole run {wall:6.1f} s", flush=True)
    med = {k: {m: statistics.median(v) for m, v in d.items()} for k, d in results.items()}
    base = med["nanogpt"]
    summary = {
        "loop_ratio_eager": med["memexp"]["loop_it_s"] / base["loop_it_s"],
        "wall_ratio_eager": med["memexp"]["wall_s"] / base["wall_s"],
    }
    if "memexp-compile" in med:
        summary["loop_ratio_compile"] = med["memexp-compile"]["loop_it_s"] / base["loop_it_s"]
    print()
    for name, d in results.items():
        loop, wall = d["loop_it_s"], d["wall_s"]
        print(
            f"{name:15s} loop {statistics.median(loop):6.2f} it/s ({min(loop):.2f}-{max(loop):.2f}), "
            f"whole run {statistics.median(wall):6.1f} s ({min(wall):.1f}-{max(wall):.1f})"
        )
    checks = [
        ("memexp loop / nanoGPT loop", summary["loop_ratio_eager"], ">=", 1.0),
        ("memexp whole run / nanoGPT whole run", summary["wall_ratio_eager"], "<=", 1.1),
    ]
    if "loop_ratio_compile" in summary:
        checks.append(("memexp compiled loop / nanoGPT loop", summary["loop_ratio_compile"], ">=", 1.2))
    for label, value, op, target in checks:
        ok = value >= target if op == ">=" else value <= target
        print(f"{label}: {value:.2f} (target {op} {target}: {'met' if ok else 'NOT met'})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine, "threads": args.threads, "runs": results, **summary}, indent=2))


if __name__ == "__main__":
    main()
