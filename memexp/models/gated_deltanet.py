"""Gated DeltaNet (Yang, Kautz, Hatamizadeh, "Gated Delta Networks: Improving Mamba2 with Delta Rule", ICLR 2025)
as a causal LM in pure PyTorch: a linear-attention recurrence whose state is decayed (Mamba-2's gate) and
corrected (the delta rule) at every token, trained in chunks (the WY / UT form) and generated step by step.

Shape legend: B batch, T time, H heads, K key width per head (dim // heads), Dv value width per head
(expand_v * K), C model width (`dim`), N chunks, L chunk length, V vocabulary.

The recurrence (row convention, S (K, Dv) per head):

    S_t = exp(g_t) (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T        o_t = S_t^T q_t

The core (memexp.models.gated_delta_rule) takes q as it is: the layer L2-normalises q and k and scales q by K^-0.5
before calling it. docs/gated_deltanet.md has the choices and the fidelity table.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from memexp.errors import ConfigError, require_positive_ints
from memexp.models.autocast import at_least_float32, autocast_off
from memexp.models.gated_delta_rule import gated_delta_rule_chunked, gated_delta_rule_recurrent

__all__ = ["GatedDeltaNetLM", "gated_delta_rule_chunked", "gated_delta_rule_recurrent"]

# per layer: (S (B, H, K, Dv), the conv cache: the last conv_size - 1 pre-conv inputs of q, k and v side by side,
# (B, conv_size - 1, 2 H K + H Dv), channels in the order q, k, v)
LayerState = tuple[Tensor, Tensor]
GDNState = list[LayerState]


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
