"""Differential tests: memexp's neural memory (HOPE's `HopeMemory`, which `model=titans` uses) against the public
Titans code, `titans_pytorch.NeuralMemory` 0.5.5 (pip install -e ".[reference]").

titans-pytorch is configured to compute what memexp computes (the settings below, `reference()`):
    model=SiluMLP            its memory MLP replaced by memexp's: M(x) = silu(x W1) W2 / sqrt(Hm), depth 2, no biases
                             (its MemoryMLP uses GELU, no 1/sqrt(Hm), xavier init)
    mem_model_norm_add_residual=False   no LayerNorm + residual around the MLP (its default, from TTT)
    pre_rmsnorm=False        no RMSNorm on the input of the store and the retrieve paths
    activation=L2Norm()      q, k, v projections L2-normalised (memexp normalises q, k per head; v is given unit here)
    heads=1, dim=D           one memory of width D: no retrieve gate, no head-combining Linear
    chunk_size=n, batch_size=n   each chunk's gradient at the weights the previous chunk left (without batch_size it
                             takes every chunk of a call at the call's starting weights, TTT's mini-batch)
    default_step_transform_max_lr=s D / n, init_adaptive_step_bias=b
                             its per-token loss is lr_t mean_D (M(k)-v)^2 summed over the chunk; memexp's is
                             (1/n) sum_t theta_t ||M(k)-v||^2 with theta_t = s sigmoid(b): equal when lr_t = theta_t D / n
    init_momentum_bias=logit(eta), init_decay_bias=logit(alpha)   zero gate weights: constant eta and alpha in both

Both run in float64, so agreement is to rounding: the sizes here (D = 8, Hm = 16, n = 4, three chunks) give a few
hundred flops per output, relative error ~1e-14; the tolerance is rtol = atol = 1e-10 (a real mismatch, such as one
token's gradient missing, is ~1e-2). Differences by design are pinned in the second half and listed in the fidelity
table of docs/hope.md.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

titans_pytorch = pytest.importorskip("titans_pytorch")

from memexp.models.hope_math import memory_mlp  # noqa: E402
from memexp.models.hope_memory import HopeMemory  # noqa: E402

D, HM, N, B = 8, 16, 4, 2  # head width, memory hidden width, chunk, batch
S, B_THETA, ETA, ALPHA = 0.8, 0.3, 0.7, 0.1  # surprise_scale, theta's gate bias, momentum, forgetting
TOL = dict(rtol=1e-10, atol=1e-10)


def logit(p: float) -> float:
    return math.log(p / (1 - p))


class SiluMLP(nn.Module):
    """memexp's memory MLP in titans-pytorch's parameter layout: x (..., D) @ w1 (D, Hm), silu, @ w2 (Hm, D), / sqrt(Hm)."""

    def __init__(self):
        super().__init__()
        self.w1 = nn.Parameter(torch.randn(D, HM))
        self.w2 = nn.Parameter(torch.randn(HM, D))

    def forward(self, x):
        return torch.nn.functional.silu(x @ self.w1) @ self.w2 / math.sqrt(HM)


class L2Norm(nn.Module):
    def forward(self, x):
        return torch.nn.functional.normalize(x, dim=-1)


def ours() -> HopeMemory:
    mem = HopeMemory(
        dim=D,
        heads=1,
        mem_hidden_mult=HM // D,
        base_momentum=ETA,
        base_decay=ALPHA,
        memory_capacity=0,
        top_k=1,
        error_decay=0.9,
        error_update=1,
        slot_usage_decay=0.9,
        memory_read_init=1.0,
        mem_max_step_norm=None,
    )
    with torch.no_grad():
        mem.gates.bias[0] = B_THETA
        mem.w.normal_()  # W2 at unit scale, so the test's reads and updates are not tiny
    return mem.double()


def reference(mem: HopeMemory, **kw) -> nn.Module:
    settings = dict(
        dim=D,
        chunk_size=N,
        batch_size=N,
        heads=1,
        model=SiluMLP(),
        mem_model_norm_add_residual=False,
        pre_rmsnorm=False,
        activation=L2Norm(),
        default_step_transform_max_lr=S * D / N,
        init_adaptive_step_bias=B_THETA,
        init_momentum_bias=logit(ETA),
        init_decay_bias=logit(ALPHA),
    )
    ref = titans_pytorch.NeuralMemory(**(settings | kw)).double()
    with torch.no_grad():  # memexp's [W1, W2^T] (2, Hm, D) -> titans' w1 (1, D, Hm), w2 (1, Hm, D)
        ref.memory_model_parameters[0].copy_(mem.w[0].T.unsqueeze(0))
        ref.memory_model_parameters[1].copy_(mem.w[1].unsqueeze(0))
    return ref


def inputs(ref: nn.Module, T: int, seed: int = 0):
    """x (B, T, D) and the q, k, v memexp gets from it through titans' projections."""
    torch.manual_seed(seed)
    x = torch.randn(B, T, D, dtype=torch.float64)
    q, k, v = (getattr(ref, f"to_{n}")(x) for n in ("queries", "keys", "values"))
    return x, q, k, v


