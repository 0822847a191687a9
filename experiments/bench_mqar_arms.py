"""Seconds per training step of every arm of an MQAR preset, and what its whole table costs at those step times.

    python experiments/bench_mqar_arms.py [--preset mqar_cpu] [--steps 6] [--out outputs/bench/mqar_arms.json]

Each `mqar=<model>_<width>` of the preset on each of its cells: the network the preset builds, one thread, answer-
position readout, AdamW, `--steps` timed steps after two warm-up steps (median). The table's cost is the sum over
arms and cells of steps-per-job x seconds-per-step, times the jobs each (model, width, cell) gets: one per rate of
the grid at seed 0, then two more seeds at the chosen rate. Evaluations and early stops are left out. First the CPU
model and a measured one-thread fp32 matmul peak.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra.utils import instantiate

from memexp.configs.catalog import GROUPS
from memexp.configs.mqar import MQAR_LRS, MQAR_PRESETS
from memexp.configs.search import compose_config
from memexp.data.mqar import MQARDataModule
from memexp.data.spec import IGNORE_INDEX
from memexp.runs.machine import start_one_thread_bench

REPO = Path(__file__).resolve().parents[1]


def step_seconds(arm: str, cell: str, preset: str, steps: int) -> tuple[float, int]:
    """(median seconds per training step, the preset's steps per job) of one arm on one cell."""
    cfg = compose_config("memexp_run", [f"experiment={preset}", f"mqar={arm}", f"mqar_cell={cell}"])
    d = cfg.data
    batch = int(d.batch_size)
    dm = MQARDataModule(
        int(d.vocab_size), int(d.seq_len), int(d.num_kv_pairs), num_examples=batch * (steps + 2), batch_size=batch
    )
    torch.manual_seed(0)
    net = instantiate(cfg.model)(vocab_size=int(d.vocab_size))
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    times = []
    for s, b in enumerate(dm.train_dataloader()):  # steps + 2 batches: two warm-up steps, then the timed ones
        x, y = b["input"], b["target"]
        mask = y != IGNORE_INDEX
        start = time.perf_counter()
        h, _ = net.features(x)
        loss = F.cross_entropy(net.readout(h[mask]), y[mask])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if s >= 2:
            times.append(time.perf_counter() - start)
    return statistics.median(times), int(cfg.trainer.max_steps)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(MQAR_PRESETS), default="mqar_cpu")
    p.add_argument("--steps", type=int, default=6, help="timed steps per arm and cell")
    p.add_argument(  # the mqar group's options, as the catalog lists them
        "--arms", nargs="*", choices=sorted(GROUPS["mqar"]), metavar="ARM", help="only these arms (default: the preset's)"
    )
    p.add_argument("--out", type=Path, default=REPO / "outputs" / "bench" / "mqar_arms.json")
    args, info = start_one_thread_bench(p, argv)
    params = MQAR_PRESETS[args.preset]["hydra"]["sweeper"]["params"]
    arms, cells = args.arms or params["mqar"].split(","), params["mqar_cell"].split(",")
    rows, total = [], 0.0
    for cell in cells:
        for arm in arms:
            sec, job_steps = step_seconds(arm, cell, args.preset, args.steps)
            cost = sec * job_steps * (len(MQAR_LRS) + 2)  # the grid at seed 0, then seeds 1 and 2 at the chosen rate
            total += cost
            rows.append({"cell": cell, "arm": arm, "s_per_step": sec, "job_steps": job_steps, "cpu_s": cost})
            print(f"{cell} {arm}: {sec:.3f} s/step, {cost / 3600:.2f} CPU-hours for its {len(MQAR_LRS) + 2} jobs", flush=True)
    print(f"{args.preset}: the whole table's training steps take about {total / 3600:.1f} CPU-hours on this machine")
    result = {"machine": info, "preset": args.preset, "rows": rows, "cpu_hours": total / 3600}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
