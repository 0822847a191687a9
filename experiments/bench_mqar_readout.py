"""MQAR training step: the LM head at the answer positions only vs at every position, side by side on one CPU thread.

    python experiments/bench_mqar_readout.py [--vocab 8192 --dim 64 --depth 2 --heads 2
                                              --seq-len 64 --pairs 4 --batch 64 --rounds 5 --steps 5]

Both arms are the causal-LM task (memexp.tasks.causal_lm) on the same data=mqar batches and the same network
weights: `task.answer_readout=auto` (the head on the N labelled positions: N x V logits) against `false` (the head on
all B x T positions, masked after). The loss is the same; a step is forward + backward + AdamW. The arms are
alternated in rounds (the machine may be shared) and each round's median step is kept; the ratio of the medians
over rounds is the speed-up (target >= 5x at (64, 4), vocabulary 8192, width 64). First the CPU model and a
measured one-thread fp32 matmul peak. Results also go to outputs/bench/mqar_readout.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import torch

from memexp.data.mqar import MQARDataModule
from memexp.models.transformer import Transformer
from memexp.runs.machine import start_one_thread_bench
from memexp.tasks.causal_lm import CausalLMTask
from memexp.tasks.optim import param_groups
from memexp.tasks.settings import CausalLMSettings

REPO = Path(__file__).resolve().parents[1]


def step_seconds(task: CausalLMTask, batches: list[dict], steps: int) -> float:
    """Median seconds of `steps` training steps (loss, backward, AdamW) of `task` (one warm-up step first)."""
    opt = torch.optim.AdamW(param_groups(task.net, 0.1), lr=1e-3)
    task.train()
    times = []
    for i in range(steps + 1):
        batch = batches[i % len(batches)]
        start = time.perf_counter()
        logits, target, _ = task._scored(batch["input"], batch["target"], None, {})
        loss = task._loss(logits, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--depth", type=int, default=2)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--pairs", type=int, default=4)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=5, help="timed training steps per arm per round")
    p.add_argument("--out", type=Path, default=REPO / "outputs" / "bench" / "mqar_readout.json")
    args, info = start_one_thread_bench(p, argv)
    dm = MQARDataModule(args.vocab, args.seq_len, args.pairs, num_examples=4 * args.batch, batch_size=args.batch)
    batches = list(dm.train_dataloader())
    torch.manual_seed(0)
    net = Transformer(args.vocab, dim=args.dim, depth=args.depth, heads=args.heads, max_len=args.seq_len)
    arms = {
        readout: CausalLMTask(copy.deepcopy(net), dm.spec, settings=CausalLMSettings(carry_state=False, answer_readout=flag))
        for readout, flag in (("answers", "auto"), ("full", False))
    }
    print(
        f"transformer: {sum(q.numel() for q in net.parameters()):,} parameters; batch {args.batch} x {args.seq_len}, "
        f"{args.pairs} answers a sequence, vocabulary {args.vocab}",
        flush=True,
    )
    times: dict[str, list[float]] = {name: [] for name in arms}
    for r in range(args.rounds):
        for name, task in arms.items():
            times[name].append(step_seconds(task, batches, args.steps))
        print(f"round {r + 1}: s/step " + ", ".join(f"{n} {times[n][-1] * 1e3:.1f} ms" for n in arms), flush=True)
    med = {n: statistics.median(v) for n, v in times.items()}
    ratio = med["full"] / med["answers"]
    print(
        f"training step: answer-position readout {med['answers'] * 1e3:.1f} ms, full readout {med['full'] * 1e3:.1f} ms, "
        f"speed-up {ratio:.1f}x (target >= 5x)"
    )
    result = dict(machine=info, args={k: str(v) for k, v in vars(args).items()}, step_s=times, median_s=med, speedup=ratio)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