def run_ours(mem: HopeMemory, x, q, k, v, state=None):
    st = mem.init_state(B, x) if state is None else state
    return mem(x, q, k, v, st, N, False, S, state is None)


def ref_weights(state) -> torch.Tensor:
    """titans' memory weights in memexp's layout (B, 2, Hm, D)."""
    w = state.weights
    return torch.stack([w["w1"].transpose(1, 2), w["w2"]], 1)


@pytest.fixture
def pair():
    torch.manual_seed(0)
    mem = ours()
    return mem, reference(mem)


# ----------------------------------------------------------------------------- equal where configured equal


def test_retrieval_with_copied_weights_agrees(pair):
    mem, ref = pair
    x, q, k, v = inputs(ref, N - 1)  # fewer tokens than a chunk: nothing written, both read the initial weights
    with torch.no_grad():
        y, _ = run_ours(mem, x, q, k, v)
        y_ref, _ = ref(x)
    torch.testing.assert_close(y, y_ref, **TOL)


def test_one_chunk_update_gives_the_same_weights_momentum_and_reads(pair):
    mem, ref = pair
    x, q, k, v = inputs(ref, N)
    with torch.no_grad():
        _, st = run_ours(mem, x, q, k, v)
        _, st_ref = ref(x)
        torch.testing.assert_close(st["w"], ref_weights(st_ref), **TOL)
        m_ref = st_ref.states[1]
        torch.testing.assert_close(st["m"], torch.stack([m_ref["w1"][0].transpose(1, 2), m_ref["w2"][0]], 1), **TOL)
        assert (st["w"] - mem.w).abs().max() > 1e-3  # the chunk did write
        # the same retrieval after the update: fresh queries through both memories' written weights
        xq, qq, _, _ = inputs(ref, N - 1, seed=1)  # one retrieval chunk (titans pads one token in front)
        y = mem.read([st], [(0, N - 1, False)], qq, None)
        y_ref = ref.retrieve_memories(xq, {k_: t.unsqueeze(1) for k_, t in st_ref.weights.items()})
    torch.testing.assert_close(y, y_ref, **TOL)


def test_three_chunks_with_momentum_and_decay_give_the_same_weights(pair):
    mem, ref = pair
    x, q, k, v = inputs(ref, 3 * N)
    with torch.no_grad():
        y, st = run_ours(mem, x, q, k, v)
        y_ref, st_ref = ref(x)
    torch.testing.assert_close(st["w"], ref_weights(st_ref), **TOL)
    # every token but the last of each chunk reads the same weights in both (the last: below)
    inner = [t for t in range(3 * N) if (t + 1) % N]
    torch.testing.assert_close(y[:, inner], y_ref[:, inner], **TOL)


# ----------------------------------------------------------------------------- differences by design


def test_read_before_write_memexp_reads_the_chunks_start_titans_pytorch_the_last_token_after_the_write(pair):
    """memexp: every token of chunk j reads W_j, the weights before the chunk. titans-pytorch 0.5.5 shifts its reads by
    one token, so a chunk's last token reads W_{j+1}, which its own (k, v) has already been written into."""
    mem, ref = pair
    x, q, k, v = inputs(ref, 2 * N)
    with torch.no_grad():
        y, _ = run_ours(mem, x, q, k, v)
        y_ref, _ = ref(x)
        _, st1 = run_ours(mem, x[:, :N], q[:, :N], k[:, :N], v[:, :N])  # W_1, after chunk 0
        w0 = mem.w.unsqueeze(0).expand(B, -1, -1, -1)
        qn = torch.nn.functional.normalize(q, dim=-1)
        last = N - 1
        before, after = (memory_mlp(w, qn[:, last : last + 1])[0][:, 0] for w in (w0, st1["w"]))
    torch.testing.assert_close(y[:, last], before, **TOL)  # memexp: the chunk's start
    torch.testing.assert_close(y_ref[:, last], after, **TOL)  # titans-pytorch: after its own write
    assert (before - after).abs().max() > 1e-3


