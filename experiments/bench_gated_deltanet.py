"""Gated DeltaNet vs the transformer on one CPU thread, side by side in one process.

    python experiments/bench_gated_deltanet.py [--dim 128 --depth 4 --heads 4 --seq-len 256 --batch 8
                                                --context 1024 4096 --gen-tokens 64 --rounds 3 --steps 5]

At equal dim / depth / heads / ff_mult (and the same AdamW step):
  train: seconds per training step (forward + backward + AdamW) on (batch, seq_len) windows; ratio GDN / transformer
         (target <= 1.5);
  generate: tokens per second of one-token steps after a `context`-token prime, for each context given (GDN: its
         recurrent step on the carried state, the same cost at every context; the transformer: its KV cache, which
         grows with the context, model.max_len = the largest context + gen_tokens); target GDN >= transformer at 1,024.
The two are alternated in rounds (the machine may be shared: read the ratios, each round's median is reported).
First the CPU model (/proc/cpuinfo) and a measured 1-thread fp32 matmul peak. Results also go to
outputs/bench/gated_deltanet.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from memexp.models.gated_deltanet import GatedDeltaNetLM
from memexp.models.transformer import Transformer
from memexp.runs.machine import start_one_thread_bench

REPO = Path(__file__).resolve().parents[1]
VOCAB = 65


def train_step_seconds(net: torch.nn.Module, batch: int, seq_len: int, steps: int) -> float:
    """Median seconds of `steps` training steps (one warm-up step first)."""
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    net.train()
    idx = torch.randint(0, VOCAB, (batch, seq_len + 1))
    times = []
    for i in range(steps + 1):
        start = time.perf_counter()
        logits, _ = net(idx[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, VOCAB), idx[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


@torch.no_grad()
def generate_tok_s(net: torch.nn.Module, context: int, gen_tokens: int) -> float:
    """Tokens per second of `gen_tokens` one-token greedy steps after a `context`-token prime (not timed)."""
    net.eval()
    logits, state = net(torch.randint(0, VOCAB, (1, context)))
    nxt = logits[:, -1:].argmax(-1)
    start = time.perf_counter()
    for _ in range(gen_tokens):
        logits, state = net(nxt, state)
        nxt = logits[:, -1:].argmax(-1)
    return gen_tokens / (time.perf_counter() - start)


def build(args) -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    shape = dict(dim=args.dim, depth=args.depth, heads=args.heads, ff_mult=args.ff_mult)
    return {
        "gated_deltanet": GatedDeltaNetLM(VOCAB, **shape, expand_v=args.expand_v, chunk_size=args.chunk_size),
        "transformer": Transformer(VOCAB, **shape, max_len=max(args.seq_len, max(args.context) + args.gen_tokens)),
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--ff-mult", type=int, default=4)
    p.add_argument("--expand-v", type=int, default=2, help="GDN's value width per head / key width (default 2)")
    p.add_argument("--chunk-size", type=int, default=64, help="GDN's chunk length in training")
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--context", type=int, nargs="+", default=[1024, 4096], help="prime lengths before the timed steps")
    p.add_argument("--gen-tokens", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=5, help="timed training steps per model per round")
    p.add_argument("--out", type=Path, default=REPO / "outputs" / "bench" / "gated_deltanet.json")
    args, info = start_one_thread_bench(p, argv)
    nets = build(args)
    for name, net in nets.items():
        print(f"{name}: {sum(p.numel() for p in net.parameters()):,} parameters", flush=True)
    train = {n: [] for n in nets}
    gen = {c: {n: [] for n in nets} for c in args.context}
    for r in range(args.rounds):
        for name, net in nets.items():
            train[name].append(train_step_seconds(net, args.batch, args.seq_len, args.steps))
            for c in args.context:
                gen[c][name].append(generate_tok_s(net, c, args.gen_tokens))
        gen_line = "; ".join(f"{c}: " + ", ".join(f"{n} {gen[c][n][-1]:.1f}" for n in nets) for c in args.context)
        print(f"round {r + 1}: train s/step " + ", ".join(f"{n} {train[n][-1]:.3f}" for n in nets), end="")
        print(f"; generate tok/s after {gen_line}", flush=True)
    med_train = {n: statistics.median(v) for n, v in train.items()}
    ratio = med_train["gated_deltanet"] / med_train["transformer"]
    print(
        f"train step (batch {args.batch} x {args.seq_len}): gated_deltanet {med_train['gated_deltanet']:.3f} s, "
        f"transformer {med_train['transformer']:.3f} s, ratio {ratio:.2f}x (target <= 1.5x)"
    )
    gen_ratio = {}
    for c in args.context:
        med = {n: statistics.median(v) for n, v in gen[c].items()}
        gen_ratio[c] = med["gated_deltanet"] / med["transformer"]
        target = " (target >= 1)" if c == 1024 else ""
        print(
            f"generate after {c} tokens: gated_deltanet {med['gated_deltanet']:.1f} tok/s, "
            f"transformer {med['transformer']:.1f} tok/s, GDN / transformer {gen_ratio[c]:.2f}x{target}"
        )
    result = dict(machine=info, args={k: str(v) for k, v in vars(args).items()}, train_s=train, gen_tok_s=gen)
    result |= dict(train_ratio=ratio, gen_ratio=gen_ratio)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
