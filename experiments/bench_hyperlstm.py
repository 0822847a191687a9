"""Training throughput of HyperLSTM vs torch.nn.LSTM (same embedding, hidden size and head).

Measures tokens/s of a full training step (forward + backward + AdamW step) on random
char-level batches, with every model timed in interleaved rounds so that load from
other processes hits all of them alike; the reported number is the median round.
The target of issue 3 is checked here (never in timed tests):

    HyperLSTM tokens/s >= 0.5 x nn.LSTM tokens/s

Usage:
    PYTHONPATH=. python experiments/bench_hyperlstm.py [--hidden 384] [--threads 1] [--out PATH]

It first prints the CPU (/proc/cpuinfo "model name"), torch's CPU capability, a 1-thread fp32
matmul peak measured in this run (GFLOP/s, best of a few 1024^3 products) and the GEMM path the
C++ loops take (`memexp.kernels.hyperlstm_cpp.gemm_path`); the per-round ratios give the range
next to the median.

Variants timed: `lstm` (torch.nn.LSTM), `hyper_cpp` (the model's default on CPU, step_impl
"auto" -> "cpp": hand-written BPTT, loops in C++ built at first use, GEMM path chosen for the CPU),
`hyper_cpp_<path>` for every GEMM path this CPU can run (with --all-paths), `hyper_fused_script` (the
same BPTT, loops in TorchScript; the fallback), `hyper_fused` (same, loops in Python),
`hyper_python` (the fused step under plain autograd) and `naive` (the paper's equations
gate by gate, one small matmul each: what a direct port does; skip with --no-naive).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from memexp.kernels.hyperlstm_cpp import available_gemm_paths, gemm_path
from memexp.models.hyperlstm import HyperLSTM
from memexp.runs.machine import describe, machine_line

TARGET_RATIO = 0.5


class LSTMLM(nn.Module):
    """The baseline: embedding -> torch.nn.LSTM -> Linear head."""

    def __init__(self, vocab_size, embedding_size, hidden_size, num_layers):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_size)
        self.lstm = nn.LSTM(embedding_size, hidden_size, num_layers, batch_first=True)
        self.head = nn.Linear(hidden_size, vocab_size)

    def forward(self, idx, state=None):
        out, state = self.lstm(self.embedding(idx), state)
        return self.head(out), state


class NaiveHyperLSTMLM(nn.Module):
    """A direct port: per step, per gate, every hyper projection as its own small matmul.

    Shares the parameters of a HyperLSTM so it computes the same function.
    """

    def __init__(self, model: HyperLSTM):
        super().__init__()
        self.model = model

    def forward(self, idx, state=None):
        m = self.model
        x = m.embedding(idx)
        for cell in m.layers:
            x = naive_layer(cell, x)
        return m.head(x), None


def naive_layer(cell, x):
    B, T, _ = x.shape
    H, N = cell.hidden_size, cell.hyper_num_units
    h, c, hh, hc = cell.zero_state(B)
    wx, wh = cell.weight_x.chunk(4, 1), cell.weight_h.chunk(4, 1)
    hwx, hwh = cell.hyper_weight_x.chunk(4, 1), cell.hyper_weight_h.chunk(4, 1)
    zw = cell.z_weight.chunk(12, 1)
    zb = cell.z_bias.chunk(8)
    b = cell.bias.chunk(4)
    ln = cell.use_layer_norm
    outs = []
    for t in range(T):
        xt = x[:, t]
        xin = torch.cat([xt, h], 1)
        hy = []
        for k in range(4):
            a = xin @ hwx[k] + hh @ hwh[k]
            a = (
                F.layer_norm(a, (N,), cell.hyper_ln_gates_weight[k], cell.hyper_ln_gates_bias[k], 1e-3)
                if ln
                else a + cell.hyper_bias.chunk(4)[k]
            )
            hy.append(a)
        hc = hc * torch.sigmoid(hy[2] + cell.forget_bias) + torch.sigmoid(hy[0]) * torch.tanh(hy[1])
        hc_n = F.layer_norm(hc, (N,), cell.hyper_ln_cell_weight, cell.hyper_ln_cell_bias, 1e-3) if ln else hc
        hh = torch.tanh(hc_n) * torch.sigmoid(hy[3])
        gates = []
        for k in range(4):
            dx = (hh @ zw[k] + zb[k]) @ cell.d_weight[k]
            dh = (hh @ zw[4 + k] + zb[4 + k]) @ cell.d_weight[4 + k]
            beta = (hh @ zw[8 + k]) @ cell.d_weight[8 + k]
            y = dx * (xt @ wx[k]) + dh * (h @ wh[k]) + beta + b[k]
            if ln:
                y = F.layer_norm(y, (H,), cell.ln_gates_weight[k], cell.ln_gates_bias[k], 1e-3)
            gates.append(y)
        c = c * torch.sigmoid(gates[2] + cell.forget_bias) + torch.sigmoid(gates[0]) * torch.tanh(gates[1])
        c_n = F.layer_norm(c, (H,), cell.ln_cell_weight, cell.ln_cell_bias, 1e-3) if ln else c
        h = torch.tanh(c_n) * torch.sigmoid(gates[3])
        outs.append(h)
    return torch.stack(outs, 1)


def train_step_fn(model, vocab_size):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step(idx, tgt):
        logits, _ = model(idx)
        loss = F.cross_entropy(logits.reshape(-1, vocab_size), tgt.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    return step


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vocab", type=int, default=65)
    ap.add_argument("--batch", type=int, default=12)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--embedding", type=int, default=64)
    ap.add_argument("--hidden", type=int, default=352)
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--hyper-units", type=int, default=128)
    ap.add_argument("--hyper-embedding", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (median is reported)")
    ap.add_argument("--steps", type=int, default=3, help="training steps per model per round")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-naive", action="store_true", help="skip the slow direct port")
    ap.add_argument("--no-slow", action="store_true", help="skip hyper_fused and hyper_python too")
    ap.add_argument("--all-paths", action="store_true", help="also time the C++ loops with each GEMM path forced")
    ap.add_argument("--out", default="outputs/bench/hyperlstm.json")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    V, B, T = args.vocab, args.batch, args.seq
    kw = dict(
        embedding_size=args.embedding,
        hidden_size=args.hidden,
        depth=args.layers,
        hyper_num_units=args.hyper_units,
        hyper_embedding_size=args.hyper_embedding,
    )
    models = {
        "lstm": LSTMLM(V, args.embedding, args.hidden, args.layers),
    }
    if not args.no_slow:
        models["hyper_fused"] = HyperLSTM(V, step_impl="fused", **kw)
        models["hyper_python"] = HyperLSTM(V, step_impl="python", **kw)
    if not args.no_naive:
        models["naive"] = NaiveHyperLSTMLM(HyperLSTM(V, step_impl="python", **kw))
    models["hyper_fused_script"] = HyperLSTM(V, step_impl="fused_script", **kw)
    models["hyper_cpp"] = HyperLSTM(V, step_impl="cpp", **kw)
    uses_cpp = models["hyper_cpp"].layers[0]._uses_cpp(torch.zeros(1))
    path = gemm_path() if uses_cpp else "none (TorchScript fallback)"
    if args.all_paths:
        for p in available_gemm_paths():
            models[f"hyper_cpp_{p}"] = HyperLSTM(V, step_impl=f"cpp_{p}", **kw)
    machine = describe()  # CPU model, torch's capability, 1-thread fp32 matmul peak measured now
    print(machine_line(machine))
    print(f"hyper_cpp kernel path: {path} (available: {', '.join(available_gemm_paths()) or 'none'})")
    if not uses_cpp:
        print("the C++ loops did not build: hyper_cpp runs the TorchScript fallback")

    idx = torch.randint(0, V, (B, T + 1))
    x, y = idx[:, :-1], idx[:, 1:]
    steps = {name: train_step_fn(m, V) for name, m in models.items()}
    for step in steps.values():  # warm-up (TorchScript's profiling runs come first)
        for _ in range(3):
            step(x, y)

    times = {name: [] for name in models}
    for _ in range(args.rounds):
        for name, step in steps.items():
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step(x, y)
            times[name].append((time.perf_counter() - t0) / args.steps)

    tokens = B * T
    rows = {}
    base = tokens / statistics.median(times["lstm"])
    for name, ts in times.items():
        tps = tokens / statistics.median(ts)
        round_ratios = [lstm_t / t for lstm_t, t in zip(times["lstm"], ts)]  # same round, same load
        rows[name] = {
            "tokens_per_s": tps,
            "ms_per_step": 1000 * statistics.median(ts),
            "ms_per_step_range": [1000 * min(ts), 1000 * max(ts)],
            "ratio_vs_lstm": tps / base,
            "ratio_range": [min(round_ratios), max(round_ratios)],
            "params": sum(p.numel() for p in models[name].parameters()),
        }
    print(
        f"batch {B} x {T}, vocab {V}, embedding {args.embedding}, hidden {args.hidden}, layers {args.layers}, "
        f"hyper {args.hyper_units}/{args.hyper_embedding}, threads {args.threads}, median of {args.rounds} rounds"
    )
    print(f"{'model':<19}{'params':>10}{'ms/step':>10}{'(min-max)':>14}{'tok/s':>8}{'x LSTM':>8}{'(rounds)':>12}")
    for name, r in rows.items():
        lo, hi = r["ms_per_step_range"]
        rlo, rhi = r["ratio_range"]
        print(
            f"{name:<19}{r['params']:>10,}{r['ms_per_step']:>10.1f}{f'({lo:.1f}-{hi:.1f})':>14}"
            f"{r['tokens_per_s']:>8.0f}{r['ratio_vs_lstm']:>8.2f}{f'({rlo:.2f}-{rhi:.2f})':>12}"
        )
    ratio = rows["hyper_cpp"]["ratio_vs_lstm"]
    rlo, rhi = rows["hyper_cpp"]["ratio_range"]
    ok = ratio >= TARGET_RATIO
    print(
        f"target: hyper_cpp (default, path {path}) >= {TARGET_RATIO} x LSTM -> {ratio:.2f} "
        f"(rounds {rlo:.2f}-{rhi:.2f}) {'PASS' if ok else 'FAIL'}"
    )

    result = {
        "config": vars(args),
        "torch": torch.__version__,
        "machine": machine,
        "kernel_path": path,
        "results": rows,
        "target_ratio": TARGET_RATIO,
        "ratio": ratio,
        "pass": ok,
    }
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