def test_gates_memexp_averages_per_token_gates_titans_pytorch_gates_the_chunks_mean_input(pair):
    """With data-dependent gates, memexp's alpha (and eta) of a chunk is mean_t sigmoid(a . u_t + b); titans-pytorch's is
    sigmoid(a . mean_t(u_t) + b). With titans' decay bias set to logit of memexp's mean, they agree again."""
    mem, _ = pair
    torch.manual_seed(3)
    a = torch.randn(D, dtype=torch.float64)
    with torch.no_grad():
        mem.gates.weight[2] = a  # the alpha (forgetting) gate reads the input
    ref = reference(mem)
    with torch.no_grad():
        ref.to_decay_factor[0].weight.copy_(a.unsqueeze(0))
        x, q, k, v = inputs(ref, N)
        _, st = run_ours(mem, x, q, k, v)
        _, st_ref = ref(x)
        assert (st["w"] - ref_weights(st_ref)).abs().max() > 1e-6  # sigmoid of the mean != mean of the sigmoids
        alpha = torch.sigmoid(mem.gates(x)[..., 2]).mean(1)  # (B,) memexp's per-chunk forgetting, mean_t sigmoid(a.x_t + b)
        for b in range(B):  # titans with the constant decay memexp used for row b
            ref.to_decay_factor[0].weight.zero_()
            ref.to_decay_factor[0].bias.fill_(logit(float(alpha[b])))
            _, st_b = ref(x[b : b + 1])
            torch.testing.assert_close(st["w"][b : b + 1], ref_weights(st_b), **TOL)


def test_titans_pytorch_without_batch_size_takes_every_chunks_gradient_at_the_calls_start(pair):
    """titans-pytorch's default (no batch_size): all chunks of one call take their gradient at the weights the call
    started with (TTT mini-batch), so it equals memexp only for one chunk per call; memexp is sequential."""
    mem, ref = pair
    parallel = reference(mem, batch_size=None)
    x, q, k, v = inputs(ref, 2 * N)
    with torch.no_grad():
        _, st = run_ours(mem, x, q, k, v)
        _, st_seq = ref(x)
        _, st_par = parallel(x)
        w_par = torch.stack([st_par.states[0]["w1"].transpose(1, 2), st_par.states[0]["w2"]], 1)
    torch.testing.assert_close(st["w"], ref_weights(st_seq), **TOL)
    assert (st["w"] - w_par).abs().max() > 1e-4


# ----------------------------------------------------------------------------- titans-pytorch's own equivalences, on memexp


@pytest.mark.parametrize("T", [3 * N, 3 * N + 2])
def test_three_stateful_calls_and_token_by_token_equal_one_parallel_call(pair, T):
    mem, ref = pair
    x, q, k, v = inputs(ref, T)
    with torch.no_grad():
        y, st = run_ours(mem, x, q, k, v)
        cuts = [0, N - 1, 2 * N + 1, T]  # calls that start and end inside chunks
        ys, st_c = [], None
        for s, e in zip(cuts, cuts[1:]):
            o, st_c = run_ours(mem, x[:, s:e], q[:, s:e], k[:, s:e], v[:, s:e], st_c)
            ys.append(o)
        yt, st_t = [], None
        for t in range(T):
            o, st_t = run_ours(mem, x[:, t : t + 1], q[:, t : t + 1], k[:, t : t + 1], v[:, t : t + 1], st_t)
            yt.append(o)
    for got, got_st in ((torch.cat(ys, 1), st_c), (torch.cat(yt, 1), st_t)):
        torch.testing.assert_close(got, y, **TOL)
        for key in ("w", "m", "pending"):
            torch.testing.assert_close(got_st[key], st[key], **TOL)
