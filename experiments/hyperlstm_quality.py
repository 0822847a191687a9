"""Quality check of HyperLSTM on tiny-shakespeare at nanoGPT's CPU budget (plain PyTorch).

Budget: 2000 steps of batch 12 x context 64, char level. Target: val loss <= 1.75
nats/char with about 1M parameters (a plain 2-layer LSTM of 0.95M params reaches 1.759).

Data: the text split by position 90/5/5 (train/val/test), char vocabulary from the
train split (an extra <unk> id only if val/test hold unseen chars), random-offset
windows of 65 chars for training, non-overlapping fixed windows of 64 (+1) over the
whole val split for evaluation, each from a fresh state (and, reported alongside,
with the state carried from window to window).

Usage:
    PYTHONPATH=. python experiments/hyperlstm_quality.py [--hidden 352] [--steps 2000] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

import torch
import torch.nn.functional as F

from memexp.models.hyperlstm import HyperLSTM


def load_splits(path):
    text = open(path, encoding="utf-8").read()
    n = len(text)
    train, val, test = text[: int(0.9 * n)], text[int(0.9 * n) : int(0.95 * n)], text[int(0.95 * n) :]
    chars = sorted(set(train))
    stoi = {ch: i for i, ch in enumerate(chars)}
    unk = len(chars)
    needs_unk = any(ch not in stoi for ch in val + test)
    enc = lambda s: torch.tensor([stoi.get(ch, unk) for ch in s], dtype=torch.long)  # noqa: E731
    return enc(train), enc(val), enc(test), len(chars) + int(needs_unk)


@torch.no_grad()
def evaluate(model, data, T, B, carry):
    model.eval()
    n_win = (len(data) - 1) // T
    # B interleaved streams of consecutive windows, so a carried state continues its own stream
    per_stream = n_win // B
    total, count, state = 0.0, 0, None
    for k in range(per_stream):
        starts = [(s * per_stream + k) * T for s in range(B)]
        x = torch.stack([data[i : i + T] for i in starts])
        y = torch.stack([data[i + 1 : i + T + 1] for i in starts])
        logits, new_state = model(x, state if carry else None)
        state = new_state
        total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum").item()
        count += y.numel()
    model.train()
    return total / count


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--data", default=os.path.join(os.environ.get("MEMEXP_DATA_DIR", "../shared/data"), "tinyshakespeare", "input.txt")
    )
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=12)
    ap.add_argument("--context", type=int, default=64)
    ap.add_argument("--embedding", type=int, default=64)
    ap.add_argument("--hidden", type=int, default=352)
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--hyper-units", type=int, default=128)
    ap.add_argument("--hyper-embedding", type=int, default=16)
    ap.add_argument("--no-layer-norm", action="store_true")
    ap.add_argument("--recurrent-dropout-keep", type=float, default=1.0, help="< 1 turns recurrent dropout on")
    ap.add_argument("--dropout", type=float, default=0.0)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--min-lr-frac", type=float, default=0.1)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--clip", type=float, default=1.0)
    ap.add_argument("--eval-every", type=int, default=500)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--out", default="outputs/quality/hyperlstm.json")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    train, val, test, V = load_splits(args.data)
    model = HyperLSTM(
        V,
        embedding_size=args.embedding,
        hidden_size=args.hidden,
        depth=args.layers,
        hyper_num_units=args.hyper_units,
        hyper_embedding_size=args.hyper_embedding,
        use_layer_norm=not args.no_layer_norm,
        use_recurrent_dropout=args.recurrent_dropout_keep < 1.0,
        dropout_keep_prob=args.recurrent_dropout_keep,
        dropout=args.dropout,
    )
    n_params = sum(p.numel() for p in model.parameters())
    print(f"vocab {V}, train/val/test chars {len(train)}/{len(val)}/{len(test)}, params {n_params:,}", flush=True)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=args.lr
    )

    def lr_at(step):
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        p = (step - args.warmup) / max(1, args.steps - args.warmup)
        return args.lr * (args.min_lr_frac + (1 - args.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * p)))

    T, B = args.context, args.batch
    history, t0, running = [], time.time(), None
    for step in range(args.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        ix = torch.randint(len(train) - T - 1, (B,))
        x = torch.stack([train[i : i + T] for i in ix])
        y = torch.stack([train[i + 1 : i + T + 1] for i in ix])
        logits, _ = model(x)
        loss = F.cross_entropy(logits.reshape(-1, V), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        opt.step()
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if (step + 1) % 100 == 0:
            print(f"step {step + 1} train {running:.4f} lr {lr_at(step):.2e} {time.time() - t0:.0f}s", flush=True)
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            v = evaluate(model, val, T, B, carry=False)
            history.append({"step": step + 1, "val_loss": v, "train_loss_ema": running, "elapsed_s": time.time() - t0})
            print(f"step {step + 1} val {v:.4f}", flush=True)
    val_carry = evaluate(model, val, T, B, carry=True)
    result = {
        "config": vars(args),
        "params": n_params,
        "vocab": V,
        "val_loss": history[-1]["val_loss"],
        "val_loss_carried_state": val_carry,
        "target": 1.75,
        "pass": history[-1]["val_loss"] <= 1.75,
        "history": history,
        "train_seconds": time.time() - t0,
    }
    print(
        f"final val {result['val_loss']:.4f} (carried state {val_carry:.4f}), target <= 1.75: "
        f"{'PASS' if result['pass'] else 'FAIL'}; params {n_params:,}"
    )
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
