"""Transformer baseline benchmark: suite overhead, FLOPs/s, and the nanoGPT quality target.

    python experiments/bench_transformer.py overhead [--rounds 3 --steps 60]
    python experiments/bench_transformer.py quality

overhead: training throughput of `memexp.run` (Lightning, the CausalLMTask, its metrics and
loggers, checkpointing off) against a plain PyTorch loop over the same model, the same batches
and the same optimiser/schedule/clipping, alternated in rounds in one process (the machine is
shared: only the ratio means something). Also the model FLOPs/s as a fraction of the fp32
matmul peak measured in the same run. Target: ratio >= 0.95.

quality: `python -m memexp.run experiment=nanogpt_shakespeare` (4 layers, 4 heads, dim 128,
context 64, batch 12, lr 1e-3, 2000 steps, no dropout); target val loss <= 1.88 nats/char.

Results go to outputs/bench/transformer_<mode>.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from memexp.runs.machine import describe, machine_line

REPO = Path(__file__).resolve().parents[1]

NANOGPT = ["experiment=nanogpt_shakespeare"]


def plain_loop(task, loader, steps: int, clip: float) -> float:
    """Seconds per step of forward + backward + clip + AdamW + schedule, batches from the same loader."""
    net = task.net
    net.train()
    opt_cfg = task.configure_optimizers()
    opt, sched = opt_cfg["optimizer"], opt_cfg["lr_scheduler"]["scheduler"]
    it = iter(loader)
    start = time.perf_counter()
    for _ in range(steps):
        try:
            batch = next(it)
        except StopIteration:
            it = iter(loader)
            batch = next(it)
        logits, _ = net(batch["input"])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch["target"].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), clip)
        opt.step()
        sched.step()
    return (time.perf_counter() - start) / steps


def suite_run(overrides: list[str], out: Path, steps: int) -> float:
    """Seconds per step of memexp.run's training loop (Lightning's Timer: on_train_start..on_train_end)."""
    from hydra_zen import instantiate
    from lightning.pytorch.callbacks import Timer

    from memexp.configs.search import compose_config
    from memexp.runs import RunNames, RunSpec, train_and_test

    cfg = compose_config(
        "memexp_run",
        [
            f"paths.output_dir={out}",
            *overrides,
            f"trainer.max_steps={steps}",
            "trainer.limit_val_batches=0",
            "trainer.limit_test_batches=1",
            "sample_tokens=0",
            "fresh=true",
            "logger=csv",
        ],
    )
    timer = Timer()
    from omegaconf import OmegaConf

    callbacks = instantiate(cfg.callbacks)
    callbacks["timer"] = timer
    callbacks["checkpoint"] = None  # the final save is outside the timed loop; no periodic saves here
    train_and_test(
        RunSpec(
            cfg=OmegaConf.to_container(cfg, resolve=True),
            names=RunNames(experiment="bench", model="transformer", data="shakespeare"),
            model=instantiate(cfg.model),
            data=instantiate(cfg.data),
            optim=instantiate(cfg.optim),
            trainer=instantiate(cfg.trainer),
            run_dir=out / "run",
            checkpoint_root=out / "ckpt",
            logger=instantiate(cfg.logger),
            callbacks=callbacks,
            fresh=True,
        )
    )
    return timer.time_elapsed("train") / steps


def overhead(args) -> dict:
    from hydra_zen import instantiate

    from memexp.configs.search import compose_config
    from memexp.runs.build import build_task

    out = REPO / "outputs" / "bench" / "transformer_overhead_runs"
    cfg = compose_config("memexp_run", [f"paths.output_dir={out}", *NANOGPT])
    dm = instantiate(cfg.data)()
    dm.setup()
    suite, plain = [], []
    for r in range(args.rounds):
        suite.append(suite_run(NANOGPT, out, args.steps))
        torch.manual_seed(r)
        task = build_task(instantiate(cfg.model), dm.spec, instantiate(cfg.optim))
        plain.append(plain_loop(task, dm.train_dataloader(), args.steps, cfg.trainer.gradient_clip_val))
        print(f"round {r}: memexp.run {suite[-1] * 1e3:.1f} ms/step, plain loop {plain[-1] * 1e3:.1f} ms/step", flush=True)
    machine = describe()
    print(machine_line(machine), flush=True)
    peak = machine["matmul_gflops_1thread"] * 1e9 * torch.get_num_threads()
    net = build_task(instantiate(cfg.model), dm.spec, instantiate(cfg.optim)).net
    tokens_per_step = cfg.data.batch_size * cfg.data.seq_len
    s, p = statistics.median(suite), statistics.median(plain)
    # Each round runs both back to back, so the per-round ratio cancels most of the machine's drift.
    ratios = [pl / su for su, pl in zip(suite, plain)]
    flops = net.num_flops_per_token(cfg.data.seq_len) * tokens_per_step / s
    return {
        "suite_ms_per_step": s * 1e3,
        "plain_ms_per_step": p * 1e3,
        "throughput_ratio_suite_over_plain": statistics.median(ratios),
        "per_round_ratios": ratios,
        "target_ratio": 0.95,
        "tokens_per_s_suite": tokens_per_step / s,
        "model_flops_per_s": flops,
        "matmul_peak_flops_per_s": peak,
        "machine": machine,
        "fraction_of_peak": flops / peak,
        "rounds": args.rounds,
        "steps_per_round": args.steps,
        "threads": torch.get_num_threads(),
    }


def quality(args) -> dict:
    out = REPO / "outputs" / "bench" / "transformer_quality_runs"
    start = time.time()
    cmd = [
        sys.executable,
        "-m",
        "memexp.run",
        *NANOGPT,
        "logger=csv",
        "trainer.enable_progress_bar=false",
        f"paths.output_dir={out}",
        "fresh=true",
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    (metrics_file,) = sorted(out.glob("runs/*/*/metrics.json"))[-1:]
    metrics = json.loads(metrics_file.read_text())["metrics"]
    return {
        "command": " ".join(cmd[1:]),
        "val_loss": metrics["val/loss"],
        "test_loss": metrics["test/loss"],
        "target_val_loss": 1.88,
        "nanogpt_val_loss": 1.886,
        "wall_s": time.time() - start,
        "metrics": metrics,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["overhead", "quality"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()
    result = overhead(args) if args.mode == "overhead" else quality(args)
    path = REPO / "outputs" / "bench" / f"transformer_{args.mode}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    for k, v in result.items():
        if k != "metrics":
            print(f"{k:36s} {v}")
    print(f"written to {path}")


if __name__ == "__main__":
    main()
