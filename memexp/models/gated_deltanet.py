"""Gated DeltaNet (Yang, Kautz, Hatamizadeh, "Gated Delta Networks: Improving Mamba2 with Delta Rule", ICLR 2025)
as a causal LM in pure PyTorch: a linear-attention recurrence whose state is decayed (Mamba-2's gate) and
corrected (the delta rule) at every token, trained in chunks (the WY / UT form) and generated step by step.

Shape legend: B batch, T time, H heads, K key width per head (dim // heads), Dv value width per head
(expand_v * K), C model width (`dim`), N chunks, L chunk length, V vocabulary.

The recurrence (row convention, S (K, Dv) per head):

    S_t = exp(g_t) (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T        o_t = S_t^T q_t

The core functions take q as it is (no scaling inside): the layer L2-normalises q and k and scales q by K^-0.5
before calling them. docs/gated_deltanet.md has the choices and the fidelity table.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from memexp.errors import ConfigError, require_positive_ints
from memexp.models.autocast import at_least_float32, autocast_off

# per layer: (S (B, H, K, Dv), the conv cache: the last conv_size - 1 pre-conv inputs of q, k and v side by side,
# (B, conv_size - 1, 2 H K + H Dv), channels in the order q, k, v)
LayerState = tuple[Tensor, Tensor]
GDNState = list[LayerState]


def gated_delta_rule_recurrent(
    q: Tensor, k: Tensor, v: Tensor, g: Tensor, beta: Tensor, state: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """The recurrence token by token. q, k (B, H, T, K), v (B, H, T, Dv), g (B, H, T) log decay <= 0,
    beta (B, H, T) in (0, 1), state (B, H, K, Dv) or None (zeros) -> o (B, H, T, Dv), final state (B, H, K, Dv)."""
    B, H, T, K = k.shape
    S = k.new_zeros(B, H, K, v.shape[-1]) if state is None else state.to(k.dtype)
    decay, beta = g.exp()[..., None, None], beta[..., None, None]  # (B, H, T, 1, 1)
    q, k, v = q.unsqueeze(-2), k.unsqueeze(-2), v.unsqueeze(-2)  # (B, H, T, 1, .): rows
    outs = []
    for t in range(T):
        kt = k[:, :, t]  # (B, H, 1, K)
        S = S * decay[:, :, t]
        u = beta[:, :, t] * (v[:, :, t] - kt @ S)  # (B, H, 1, Dv): the delta rule's correction of the value read at k
        S = S + kt.transpose(-1, -2) @ u  # + k u^T
        outs.append(q[:, :, t] @ S)  # (B, H, 1, Dv)
    return (outs[0] if T == 1 else torch.cat(outs, dim=2)), S


def _unit_lower_inverse(A: Tensor) -> Tensor:
    """(I + A)^-1 for strictly lower triangular A (..., L, L)."""
    eye = torch.eye(A.shape[-1], dtype=A.dtype, device=A.device)
    return torch.linalg.solve_triangular(A + eye, eye.expand_as(A), upper=False, unitriangular=True)


class _ChunkedRule(torch.autograd.Function):
    """The chunked gated delta rule with a hand-written backward (autograd through the chunk terms and the
    triangular solve cost 3x the forward on a CPU: many (L, L) temporaries and a per-matrix solve; this backward is
    a dozen batched matmuls). Inputs already in chunks: q, k (B, H, N, L, K), v (B, H, N, L, Dv), g, beta
    (B, H, N, L), S0 (B, H, K, Dv) -> o (B, H, N, L, Dv), final state. docs/gated_deltanet.md derives the terms;
    tests/test_gated_deltanet.py checks the gradients against autograd through `_chunked_autograd`."""

    @staticmethod
    def forward(  # noqa: D102
        ctx: Any, q: Tensor, k: Tensor, v: Tensor, g: Tensor, beta: Tensor, S0: Tensor
    ) -> tuple[Tensor, Tensor]:
        gamma = g.cumsum(-1)  # (B, H, N, L) cumulative log decay within the chunk
        L = k.shape[-2]
        incl = torch.ones(L, L, dtype=torch.bool, device=k.device).tril()
        D = (gamma.unsqueeze(-1) - gamma.unsqueeze(-2)).masked_fill_(~incl, float("-inf")).exp_()  # exp(g_i - g_j)
        KK = k @ k.transpose(-1, -2)
        A = (KK * D).mul_(beta.unsqueeze(-1)).tril_(-1)  # beta_i (k_i . k_j) D_ij, j < i
        Tinv = _unit_lower_inverse(A)
        eg = gamma.exp()
        R = beta.unsqueeze(-1) * torch.cat([v, eg.unsqueeze(-1) * k], dim=-1)  # (B, H, N, L, Dv + K)
        Wall = Tinv @ R
        Wv, Wk = Wall.split([v.shape[-1], k.shape[-1]], dim=-1)
        ekte = (gamma[..., -1:] - gamma).exp()
        kte, eL = k * ekte.unsqueeze(-1), eg[..., -1]
        S, starts, Ws = S0, [], []
        for Wv_n, Wk_n, kte_n, eL_n in zip(Wv.unbind(2), Wk.unbind(2), kte.unbind(2), eL.unbind(2)):
            starts.append(S)
            W = Wv_n - Wk_n @ S  # (B, H, L, Dv): the chunk's corrected values
            Ws.append(W)
            S = eL_n[..., None, None] * S + kte_n.transpose(-1, -2) @ W
        Sn, W = torch.stack(starts, dim=2), torch.stack(Ws, dim=2)  # (B, H, N, K, Dv), (B, H, N, L, Dv)
        qd = q * eg.unsqueeze(-1)
        P = (q @ k.transpose(-1, -2)).mul_(D)  # D is 0 above the diagonal
        o = qd @ Sn + P @ W
        ctx.save_for_backward(q, k, v, beta, D, KK, A, Tinv, eg, Wall, ekte, kte, Sn, W, qd, P)
        return o, S

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, dO: Tensor | None, dS_final: Tensor | None) -> tuple[Tensor, ...]:  # noqa: D102
        q, k, v, beta, D, KK, A, Tinv, eg, Wall, ekte, kte, Sn, W, qd, P = ctx.saved_tensors
        dS = torch.zeros_like(Sn[:, :, 0]) if dS_final is None else dS_final
        dO = torch.zeros_like(W) if dO is None else dO
        PtdO, QtdO = P.transpose(-1, -2) @ dO, qd.transpose(-1, -2) @ dO
        eL, Wk = eg[..., -1], Wall[..., v.shape[-1] :]
        dWs, dSnext = [], []
        for n in reversed(range(W.shape[2])):  # back through the chunks: dS is the gradient of the state after n
            dSnext.append(dS)
            dW_n = PtdO[:, :, n] + kte[:, :, n] @ dS
            dWs.append(dW_n)
            dS = QtdO[:, :, n] + eL[:, :, n, None, None] * dS - Wk[:, :, n].transpose(-1, -2) @ dW_n
        dW, dSn = torch.stack(dWs[::-1], dim=2), torch.stack(dSnext[::-1], dim=2)
        grads = _ChunkedRule._input_grads(ctx.saved_tensors, dO, dW, dSn)
        return (*grads, dS)

    @staticmethod
    def _input_grads(saved: tuple[Tensor, ...], dO: Tensor, dW: Tensor, dSn: Tensor) -> tuple[Tensor, ...]:
        """dq, dk, dv, dg, dbeta from the output's gradient dO, the corrected values' dW and each chunk's
        end-state gradient dSn (the chunk loop's results)."""
        q, k, v, beta, D, KK, A, Tinv, eg, Wall, ekte, kte, Sn, W, _, P = saved
        Dv = v.shape[-1]
        dqd, dP = dO @ Sn.transpose(-1, -2), dO @ W.transpose(-1, -2)
        dkte = W @ dSn.transpose(-1, -2)
        deL = (Sn * dSn).sum((-2, -1))
        dR = Tinv.transpose(-1, -2) @ torch.cat([dW, -(dW @ Sn.transpose(-1, -2))], dim=-1)  # W = Wv - Wk S
        dA = (dR @ Wall.transpose(-1, -2)).neg_().tril_(-1)  # d(I + A)^-1 R = -(I + A)^-T dWall (T R)^T
        dRv, dRk = dR.split([Dv, k.shape[-1]], dim=-1)
        bk = beta.unsqueeze(-1)
        dv = bk * dRv
        dRk_k = (dRk * k).sum(-1)
        dbeta = (dRv * v).sum(-1) + eg * dRk_k
        deg = beta * dRk_k
        E = dA * D
        dbeta = dbeta + (E * KK).sum(-1)
        dKK = bk * E
        dQK = dP * D
        dk = bk * eg.unsqueeze(-1) * dRk + dKK @ k + dKK.transpose(-1, -2) @ k + dQK.transpose(-1, -2) @ q
        dk = dk + dkte * ekte.unsqueeze(-1)
        dq = dQK @ k + dqd * eg.unsqueeze(-1)
        deg = deg + (dqd * q).sum(-1)
        Z = dA * A + dP * P  # d/d(gamma_i - gamma_j) of A and P: each entry times its own D factor
        c = (dkte * kte).sum(-1)  # kte = k exp(gamma_L - gamma)
        dgamma = Z.sum(-1) - Z.sum(-2) - c + deg * eg
        dgamma[..., -1] += c.sum(-1) + deL * eg[..., -1]
        dg = dgamma.flip(-1).cumsum(-1).flip(-1)  # gamma = cumsum(g)
        return dq, dk, dv, dg, dbeta


def _chunked_autograd(q: Tensor, k: Tensor, v: Tensor, g: Tensor, beta: Tensor, S: Tensor) -> tuple[Tensor, Tensor]:
    """The same computation as `_ChunkedRule` written with plain autograd (the test reference for its backward)."""
    L = k.shape[-2]
    gamma = g.cumsum(-1)
    incl = torch.ones(L, L, dtype=torch.bool, device=k.device).tril()
    D = (gamma.unsqueeze(-1) - gamma.unsqueeze(-2)).masked_fill(~incl, float("-inf")).exp()
    A = (beta.unsqueeze(-1) * (k @ k.transpose(-1, -2)) * D).tril(-1)
    eye = torch.eye(L, dtype=k.dtype, device=k.device)
    rhs = beta.unsqueeze(-1) * torch.cat([v, gamma.exp().unsqueeze(-1) * k], dim=-1)
    Wv, Wk = torch.linalg.solve_triangular(eye + A, rhs, upper=False, unitriangular=True).split(
        [v.shape[-1], k.shape[-1]], dim=-1
    )
    P = (q @ k.transpose(-1, -2)) * D
    qd, kte, eL = q * gamma.exp().unsqueeze(-1), k * (gamma[..., -1:] - gamma).exp().unsqueeze(-1), gamma[..., -1].exp()
    outs = []
    for n in range(k.shape[2]):
        W = Wv[:, :, n] - Wk[:, :, n] @ S
        outs.append(qd[:, :, n] @ S + P[:, :, n] @ W)
        S = eL[:, :, n, None, None] * S + kte[:, :, n].transpose(-1, -2) @ W
    return torch.stack(outs, dim=2), S


def gated_delta_rule_chunked(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    g: Tensor,
    beta: Tensor,
    chunk_size: int = 64,
    state: Tensor | None = None,
    *,
    hand_backward: bool = True,
) -> tuple[Tensor, Tensor]:
    """The same recurrence in chunks of `chunk_size` tokens: within a chunk in parallel (matrix products and one
    unit triangular inverse), across chunks sequentially through the state. Same arguments and results as
    `gated_delta_rule_recurrent`. T is padded to a multiple of chunk_size with g = 0 and beta = 0 (and zero q, k, v),
    tokens that leave the state unchanged and whose outputs are dropped. `hand_backward=False` differentiates
    the plain autograd version instead (the reference the tests compare the hand-written backward with).

    With gamma the cumulative log decay within the chunk, D_ij = exp(gamma_i - gamma_j) for j <= i and
    A_ij = beta_i D_ij (k_i . k_j) for j < i, the chunk's corrected values are W = Wv - Wk S0 where
    (I + A) Wv = beta V and (I + A) Wk = beta diag(exp(gamma)) K; its outputs are q exp(gamma) S0 + ((Q K^T) * D) W
    and the state after it exp(gamma_L) S0 + (K exp(gamma_L - gamma))^T W."""
    B, H, T, K = k.shape
    Dv = v.shape[-1]
    L = chunk_size
    pad = (-T) % L
    if pad:
        q, k, v = (F.pad(x, (0, 0, 0, pad)) for x in (q, k, v))
        g, beta = F.pad(g, (0, pad)), F.pad(beta, (0, pad))
    N = (T + pad) // L
    q, k, v = (x.reshape(B, H, N, L, x.shape[-1]) for x in (q, k, v))
    g, beta = g.reshape(B, H, N, L), beta.reshape(B, H, N, L)
    S = k.new_zeros(B, H, K, Dv) if state is None else state.to(k.dtype)
    o, S = (_ChunkedRule.apply if hand_backward else _chunked_autograd)(q, k, v, g, beta, S)
    return o.reshape(B, H, N * L, Dv)[:, :, :T], S


class RMSNorm(nn.Module):
    """x / rms(x) * weight over the last dimension (computed in at least float32)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        xf = at_least_float32(x)
        return F.rms_norm(xf, xf.shape[-1:], self.weight.to(xf.dtype), self.eps).to(x.dtype)


class ShortConv(nn.Module):
    """Causal depthwise convolution over time (no bias) followed by SiLU, continuing from a cache of the last
    kernel - 1 inputs: x (B, T, W), cache (B, kernel - 1, W) or None (zeros) -> (B, T, W), new cache.

    The weight is an nn.Conv1d's (W, 1, kernel), initialised as torch initialises it; the product is computed as a
    sum of `kernel` shifted elementwise products (on a CPU that is several times faster than a depthwise Conv1d,
    forward and backward, and needs no transposes)."""

    def __init__(self, width: int, kernel: int):
        super().__init__()
        self.kernel = kernel
        self.conv = nn.Conv1d(width, width, kernel, groups=width, bias=False)

    def forward(self, x: Tensor, cache: Tensor | None = None) -> tuple[Tensor, Tensor]:
        B, T, W = x.shape
        if cache is None:
            cache = x.new_zeros(B, self.kernel - 1, W)
        full = torch.cat([cache.to(x.dtype), x], dim=1)  # (B, kernel - 1 + T, W)
        w = self.conv.weight.squeeze(1).t().to(x.dtype)  # (kernel, W): tap j multiplies the input kernel - 1 - j back
        if T == 1:  # a generation step: one weighted sum
            y = (full * w).sum(1, keepdim=True)
        else:
            y = full[:, :T] * w[0]
            for j in range(1, self.kernel):
                y = y + full[:, j : j + T] * w[j]
        return F.silu(y), full[:, full.shape[1] - (self.kernel - 1) :]


class GatedDeltaNetLayer(nn.Module):
    """The token mixer: q, k, v projections each through a short causal conv and SiLU; q, k L2-normalised per head;
    beta = sigmoid(W_beta x); g = -exp(A_log) softplus(W_a x + dt_bias); the gated delta rule; per-head RMSNorm of
    the output times SiLU(W_gate x); the output projection. x (B, T, C) -> (B, T, C), new LayerState."""

    def __init__(self, dim: int, heads: int, expand_v: int, conv_size: int, chunk_size: int):
        super().__init__()
        self.heads, self.head_k, self.head_v, self.chunk_size = heads, dim // heads, expand_v * (dim // heads), chunk_size
        key_dim, value_dim = heads * self.head_k, heads * self.head_v
        # q, k, v, the output gate, a (the decay's input) and beta's logit from one matrix (FLA keeps six
        # projections; one matmul computes the same six products): widths in this order
        self.widths = [key_dim, key_dim, value_dim, value_dim, heads, heads]
        self.in_proj = nn.Linear(dim, sum(self.widths), bias=False)
        self.o_proj = nn.Linear(value_dim, dim, bias=False)
        self.conv = ShortConv(2 * key_dim + value_dim, conv_size)  # one depthwise conv over q, k, v's channels
        self.o_norm = RMSNorm(self.head_v, eps=1e-5)
        # Mamba-2's decay parameters (as FLA's GatedDeltaNet): A ~ U(0, 16), dt log-uniform in [1e-3, 0.1]
        # (floored at 1e-4) and dt_bias = softplus^-1(dt)
        self.A_log = nn.Parameter(torch.empty(heads).uniform_(0, 16).log())
        dt = torch.exp(torch.rand(heads) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3)).clamp(min=1e-4)
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))

    def _heads(self, x: Tensor, d: int) -> Tensor:
        B, T, _ = x.shape
        return x.view(B, T, self.heads, d).transpose(1, 2)  # (B, H, T, d)

    def forward(self, x: Tensor, state: LayerState | None = None) -> tuple[Tensor, LayerState]:
        if x.shape[1] == 1:  # generation: one recurrent step
            return self.step(x, state)
        S, cache = (None, None) if state is None else state
        qkv, gate, a, b = self.in_proj(x).split([sum(self.widths[:3]), *self.widths[3:]], dim=-1)
        qkv, cache = self.conv(qkv, cache)
        q, k, v = qkv.split(self.widths[:3], dim=-1)
        beta = torch.sigmoid(b).transpose(1, 2)  # (B, H, T)
        g = (-self.A_log.exp() * F.softplus(a + self.dt_bias)).transpose(1, 2)  # (B, H, T), <= 0
        q, k, v = self._heads(q, self.head_k), self._heads(k, self.head_k), self._heads(v, self.head_v)
        with autocast_off(x):  # the core in at least float32 (bf16 would lose the state's low bits step by step)
            dtype = torch.promote_types(v.dtype, torch.float32)
            q = F.normalize(q.to(dtype), dim=-1, eps=1e-6) * self.head_k**-0.5
            k = F.normalize(k.to(dtype), dim=-1, eps=1e-6)
            v, g, beta = v.to(dtype), g.to(dtype), beta.to(dtype)
            o, S = gated_delta_rule_chunked(q, k, v, g, beta, self.chunk_size, S)
        o = self.o_norm(o.transpose(1, 2)).to(x.dtype)  # (B, T, H, Dv)
        gate = F.silu(gate).view_as(o)
        y = self.o_proj((o * gate).flatten(2))
        return y, (S, cache)

    def step(self, x: Tensor, state: LayerState | None = None) -> tuple[Tensor, LayerState]:
        """`forward` for one token (x (B, 1, C)): the same arithmetic as `gated_delta_rule_recurrent` in the fewest
        operations (a generation step is bound by the count of small operations, not by their arithmetic)."""
        B, H, K, Dv = x.shape[0], self.heads, self.head_k, self.head_v
        S, cache = (None, None) if state is None else state
        p = self.in_proj(x)[:, 0]  # (B, widths)
        n_qkv, n_gate = 2 * H * K + H * Dv, H * Dv
        qkv, cache = self.conv(p[:, None, :n_qkv], cache)
        with autocast_off(x):
            dtype = torch.promote_types(qkv.dtype, torch.float32)
            qkv = qkv[:, 0].to(dtype)
            qk = qkv[:, : 2 * H * K].view(B, 2 * H, K)
            qk = qk / torch.linalg.vector_norm(qk, dim=-1, keepdim=True).clamp_min(1e-6)  # F.normalize's arithmetic
            q, k, v = qk[:, :H] * K**-0.5, qk[:, H:], qkv[:, 2 * H * K :].view(B, H, Dv)
            a, b = p[:, n_qkv + n_gate :].split(H, dim=-1)
            decay = (-self.A_log.exp() * F.softplus(a + self.dt_bias)).to(dtype).exp()  # (B, H)
            S = qkv.new_zeros(B, H, K, Dv) if S is None else S.to(dtype)
            S = S * decay[..., None, None]
            u = (v - (k.unsqueeze(-2) @ S).squeeze(-2)) * torch.sigmoid(b).to(dtype).unsqueeze(-1)  # (B, H, Dv)
            S = torch.addcmul(S, k.unsqueeze(-1), u.unsqueeze(-2))  # + k u^T
            o = q.unsqueeze(-2) @ S  # (B, H, 1, Dv)
        o = self.o_norm(o.view(B, 1, H, Dv)).to(x.dtype)
        gate = F.silu(p[:, None, n_qkv : n_qkv + n_gate]).view(B, 1, H, Dv)
        return self.o_proj((o * gate).view(B, 1, H * Dv)), (S, cache)


class SwiGLU(nn.Module):
    """W_down (SiLU(W_gate x) * W_up x), hidden width ff_mult * dim * 2/3 rounded up to a multiple of 8 (LLaMA's,
    and FLA's GatedMLP: the same parameter count as a GELU MLP of ff_mult * dim)."""

    def __init__(self, dim: int, ff_mult: int, dropout: float):
        super().__init__()
        hidden = 8 * math.ceil(ff_mult * dim * 2 / 3 / 8)
        self.gate_up = nn.Linear(dim, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.drop(self.down(F.silu(gate) * up))


class GatedDeltaNetBlock(nn.Module):
    """x + GDN(RMSNorm(x)); x + SwiGLU(RMSNorm(x))."""

    def __init__(self, dim: int, heads: int, ff_mult: int, expand_v: int, conv_size: int, chunk_size: int, dropout: float):
        super().__init__()
        self.mix_norm = RMSNorm(dim)
        self.mix = GatedDeltaNetLayer(dim, heads, expand_v, conv_size, chunk_size)
        self.mlp_norm = RMSNorm(dim)
        self.mlp = SwiGLU(dim, ff_mult, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, state: LayerState | None = None) -> tuple[Tensor, LayerState]:
        y, state = self.mix(self.mix_norm(x), state)
        x = x + self.drop(y)
        return x + self.mlp(self.mlp_norm(x)), state


class GatedDeltaNetLM(nn.Module):
    """Embedding -> `depth` Gated DeltaNet blocks -> RMSNorm -> LM head tied to the embedding (as model=transformer).

    Args:
        vocab_size: V.
        dim: model width C.
        depth: blocks.
        heads: heads; must divide dim. Keys and queries are dim // heads wide per head.
        ff_mult: the SwiGLU MLP's width as a multiple of dim (times 2/3, see SwiGLU).
        expand_v: value (and state) width per head as a multiple of the key width (2, as the paper and FLA).
        conv_size: kernel of the short causal convolutions on q, k, v (4).
        chunk_size: tokens per chunk of the chunked (training) form; the outputs do not depend on it.
        dropout: on the residual branches and the embedding.
    """

    task_kind = "causal_lm"
    carries_state = True  # (S, conv caches) per layer may be carried across training windows and generation calls
    max_len = None  # unbounded context

    def __init__(
        self,
        vocab_size: int,
        dim: int = 128,
        depth: int = 2,
        heads: int = 4,
        ff_mult: int = 4,
        expand_v: int = 2,
        conv_size: int = 4,
        chunk_size: int = 64,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        require_positive_ints(
            "model",
            {"vocab_size": vocab_size, "dim": dim, "depth": depth, "heads": heads, "ff_mult": ff_mult, "expand_v": expand_v},
        )
        require_positive_ints("model", {"chunk_size": chunk_size})
        if dim % heads:
            raise ConfigError(f"model.dim={dim} must be divisible by model.heads={heads} (each head gets dim/heads channels)")
        if not (isinstance(conv_size, int) and conv_size >= 2):
            raise ConfigError(f"model.conv_size={conv_size} must be an integer >= 2 (the short convolution's kernel)")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"model.dropout={dropout} must be in [0, 1): it is the probability of dropping a unit")
        self.embedding = nn.Embedding(vocab_size, dim)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            GatedDeltaNetBlock(dim, heads, ff_mult, expand_v, conv_size, chunk_size, dropout) for _ in range(depth)
        )
        self.norm = RMSNorm(dim)
        self.head = nn.Linear(dim, vocab_size, bias=False)
        self.head.weight = self.embedding.weight  # tied, as model=transformer
        self._init_weights(depth)

    def _init_weights(self, depth: int) -> None:
        """Linear and embedding weights N(0, 0.02) (FLA's initializer_range), the residual outputs scaled by
        1 / sqrt(2 depth) (GPT-2, as model=transformer); A_log, dt_bias, norms and convs keep their own."""
        for name, p in self.named_parameters():
            if name.endswith(("o_proj.weight", "down.weight")):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * depth))
            elif name.endswith(("in_proj.weight", "gate_up.weight", "embedding.weight")):
                nn.init.normal_(p, std=0.02)

    def forward(self, idx: Tensor, state: GDNState | None = None) -> tuple[Tensor, GDNState]:
        """idx (B, T) long -> logits (B, T, V) and the state after these T tokens (one LayerState per block)."""
        x = self.drop(self.embedding(idx))  # (B, T, C)
        new_state = []
        for i, block in enumerate(self.blocks):
            x, s = block(x, None if state is None else state[i])
            new_state.append(s)
        return self.head(self.norm(x)), new_state

    def features(self, idx: Tensor, state: GDNState | None = None) -> tuple[Tensor, GDNState]:
        """forward without the readout: the last block's output (B, T, C) (before the norm) and the new state."""
        x = self.drop(self.embedding(idx))  # (B, T, C)
        new_state = []
        for i, block in enumerate(self.blocks):
            x, s = block(x, None if state is None else state[i])
            new_state.append(s)
        return x, new_state

    def readout(self, x: Tensor) -> Tensor:
        """x (..., C) from `features` -> logits (..., V)."""
        return self.head(self.norm(x))
