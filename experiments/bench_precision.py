"""bf16 autocast against float32, side by side in one process: training steps (forward, loss, backward, clipping,
fused AdamW) of the models the mixed-precision targets name, each timed alternately in both precisions.

    python experiments/bench_precision.py                       # all cases, 1 thread
    python experiments/bench_precision.py --cases transformer --reps 3 --profile

Cases and their targets (they apply on a CPU that computes bf16 natively, AVX512-BF16 or AMX; elsewhere bf16 is
emulated and the bench reports the ratio without judging it):
- transformer: 384 wide, 6 layers, 6 heads, sequence 256, batch 8            bf16 >= 1.6x float32
- endef: BiGRU/ENDEF with frozen BERT embeddings at the original's sizes (768-d, GRU 768, max_len 170,
  batch 64; `--endef-batch` to shrink)                                     bf16 >= 1.3x, or the op that keeps it
- explicit_lm: the tiny ExplicitLM preset, batch 4 x 128 tokens              bf16 >= 1.3x
Frozen parts are held in bf16 in the bf16 arm (as `memexp.run` does under bf16-mixed). `--profile` prints the
bf16 arm's most expensive ops (the recurrences run in float32 by design: memexp.models.autocast).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time

import torch
import torch.nn.functional as F

from memexp.runs.machine import describe, machine_line
from memexp.runs.precision import hold_frozen_in_bf16, native_bf16
from memexp.tasks.optim import OptimizerSettings, build_optimizer

TARGETS = {"transformer": 1.6, "endef": 1.3, "explicit_lm": 1.3}


def matmul_gflops(dtype: torch.dtype, n: int = 1024, reps: int = 3) -> float:
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(reps))
    return 2 * n**3 / best / 1e9


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def transformer_case():
    from memexp.models.transformer import Transformer

    torch.manual_seed(0)
    net = Transformer(vocab_size=256, dim=384, depth=6, heads=6, max_len=256)
    x = torch.randint(0, 256, (8, 257))

    def loss_of(model):
        logits, _ = model(x[:, :-1])
        return F.cross_entropy(logits.reshape(-1, 256), x[:, 1:].reshape(-1))

    return net, loss_of


def endef_case(batch: int):
    from transformers import BertConfig, BertModel

    from memexp.data.spec import DataSpec
    from memexp.models.bigru import BiGRUClassifier
    from memexp.tasks.classification import ClassificationTask

    torch.manual_seed(0)
    bert = BertModel(BertConfig(vocab_size=21128, hidden_size=768, num_hidden_layers=1, num_attention_heads=12))
    net = BiGRUClassifier(21128, embedding="bert", embeddings=bert.embeddings, hidden_size=768, mlp_dims=[384], endef=True)
    spec = DataSpec(task_kind="classification", vocab_size=21128, tokenizer=None, pad_id=0, num_classes=2)
    g = torch.Generator().manual_seed(0)
    L = 170
    mask = torch.arange(L)[None] < torch.randint(L // 2, L + 1, (batch,), generator=g)[:, None]
    data = {
        "content": torch.randint(1000, 21000, (batch, L), generator=g) * mask,
        "content_mask": mask,
        "entity": torch.randint(1000, 21000, (batch, 50), generator=g),
        "entity_mask": torch.ones(batch, 50, dtype=torch.bool),
        "label": torch.randint(0, 2, (batch,), generator=g),
    }

    def loss_of(model):
        return ClassificationTask(model, spec).training_step(data, 0)

    return net, loss_of


def explicit_case():
    from memexp.memory.backbone import build_explicit_lm

    torch.manual_seed(0)
    V = 151_669
    net = build_explicit_lm(V, pad_id=151_643, knowledge_num=1024)
    net.load_bank(torch.randint(0, V, (1024, net.memory_bank.shape[1])))
    x = torch.randint(0, V, (4, 129))

    def loss_of(model):
        model.train()
        target, position = torch.zeros(4, dtype=torch.long), torch.full((4,), 127)
        logits, _ = model(x[:, :-1], memory_target=target, memory_position=position)
        loss = F.cross_entropy(logits.reshape(-1, V), x[:, 1:].reshape(-1))
        return loss + sum(model.auxiliary_losses().values())

    return net, loss_of


def step_fn(net, loss_of, bf16: bool):
    opt = build_optimizer(net, OptimizerSettings(lr=1e-4))

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = loss_of(net)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in net.parameters() if p.grad is not None], 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def bench(name: str, make, reps: int, profile: bool) -> dict:
    net32, loss_of = make()
    net16 = copy.deepcopy(net32)
    held = hold_frozen_in_bf16(net16)
    steps = {"fp32": step_fn(net32, loss_of, False), "bf16": step_fn(net16, loss_of, True)}
    for fn in steps.values():  # warm-up
        fn()
    times = {k: [] for k in steps}
    for _ in range(reps):  # alternate, so both see the same machine
        for k, fn in steps.items():
            times[k].append(_timed(fn))
    fp32, bf16 = statistics.median(times["fp32"]), statistics.median(times["bf16"])
    row = {"case": name, "fp32_ms": fp32 * 1e3, "bf16_ms": bf16 * 1e3, "speedup": fp32 / bf16, "reps": reps, "held_in_bf16": held}
    if profile:
        from torch.profiler import profile as torch_profile

        with torch_profile() as p:
            steps["bf16"]()
        ops = sorted(p.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:8]
        total = sum(e.self_cpu_time_total for e in p.key_averages())
        row["bf16_top_ops"] = [(e.key, round(100 * e.self_cpu_time_total / total, 1)) for e in ops]
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="transformer,endef,explicit_lm")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--endef-batch", type=int, default=64)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--out", default=None, help="write the result JSON here")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    machine = describe()
    flags = native_bf16()
    machine["native_bf16"] = flags
    machine["bf16_matmul_gflops_1thread"] = round(matmul_gflops(torch.bfloat16), 1)
    print(machine_line(machine) + f"; bf16 matmul {machine['bf16_matmul_gflops_1thread']} GFLOP/s")
    print(
        f"native bf16: {', '.join(flags) if flags else 'no (bf16 is emulated here: the targets do not apply)'}; threads {a.threads}"
    )
    makers = {"transformer": transformer_case, "endef": lambda: endef_case(a.endef_batch), "explicit_lm": explicit_case}
    rows = []
    for name in a.cases.split(","):
        row = bench(name, makers[name], a.reps, a.profile)
        target = TARGETS[name]
        row["target"] = target
        row["met"] = (row["speedup"] >= target) if flags else None
        verdict = ("met" if row["met"] else "NOT met") if flags else "not judged (no native bf16)"
        print(
            f"{name:12s} fp32 {row['fp32_ms']:9.1f} ms  bf16 {row['bf16_ms']:9.1f} ms  speedup {row['speedup']:.2f}x"
            f"  (target >= {target}x: {verdict})",
            flush=True,
        )
        for op, share in row.get("bf16_top_ops", []):
            print(f"    {share:5.1f}%  {op}")
        rows.append(row)
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"machine": machine, "threads": a.threads, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
