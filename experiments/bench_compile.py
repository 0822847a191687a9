"""task.compile on every board model: a training step eager against torch.compile'd, and the compile's cost.

    python experiments/bench_compile.py [--steps 20] [--rounds 3] [--out outputs/bench/compile.json]

Each model of the leaderboard (memexp.configs.groups.BOARD_ENTRIES: its sizes, batch 12 x 64, vocabulary 65) is
built twice from one seed: eager, and compiled in place (`nn.Module.compile()`, what task.compile=true does).
The compiled one is warmed up first (its compile time is reported; its first loss is compared with the eager
one's from the same weights: they should agree within 1e-4), then per round both time --steps training steps
(forward, loss, backward, fused AdamW) alternately on one thread; the median round is reported. Models whose forward torch.compile cannot capture
whole (HyperLSTM's C++ loops, HOPE's inner autograd) run in pieces; the speed says what that is worth.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from memexp.configs.groups import BOARD_ENTRIES
from memexp.models.hope import HOPE
from memexp.models.hyperlstm import HyperLSTM
from memexp.models.lstm import LSTMLM
from memexp.models.transformer import Transformer
from memexp.runs.machine import describe, machine_line

CLASSES = {"transformer": Transformer, "hope": HOPE, "hyperlstm": HyperLSTM, "lstm": LSTMLM}


def step_time(net: torch.nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]], steps: int) -> tuple[float, float]:
    """(seconds per step, the first step's loss) of `steps` training steps."""
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4, fused=True)
    first = None
    t = time.perf_counter()
    for i in range(steps):
        x, y = batches[i % len(batches)]
        logits, _ = net(x, None)
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        first = loss.item() if first is None else first
    return (time.perf_counter() - t) / steps, first


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--models", nargs="+", default=list(CLASSES))
    ap.add_argument("--out", type=Path, default=Path("outputs/bench/compile.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    machine = describe()
    print(machine_line(machine), flush=True)
    g = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(4):
        ids = torch.randint(0, 65, (12, 65), generator=g)
        batches.append((ids[:, :-1], ids[:, 1:]))
    results = {}
    for name in args.models:
        torch.manual_seed(0)
        eager = CLASSES[name](vocab_size=65, **BOARD_ENTRIES[name]["model"])
        compiled = copy.deepcopy(eager)  # the same initial weights
        compiled.compile()
        t = time.perf_counter()
        _, compiled_loss = step_time(compiled, batches, 2)  # the compile (forward and backward graphs)
        compile_s = time.perf_counter() - t
        _, eager_loss = step_time(eager, batches, 2)
        losses = {"eager": eager_loss, "compiled": compiled_loss}
        rows = {"eager": [], "compiled": []}
        for _ in range(args.rounds):  # both go on training; only the time is compared
            for label, net in (("eager", eager), ("compiled", compiled)):
                rows[label].append(step_time(net, batches, args.steps)[0] * 1e3)
        e, c = statistics.median(rows["eager"]), statistics.median(rows["compiled"])
        results[name] = {"eager_ms": rows["eager"], "compiled_ms": rows["compiled"], "compile_s": compile_s, "losses": losses}
        print(
            f"{name:12s} eager {e:7.1f} ms/step, compiled {c:7.1f} ms/step: {e / c:.2f}x "
            f"(compile {compile_s:.0f} s; first-step loss {losses['eager']:.5f} vs {losses['compiled']:.5f})",
            flush=True,
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine, "results": results}, indent=2))


if __name__ == "__main__":
    main()
