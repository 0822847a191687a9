"""ExplicitLM's speed and memory targets, each measured side by side in one run.

    python experiments/bench_explicit.py [--threads 1] [--rounds 3]

1. retrieval: product keys vs scoring all N = 1,048,576 keys (materialised [N, K]), per token, same top-C;
2. peak RSS of training steps with N = 1,048,576, L = 16 and the tiny backbone (fresh processes; N = 1,024 beside it);
3. a training step of the tiny preset vs the backbone's own forward+backward at the same batch;
4. greedy generation of 256 tokens with the KV cache vs without (identical output).
Prints the CPU model, its capability and the measured fp32 matmul peak first.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

from memexp.runs.machine import describe, machine_line

VOCAB = 151_669  # the Qwen3 tokenizer's size: the tiny preset's vocabulary


def best(fn, rounds: int) -> float:
    fn()
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def bench_retrieval(rounds: int) -> dict:
    from memexp.models.product_keys import ProductKeys

    torch.manual_seed(0)
    N, K, C, tokens = 1_048_576, 128, 8, 256
    pk = ProductKeys(dim=K, knowledge_num=N, knowledge_dim=K, num_candidates=C).requires_grad_(False)
    q = torch.randn(tokens, K)
    with torch.no_grad():
        k = torch.nn.functional.normalize(pk.keys, dim=-1)  # (2, R, K/2)
        R = k.shape[1]
        full = torch.cat([k[0].repeat_interleave(R, 0), k[1].repeat(R, 1)], 1)  # (N, K): entry i*R + j
        scale = pk.log_scale.exp()

        def product():
            return pk.top(*pk.half_scores(q))

        def exhaustive():
            return (scale * torch.nn.functional.normalize(q, dim=-1) @ full.T).topk(C, dim=-1)

        (ids_p, s_p), (s_e, ids_e) = product(), exhaustive()
        same = bool(torch.equal(ids_p.sort(-1).values, ids_e.sort(-1).values)) and bool(torch.allclose(s_p, s_e, atol=1e-4))
        tp, te = best(product, rounds), best(exhaustive, rounds)
    return {
        "product_us_per_token": tp / tokens * 1e6,
        "exhaustive_us_per_token": te / tokens * 1e6,
        "speedup": te / tp,
        "same_top_c": same,
    }


def explicit(N: int = 1024, **kw):
    from memexp.memory.backbone import build_explicit_lm

    torch.manual_seed(0)
    net = build_explicit_lm(VOCAB, pad_id=151_643, knowledge_num=N, **kw)
    net.load_bank(torch.randint(0, VOCAB, (N, net.memory_bank.shape[1])))
    return net


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM: reset by exec, unlike ru_maxrss, which a child inherits)."""
    try:
        line = next(x for x in open("/proc/self/status") if x.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_child(n: int, batch: int, seq: int) -> None:
    """(in a fresh process) a few training steps with n bank entries; print peak RSS in MB, and after imports."""
    base = peak_rss_mb()
    net = explicit(N=n)
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-3)
    x = torch.randint(0, VOCAB, (batch, seq))
    net.train()
    for _ in range(3):
        logits, _ = net(x, memory_target=torch.full((batch,), 5), memory_position=torch.full((batch,), seq - 1))
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), x[:, 1:].reshape(-1))
        (loss + sum(net.auxiliary_losses().values())).backward()
        opt.step()
        opt.zero_grad()
    print(json.dumps({"peak_rss_mb": peak_rss_mb(), "after_imports_mb": base}))


