"""Recall across segments: HOPE's memory vs a transformer that sees one segment.

Each sequence is random filler with a key token k and its value v near the start, and k
again as the last token; the target is v. The gap is longer than HOPE's segment
(`seq_len`), so attention alone cannot see the pair: only the carried memory can. The
transformer gets the last `seq_len` tokens (its whole context), so it is at chance
(1 / values) by construction; training it the same way shows it stays there.

    python experiments/hope_recall_demo.py --steps 300
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from memexp.models.hope import HOPE
from memexp.models.transformer import Transformer
from memexp.runs.probes import recall_probe


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--length", type=int, default=48)
    ap.add_argument("--seq-len", type=int, default=16)
    ap.add_argument("--dim", type=int, default=32)
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--mem-write", type=int, default=4)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="outputs/bench/hope_recall.json")
    args = ap.parse_args()
    parts = (16, 8, 8)  # filler, keys, values
    vocab = sum(parts)
    torch.manual_seed(args.seed)
    common = dict(steps=args.steps, batch=args.batch, length=args.length, vocab_parts=parts, lr=args.lr, seed=args.seed)
    t0 = time.time()
    hope = HOPE(
        vocab,
        dim=args.dim,
        depth=args.depth,
        heads=2,
        ff_mult=2,
        seq_len=args.seq_len,
        max_len=args.seq_len,
        mem_write=args.mem_write,
        memory_capacity=8,
        top_k=2,
    )
    acc_hope = recall_probe(hope, window=args.length, log_every=50, **common)
    t1 = time.time()
    tf = Transformer(vocab, dim=args.dim, depth=args.depth, heads=2, ff_mult=2, max_len=args.seq_len)
    acc_tf = recall_probe(tf, window=args.seq_len, **common)
    result = {
        "hope_recall": acc_hope,
        "transformer_recall": acc_tf,
        "chance": 1 / parts[2],
        "hope_train_s": t1 - t0,
        "config": vars(args),
    }
    print(json.dumps(result, indent=2))
    from pathlib import Path

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
