"""How fast a wrong command line is answered: a mistyped key, a wrong type and an out-of-range value, against
`--help`, from a warm install (the store's snapshot written by an earlier call: memexp.configs.snapshot).

    python experiments/bench_typo.py [--rounds 5] [--out outputs/bench/typo.json]

Each case is `python -m memexp.run <override>` as a new process, whole-process wall time; median and max over
the rounds, the cases interleaved. Target (issue 27): every bad override answered in <= 2 s (median).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

CASES = {
    "--help": ["--help"],
    "mistyped key": ["model.dimm=3"],
    "wrong type": ["model.dim=abc"],
    "out of range": ["optim.lr=-1"],
    "unknown option": ["model=hopee"],
}


def wall(args: list[str]) -> tuple[float, int, str]:
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "memexp.run", *args], capture_output=True, text=True)
    last = (out.stderr.strip().splitlines() or out.stdout.strip().splitlines() or [""])[-1]
    return time.perf_counter() - start, out.returncode, last


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path("outputs/bench/typo.json"))
    args = ap.parse_args()
    first, _, _ = wall(["model.dimm=3"])  # a cold snapshot is written here, once per install and source change
    times: dict[str, list[float]] = {k: [] for k in CASES}
    lines = {}
    for _ in range(args.rounds):
        for name, case in CASES.items():
            t, rc, last = wall(case)
            times[name].append(t)
            lines[name] = f"exit {rc}: {last[:120]}"
    result = {
        "cpu": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "first_call_s": first,
        "cases": {k: {"median_s": statistics.median(v), "max_s": max(v), "answer": lines[k]} for k, v in times.items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"first call (fills the store, writes its snapshot): {first:.2f} s")
    for k, v in result["cases"].items():
        ok = "" if k == "--help" else ("  (target <= 2 s: met)" if v["median_s"] <= 2 else "  (target <= 2 s: NOT met)")
        print(f"{k:15s} median {v['median_s']:.2f} s, max {v['max_s']:.2f} s{ok}   {v['answer']}")


if __name__ == "__main__":
    main()
