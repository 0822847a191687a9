"""The leaderboard's side-by-side measurements, which rebuild each model from its checkpoint (so they live with
the config layer): training and generation tokens/s, timed in rounds with every model in turn on one thread,
and the memory one training step adds, in a fresh process per model (`python -m memexp.configs.board peak CKPT`).
The table itself is memexp.evals.leaderboard's."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from memexp.evals.leaderboard import train_step_seconds, training_batch
from memexp.models.sampling import Sampling


def measure_board(ckpts: dict[str, str], settings: dict) -> tuple[dict, dict]:
    """(speeds, step memory in MB) of each model's checkpoint; settings: rounds, train_steps, gen_tokens."""
    return measure_speeds(ckpts, **settings), {m: peak_rss_mb(p) for m, p in ckpts.items()}


def measure_speeds(ckpts: dict[str, str], rounds: int = 3, train_steps: int = 20, gen_tokens: int = 200) -> dict:
    """Training and generation tokens/s of each model's checkpoint, timed side by side: per round every model in
    turn, one thread. {model: {"train_tok_s": [per round], "gen_tok_s": [...]}}."""
    from memexp.configs.rebuild import load_checkpoint

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        loaded = {m: load_checkpoint(p) for m, p in ckpts.items()}
        batches = {m: training_batch(run.datamodule) for m, run in loaded.items()}
        out: dict[str, dict[str, list[float]]] = {m: {"train_tok_s": [], "gen_tok_s": []} for m in ckpts}
        for _ in range(rounds):
            for m, run in loaded.items():
                step_s = train_step_seconds(run.task, batches[m], train_steps)
                out[m]["train_tok_s"].append(batches[m]["input"].numel() / step_s)
                run.task.net.eval()
                t = time.perf_counter()
                run.task.generate([0], max_new_tokens=gen_tokens, sampling=Sampling(temperature=1.0, seed=0))
                out[m]["gen_tok_s"].append(gen_tokens / (time.perf_counter() - t))
    finally:
        torch.set_num_threads(threads)
    return out


def peak_rss_mb(ckpt: str) -> float:
    """Memory a training step adds to a fresh process that loaded `ckpt` and its data: the resident set's
    high-water mark over two steps (a warm-up, then the timed one) less the resident set before them, in MB."""
    proc = subprocess.run(
        [sys.executable, "-m", "memexp.configs.board", "peak", str(ckpt)], capture_output=True, text=True, timeout=600
    )
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("{")), None)
    if proc.returncode != 0 or line is None:
        return float("nan")
    return float(json.loads(line)["step_mb"])


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise OSError(field)


def _peak_main(ckpt: str) -> None:
    import gc

    from memexp.configs.rebuild import load_checkpoint

    torch.set_num_threads(1)
    run = load_checkpoint(ckpt)
    batch = training_batch(run.datamodule)
    gc.collect()
    try:  # Linux: reset the high-water mark to the current resident set, so the peak is the step's own
        Path("/proc/self/clear_refs").write_text("5")
        before = _status_mb("VmRSS")
    except OSError:
        before = float("nan")
    train_step_seconds(run.task, batch, 1)
    try:
        peak = _status_mb("VmHWM")
    except OSError:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"peak_rss_mb": peak, "step_mb": peak - before}))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "peak":
        _peak_main(sys.argv[2])
    else:
        raise SystemExit("usage: python -m memexp.configs.board peak CKPT")
