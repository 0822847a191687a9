"""What a benchmark ran on: the CPU's model, torch's CPU capability (the vector ISA its kernels dispatch on) and
the fp32 matmul peak measured now, on one thread, so that speeds from different machines can be read against it."""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path


def cpu_model() -> str:
    """The CPU's "model name" from /proc/cpuinfo (platform.processor() where there is none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def matmul_peak_gflops(n: int = 1024, reps: int = 5, threads: int = 1) -> float:
    """Best fp32 GFLOP/s of an n x n matmul on `threads` threads (the thread count is restored after)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(n, n), torch.randn(n, n)
        a @ b
        best = float("inf")
        for _ in range(reps):
            t = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - t)
    finally:
        torch.set_num_threads(before)
    return 2 * n**3 / best / 1e9


def describe(peak: bool = True) -> dict:
    """{"cpu", "capability", "torch", "matmul_gflops_1thread"} of this machine, now."""
    import torch

    info = {"cpu": cpu_model(), "capability": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__}
    if peak:
        info["matmul_gflops_1thread"] = round(matmul_peak_gflops(), 1)
    return info


def machine_line(info: dict) -> str:
    peak = info.get("matmul_gflops_1thread")
    return f"CPU: {info['cpu']} ({info['capability']}, torch {info['torch']})" + (
        f", fp32 matmul peak {peak} GFLOP/s on one thread" if peak is not None else ""
    )


def start_one_thread_bench(parser: argparse.ArgumentParser, argv: list[str] | None) -> tuple[argparse.Namespace, dict]:
    """A bench's start: its arguments parsed, torch on one thread (arms are timed side by side on one core), and the
    machine with its peak measured now, printed and returned (the benches relate their speeds to it)."""
    import torch

    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    info = describe(peak=True)
    print(machine_line(info), flush=True)
    return args, info


def logged_train_speed(metrics_csv: str | Path, skip: int = 10) -> float:
    """Training steps per second of a run from its CSV log (Lightning's ThroughputMonitor columns train/batches and
    train/time, validation time left out), from step `skip` to the last logged step."""
    import csv

    with open(metrics_csv) as f:
        rows = [(float(r["train/batches"]), float(r["train/time"])) for r in csv.DictReader(f) if r.get("train/time")]
    (b0, t0), (b1, t1) = next((b, s) for b, s in rows if b >= skip), rows[-1]
    return (b1 - b0) / (t1 - t0)