def bench_step(rounds: int, batch: int = 4, seq: int = 128) -> dict:
    net = explicit()
    x = torch.randint(0, VOCAB, (batch, seq))
    y = x[:, 1:].reshape(-1)
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-3)
    backbone = net.backbone

    def memory_step():
        net.train()
        logits, _ = net(x, memory_target=torch.zeros(batch, dtype=torch.long), memory_position=torch.full((batch,), seq - 1))
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), y) + sum(net.auxiliary_losses().values())
        loss.backward()
        opt.step()
        opt.zero_grad()

    def backbone_fwd_bwd():
        net.memory_enabled = False
        backbone.requires_grad_(True)
        logits = backbone(input_ids=x).logits
        torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), y).backward()
        backbone.zero_grad(set_to_none=True)
        backbone.requires_grad_(False)
        net.memory_enabled = True

    ratios, m_times, b_times = [], [], []
    for _ in range(rounds):  # alternate, so both see the same machine
        m, b = best(memory_step, 2), best(backbone_fwd_bwd, 2)
        m_times.append(m)
        b_times.append(b)
        ratios.append(m / b)
    return {
        "batch": [batch, seq],
        "explicit_step_ms": min(m_times) * 1e3,
        "backbone_fwd_bwd_ms": min(b_times) * 1e3,
        "ratios": ratios,
    }


def bench_generate(rounds: int, new: int = 256) -> dict:
    net = explicit().eval()
    prompt = torch.randint(0, VOCAB, (1, 8))

    @torch.no_grad()
    def with_cache():
        logits, cache = net(prompt)
        out = []
        for _ in range(new):
            nxt = logits[:, -1:].argmax(-1)
            out.append(int(nxt))
            logits, cache = net(nxt, cache)
        return out

    @torch.no_grad()
    def without_cache():
        ids, out = prompt, []
        for _ in range(new):
            logits, _ = net(ids)
            nxt = logits[:, -1:].argmax(-1)
            out.append(int(nxt))
            ids = torch.cat([ids, nxt], 1)
        return out

    same = with_cache() == without_cache()
    tc, tn = best(with_cache, rounds), best(without_cache, max(1, rounds - 1))
    return {"new_tokens": new, "cache_s": tc, "no_cache_s": tn, "speedup": tn / tc, "identical_greedy_output": same}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rss-child", type=int, nargs=3, metavar=("N", "BATCH", "SEQ"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.rss_child:
        rss_child(*args.rss_child)
        return
    print(f"{machine_line(describe())}; {torch.get_num_threads()} thread(s)", flush=True)
    r = bench_retrieval(args.rounds)
    print(
        f"retrieval, N = 1,048,576: product keys {r['product_us_per_token']:.1f} us/token, all N keys "
        f"{r['exhaustive_us_per_token']:.1f} us/token: {r['speedup']:.0f}x; same top-C: {r['same_top_c']}",
        flush=True,
    )
    # The vocabulary (151,669) makes the logits the largest tensors: the same batch with N = 1,024 shows what the bank costs.
    for n, batch, seq in ((1_048_576, 4, 128), (1_024, 4, 128), (1_048_576, 1, 64)):
        cmd = [sys.executable, __file__, "--rss-child", str(n), str(batch), str(seq), "--threads", str(args.threads)]
        child = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])
        print(
            f"peak RSS, training steps, N = {n:,}, L = 16, tiny backbone, batch {batch} x {seq}: {child['peak_rss_mb']:.0f} MB "
            f"({child['after_imports_mb']:.0f} MB after imports)",
            flush=True,
        )
    s = bench_step(args.rounds)
    print(
        f"training step, tiny preset, batch {s['batch'][0]} x {s['batch'][1]}: {s['explicit_step_ms']:.0f} ms vs the backbone's "
        f"forward+backward {s['backbone_fwd_bwd_ms']:.0f} ms: ratios {', '.join(f'{x:.2f}' for x in s['ratios'])}",
        flush=True,
    )
    g = bench_generate(args.rounds)
    print(
        f"greedy generation of {g['new_tokens']} tokens: KV cache {g['cache_s']:.2f} s, without {g['no_cache_s']:.2f} s: "
        f"{g['speedup']:.1f}x; identical output: {g['identical_greedy_output']}",
        flush=True,
    )


if __name__ == "__main__":
    main()
