"""The default run's training speed beside a busy process: all cores (what runs did before trainer.threads) against
trainer.threads=auto.

    python experiments/bench_threads.py [--steps 150] [--rounds 2] [--out outputs/bench/threads.json]

Per round, alternately, `python -m memexp.run` (the default transformer on tiny-shakespeare) for --steps steps:
quiet with every core (`trainer.threads=<cores>`), then beside one process spinning on a core (`while True: pass`)
with every core and with `trainer.threads=auto`. Loop speed in it/s comes from Lightning's ThroughputMonitor
(train/time and train/batches, validation left out, from step 10 on). Target (issue 16): beside one busy process
the default run keeps at least its fair share, half its quiet speed. Run it on a machine with nothing else
running: the quiet speed is the reference.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from memexp.runs.machine import logged_train_speed

REPO = Path(__file__).resolve().parents[1]


def loop_speed(out: Path, steps: int, threads: str, env: dict) -> tuple[float, str]:
    run_dir = out / "run"
    cmd = [sys.executable, "-m", "memexp.run", f"trainer.max_steps={steps}", f"trainer.val_check_interval={steps}",
           "trainer.limit_val_batches=2", "trainer.limit_test_batches=2", "trainer.log_every_n_steps=10", "fresh=true",
           "logger=csv", "sample_tokens=0", f"trainer.threads={threads}", f"paths.output_dir={out}",
           f"hydra.run.dir={run_dir}"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"memexp.run failed: {proc.stderr[-2000:]}")
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("threads: ")), "threads: ?")
    return logged_train_speed(run_dir / "csv" / "metrics.csv"), line


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("outputs/bench/threads.json"))
    args = ap.parse_args()
    from memexp.runs.machine import describe, machine_line

    machine = describe()
    print(machine_line(machine), flush=True)
    cores = len(os.sched_getaffinity(0))
    data = Path(os.environ.get("MEMEXP_DATA_DIR", REPO.parent / "shared" / "data")).resolve()
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"} | {"MEMEXP_DATA_DIR": str(data)}
    work = (args.out.parent / "threads-work").resolve()
    speeds: dict[str, list[float]] = {"quiet, all cores": [], "busy, all cores": [], "busy, auto": []}
    for r in range(args.rounds):
        quiet, _ = loop_speed(work / "quiet", args.steps, str(cores), env)
        speeds["quiet, all cores"].append(quiet)
        spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            busy_all, _ = loop_speed(work / "busy-all", args.steps, str(cores), env)
            busy_auto, line = loop_speed(work / "busy-auto", args.steps, "auto", env)
        finally:
            spinner.kill()
            spinner.wait()
        speeds["busy, all cores"].append(busy_all)
        speeds["busy, auto"].append(busy_auto)
        print(
            f"round {r}: quiet {quiet:.2f} it/s; beside a busy process: all cores {busy_all:.2f}, auto {busy_auto:.2f} ({line})"
        )
    med = {k: statistics.median(v) for k, v in speeds.items()}
    quiet = med["quiet, all cores"]
    for k, v in speeds.items():
        print(f"{k:18s} {med[k]:6.2f} it/s ({min(v):.2f}-{max(v):.2f}) = {med[k] / quiet:.2f} of quiet")
    share = med["busy, auto"] / quiet
    print(f"auto beside a busy process: {share:.2f} of its quiet speed (target >= 0.5: {'met' if share >= 0.5 else 'NOT met'})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"machine": machine, "cores": cores, "speeds": speeds, "medians": med, "share_auto": share}, indent=2)
    )


if __name__ == "__main__":
    main()
